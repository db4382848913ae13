"""A load verifies a version end to end: segment files against the manifest, the chain
between segments, the label count, and a warm-up run whose probabilities must be real.

Each broken version here used to load (and then fail or mislabel every request), or was
refused with a message that named the wrong problem.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from models.manifest import load_manifest, save_manifest
from service.errors import NotFound, NotReady
from service.registry import ModelLoadError
from service.settings import Settings
from service.types import InferenceInput
from tests.service.engine.broken_versions import BREAKAGES, Edit, add_broken_version, five_labels
from tests.service.engine.conftest import Reference, run, started


@pytest.fixture
def repo(tiny_repository: Path, tmp_path: Path) -> Path:
    shutil.copytree(tiny_repository, tmp_path / "repo")
    return tmp_path / "repo"


@pytest.mark.parametrize(
    ("edit", "words"), [b[1:] for b in BREAKAGES], ids=[b[0] for b in BREAKAGES]
)
def test_a_version_that_disagrees_with_its_files_is_refused(
    make_settings: Callable[..., Settings],
    reference: Reference,
    repo: Path,
    edit: Edit,
    words: list[str],
) -> None:
    async def test() -> None:
        async with started(make_settings(model_repository=repo)) as plane:
            add_broken_version(repo, "2", edit)
            with pytest.raises(ModelLoadError) as err:
                await plane.load_model("tiny", "2")
            message = err.value.message
            assert all(w in message for w in words), message
            assert "version '2'" in message
            assert str(repo) not in message
            assert plane.versions("tiny") == ["1"]
            result = await plane.infer(InferenceInput("tiny", None, reference.x[:3]))
            assert result.version == "1"
            assert result.probabilities.shape == (3, 10)
            entry = next(e for e in plane.repository_index() if e["version"] == "2")
            assert entry["state"] == "UNAVAILABLE"
            assert words[-1] in entry["reason"]

    run(test)


def test_a_broken_version_on_disk_at_start_is_not_served(
    make_settings: Callable[..., Settings], reference: Reference, repo: Path
) -> None:
    """The server starts with what works; the broken version says why in the index and
    answers 503 (in the repository, not loaded), not 500."""
    add_broken_version(repo, "2", five_labels)

    async def test() -> None:
        async with started(make_settings(model_repository=repo)) as plane:
            assert plane.ready
            assert plane.versions("tiny") == ["1"]
            assert (await plane.infer(InferenceInput("tiny", None, reference.x[:2]))).version == "1"
            with pytest.raises(NotReady, match="version '2' is in the model repository"):
                await plane.infer(InferenceInput("tiny", "2", reference.x[:2]))
            with pytest.raises(NotFound, match="no version '9'"):
                await plane.infer(InferenceInput("tiny", "9", reference.x[:2]))
            entry = next(e for e in plane.repository_index() if e["version"] == "2")
            assert entry["state"] == "UNAVAILABLE"
            assert "5 labels" in entry["reason"]

    run(test)


def _nan_head_model(path: Path) -> None:
    """One segment with the right names and shapes whose probabilities come out NaN."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [784, 10], np.zeros(7840, np.float32))
    nan = helper.make_tensor("nan", TensorProto.FLOAT, [], [float("nan")])
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["soft"], axis=1),
        helper.make_node("Mul", ["soft", "nan"], ["probs"]),
    ]
    graph = helper.make_graph(
        nodes,
        "nan_head",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10]),
        ],
        initializer=[weights, nan],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_non_finite_probabilities_are_refused(
    make_settings: Callable[..., Settings], repo: Path, tiny_model_dir: Path
) -> None:
    """Names and shapes all agree; only the warm-up run can tell that the head is broken."""
    tiny = load_manifest(tiny_model_dir)
    folder = repo / "nan-head" / "1"
    folder.mkdir(parents=True)
    _nan_head_model(folder / "segment_0.onnx")
    last = tiny.segments[-1].model_copy(update={"index": 0, "file": "segment_0.onnx"})
    last = last.model_copy(update={"input": tiny.input, "cumulative_fraction": 1.0})
    manifest = tiny.model_copy(
        update={"name": "nan-head", "version": "1", "segments": [last], "calibration": None}
    )
    save_manifest(type(tiny).model_validate(manifest.model_dump()), folder)

    async def test() -> None:
        async with started(make_settings(model_repository=repo)) as plane:
            assert plane.model_names() == ["tiny"]  # started without it
            with pytest.raises(ModelLoadError, match="warm-up with 1 rows: probs_output 'probs' "):
                await plane.load_model("nan-head")
            entry = next(e for e in plane.repository_index() if e["name"] == "nan-head")
            assert "NaN or inf" in entry["reason"]

    run(test)
