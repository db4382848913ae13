"""`exitserve build` / `train` + `export` end to end on small real data, through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

from models.data import Dataset, limit
from models.manifest import load_manifest
from service.cli import main

# a tiny 3-exit residual net, one thread (small ops only lose to threading on a busy machine);
# --force: these tests are about the data sources, and validation splits this small cannot
# resolve the default tolerance (the gate's refusals are tested in test_gate.py)
TINY = "--arch-option width=6 --percentiles 0.3,0.65,1 --epochs 3 --batch-size 32 --lr 0.01"
TINY_ARGS = [
    *TINY.split(),
    *("--arch-option", "depth=(1, 1, 1)", "--threads", "1", "--no-progress", "--force"),
]


def _run(command: str, *extra: str) -> str:
    result = CliRunner().invoke(main, [*command.split(), *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _check(version_dir: Path, exits: int, labels: list[str]) -> None:
    manifest = load_manifest(version_dir)
    assert manifest.num_exits == exits
    assert manifest.labels == labels
    assert (version_dir / "calibration.png").is_file()
    assert manifest.training is not None
    chance = 1.0 / len(labels)
    # a net this small and briefly trained: some exit must be well above chance (the deepest
    # one, behind global pooling, is often the slowest learner)
    assert max(manifest.training.test_accuracy_per_exit) > 2 * chance


def test_build_on_a_users_npz(mnist_train: Dataset, tmp_path: Path) -> None:
    subset = limit(mnist_train, 1500, seed=1)
    keep = subset.y < 4  # a user's own 4-class problem, uint8 pixels, (N, H, W)
    path = tmp_path / "digits.npz"
    np.savez(path, x=(subset.x[keep, 0] * 255).astype(np.uint8), y=subset.y[keep] + 10)
    out = _run(
        f"build --data npz:{path} --name my-model --version 3 --val-fraction 0.2",
        *("--out", str(tmp_path / "repo"), *TINY_ARGS),
    )
    assert "published" in out
    _check(tmp_path / "repo" / "my-model" / "3", 3, ["10", "11", "12", "13"])


def test_build_on_fashion_mnist_subset(tmp_path: Path) -> None:
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("dataset-fashion-mnist not installed")
    _run(
        "build --data fashion-mnist --name fashion --train-samples 600 --val-samples 200",
        *("--test-samples", "200", "--out", str(tmp_path), *TINY_ARGS),
    )
    labels = load_manifest(tmp_path / "fashion" / "1").labels
    assert labels[0] == "T-shirt/top"
    _check(tmp_path / "fashion" / "1", 3, labels)


def test_build_on_a_folder_of_pngs(mnist_train: Dataset, tmp_path: Path) -> None:
    from PIL import Image

    subset = limit(mnist_train, 1200, seed=2)
    for i, (image, label) in enumerate(zip(subset.x[:, 0], subset.y, strict=True)):
        if label < 3:
            folder = tmp_path / "images" / ["zero", "one", "two"][label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"{i}.png")
    _run(
        f"build --data folder:{tmp_path / 'images'} --name folder-model --val-fraction 0.2",
        *("--out", str(tmp_path / "repo"), *TINY_ARGS),
    )
    _check(tmp_path / "repo" / "folder-model" / "1", 3, ["one", "two", "zero"])


def test_train_then_export_in_two_steps(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt.pt"
    _run(
        "train --data mnist --arch blenet --train-samples 600 --val-samples 200",
        *("--test-samples", "200", "--epochs", "3", "--lr", "0.01", "--threads", "1"),
        *("--checkpoint", str(checkpoint), "--no-progress"),
    )
    _run(
        "export --name lenet --version 2 --tolerance 1.0 --force",
        *("--checkpoint", str(checkpoint), "--out", str(tmp_path / "repo")),
    )
    version_dir = tmp_path / "repo" / "lenet" / "2"
    _check(version_dir, 2, [str(d) for d in range(10)])
    manifest = load_manifest(version_dir)
    assert manifest.calibration is not None
    assert manifest.calibration.tolerance_pp == 1.0
    assert manifest.training is not None
    assert manifest.training.val_samples == 200


def test_rebuilding_a_version_replaces_it(tmp_path: Path) -> None:
    args = ("--out", str(tmp_path), *TINY_ARGS)
    command = "build --data mnist --name again --train-samples 200 --val-samples 100"
    _run(command, "--test-samples", "100", *args)
    (tmp_path / "again" / "1" / "stale.txt").write_text("old")
    _run(command, "--test-samples", "100", *args)
    assert not (tmp_path / "again" / "1" / "stale.txt").exists()
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["1"]


def test_bad_data_source_is_a_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "o"
    args = ["build", "--data", "imagenet", "--name", "x", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "Error: Invalid value for '--data': unknown data source 'imagenet'" in result.output
    assert not out.exists()
