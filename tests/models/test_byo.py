"""Bring your own backbone: a user's network, as units + a head factory, through the pipeline.

The network here is defined in the test, not registered anywhere: `multi_exit` places its
exits by counted cost, and it then trains, calibrates, exports and passes parity exactly
like the built-in architectures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from models.architectures import multi_exit  # noqa: E402
from models.build import BuildConfig, Trained  # noqa: E402
from models.data import Dataset, Splits, split_off  # noqa: E402
from models.export import check_parity, export_segments  # noqa: E402
from models.manifest import load_manifest  # noqa: E402
from models.package import package  # noqa: E402
from models.train import TrainConfig, exit_probabilities, train  # noqa: E402
from tests.models.digits import digits_arrays  # noqa: E402


class Residual(nn.Module):
    """A user's own block type, unknown to the cost counter except for its Linear layers."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = torch.relu(x + self.body(x))
        return out


def my_units(width: int = 32) -> list[nn.Module]:
    return [nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU())] + [
        Residual(width) for _ in range(4)
    ]


def my_head(hidden: tuple[int, ...], num_classes: int, final: bool) -> nn.Module:
    return (
        nn.Linear(hidden[-1], num_classes)
        if final
        else nn.Sequential(nn.Linear(hidden[-1], 16), nn.ReLU(), nn.Linear(16, num_classes))
    )


@pytest.fixture(scope="module")
def digits() -> Splits:
    x, y = digits_arrays()
    data = Dataset(x[:, None], y, tuple(str(d) for d in range(10)))
    rest, test = split_off(data, 300, seed=0)
    train_set, val = split_off(rest, 300, seed=1)
    return Splits(train_set, val, test)


def test_exits_are_placed_by_counted_cost() -> None:
    model = multi_exit(my_units(), my_head, torch.zeros(1, 1, 8, 8), 10, percentiles=(0.35, 1.0))
    # stem 64*32 MACs, each residual 2*32*32: cumulative 0.2, 0.4, ... -> 0.35 is nearest unit 2
    assert model.config.cuts == (2, 5)
    assert model.config.arch == "custom"
    assert model.config.unit_macs == (2048, 2048, 2048, 2048, 2048)
    assert [o.shape for o in model(torch.zeros(3, 1, 8, 8))] == [(3, 10), (3, 10)]
    with pytest.raises(ValueError, match="cuts must rise strictly"):
        multi_exit(my_units(), my_head, torch.zeros(1, 1, 8, 8), 10, cuts=(3, 3, 5))


def test_own_network_trains_calibrates_and_exports(digits: Splits, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = multi_exit(
        my_units(), my_head, torch.zeros(1, 1, 8, 8), 10, cuts=(1, 3, 5), name="mynet"
    )
    config = TrainConfig(epochs=15, batch_size=64, lr=1e-2, threads=1, progress=False)
    result = train(model, digits.train, config)
    accuracy = (exit_probabilities(model, digits.test).argmax(-1) == digits.test.y).mean(1)
    assert accuracy[-1] > 0.85, accuracy  # it learned: chance is 0.10

    build = BuildConfig(name="mine", data="digits", tolerance_pp=3.0, force=True)
    version = package(Trained(model, digits, result), build, tmp_path)
    manifest = load_manifest(version)
    assert manifest.architecture.startswith("mynet(")
    assert manifest.num_exits == 3
    assert manifest.calibration is not None
    assert manifest.text is None
    assert manifest.calibration.per_policy.keys() == {"confidence", "entropy", "margin", "patience"}
    assert next(s.macs for s in manifest.segments) < manifest.segments[-1].macs * 2
    diffs = check_parity(model, version, digits.test.x[:50])
    assert max(diffs) < 1e-4


def test_image_manifests_keep_their_shape(digits: Splits, tmp_path: Path) -> None:
    """No text-only keys appear in an image version's manifest (older readers stay happy)."""
    model = multi_exit(my_units(8), my_head, torch.zeros(1, 1, 8, 8), 10, cuts=(2, 5))
    result = train(model, digits.train, TrainConfig(epochs=1, threads=1, progress=False))
    version = package(Trained(model, digits, result), BuildConfig(name="m", force=True), tmp_path)
    text = (version / "manifest.json").read_text()
    assert '"text"' not in text
    assert "mask_input" not in text
    export_segments(model, tmp_path / "again")
    assert np.isfinite(exit_probabilities(model, digits.val.x)).all()
