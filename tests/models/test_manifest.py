"""The repository contract: a built version validates; broken ones fail naming the field."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from models.manifest import Manifest, ManifestError, load_manifest
from models.paths import DEFAULT_MODEL, LENET_MODEL, bundled_model_dir, bundled_repository


def test_tiny_repository_is_a_valid_three_exit_version(tiny_model_dir: Path) -> None:
    manifest = load_manifest(tiny_model_dir)
    assert (manifest.name, manifest.version, manifest.num_exits) == ("tiny", "1", 3)
    assert manifest.input.name == "input"
    assert manifest.input.shape == [1, 28, 28]
    assert manifest.labels == [str(d) for d in range(10)]
    assert [s.cumulative_fraction for s in manifest.segments][-1] == 1.0
    assert all(s.macs > 0 for s in manifest.segments)
    for name in ("calibration.png", "calibration.json", "calibration.md"):
        assert (tiny_model_dir / name).stat().st_size > 100
    cal = manifest.calibration
    assert cal is not None
    assert manifest.training is not None
    assert cal.accuracy >= cal.final_exit_accuracy - cal.tolerance_pp / 100
    assert sum(cal.exit_distribution) == pytest.approx(1.0)
    assert len(manifest.training.test_accuracy_per_exit) == 3
    assert manifest.training.test_accuracy_per_exit[-1] > 0.8


@pytest.mark.parametrize("name", [DEFAULT_MODEL, LENET_MODEL])
def test_bundled_models_are_valid(name: str) -> None:
    if not (bundled_repository() / name / "1" / "manifest.json").is_file():
        pytest.skip("bundled model not built yet (make model)")
    manifest = load_manifest(bundled_model_dir(name))
    assert manifest.name == name
    assert manifest.version == "1"
    assert manifest.input.model_dump() == {
        "name": "input",
        "datatype": "FP32",
        "shape": [1, 28, 28],
    }


def _broken(src: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    dst = tmp_path / "broken" / "1"
    shutil.copytree(src, dst)
    raw = json.loads((dst / "manifest.json").read_text())
    edit(raw)
    (dst / "manifest.json").write_text(json.dumps(raw))
    return dst


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node: Any = raw
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(leaf) if leaf.isdigit() else leaf] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("segments.1.index", 5), r"segments\[1\]\.index is 5, expected 1"),
        (
            _set("segments.0.thresholds.confidence", 1.5),
            r"segments\.0\.thresholds: confidence .*\[0, 1\]",
        ),
        (_set("segments.1.thresholds.entropy", -0.2), r"segments\.1\.thresholds: entropy .*>= 0"),
        (
            _set("segments.0.thresholds", {"bravery": 0.9}),
            r"segments\.0\.thresholds: unknown policies",
        ),
        (_set("segments.0.macs", 0), r"segments\.0\.macs"),
        (
            _set("segments.2.hidden_output", {"name": "hidden", "shape": [4]}),
            r"segments\[2\]\.hidden_output",
        ),
        (_set("segments.1.cumulative_fraction", 0.01), "cumulative_fraction must increase"),
        (_set("version", "v1"), r"^invalid manifest: version"),
        (lambda raw: raw.pop("labels"), r"labels: Field required"),
        (_set("input.shape", [1, 0, 28]), r"input\.shape: .*positive"),
    ],
)
def test_broken_manifests_are_rejected_naming_the_field(
    tiny_model_dir: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    with pytest.raises(ManifestError, match=message):
        load_manifest(_broken(tiny_model_dir, tmp_path, edit))


def test_nan_threshold_is_rejected(tiny_model_dir: Path, tmp_path: Path) -> None:
    dst = _broken(tiny_model_dir, tmp_path, lambda raw: None)
    text = (dst / "manifest.json").read_text()
    raw = json.loads(text)
    raw["segments"][0]["thresholds"]["margin"] = float("nan")
    (dst / "manifest.json").write_text(json.dumps(raw))  # json writes a bare NaN
    with pytest.raises(
        ManifestError, match=r"segments\.0\.thresholds: margin threshold must be a finite"
    ):
        load_manifest(dst)


def test_missing_segment_file_is_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    dst = _broken(tiny_model_dir, tmp_path, lambda raw: None)
    (dst / "segment_1.onnx").unlink()
    with pytest.raises(ManifestError, match=r"segment_1\.onnx.*segments\.1\.file"):
        load_manifest(dst)


@pytest.mark.parametrize("content", ["{not json", "", "\xff\xfe"])
def test_unreadable_json_is_rejected(tiny_model_dir: Path, tmp_path: Path, content: str) -> None:
    dst = _broken(tiny_model_dir, tmp_path, lambda raw: None)
    (dst / "manifest.json").write_bytes(content.encode("latin-1"))
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(dst)


def test_missing_manifest_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"manifest\.json is missing"):
        load_manifest(tmp_path)


def test_manifest_round_trips_through_json(tiny_model_dir: Path) -> None:
    manifest = load_manifest(tiny_model_dir)
    assert Manifest.model_validate_json(manifest.model_dump_json()) == manifest
