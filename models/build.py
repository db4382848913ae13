"""From a data source to a published model version: train, then calibrate and export.

`build_repository(config, out)` is the one call behind `exitserve build`, `build-default`
and the test fixtures; the bundled and the tiny test models differ only in their config.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from models.architectures import build_model
from models.data import Splits
from models.multiexit import MultiExitNet
from models.sources import SplitSizes, load_splits
from models.train import TrainConfig, TrainResult, train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildConfig:
    """Everything that determines a built model version (recorded in its checkpoint)."""

    name: str = "model"
    version: str = "1"
    arch: str = "resnet"
    arch_options: dict[str, Any] = field(default_factory=dict)
    percentiles: tuple[float, ...] | None = None
    data: str = "mnist"
    sizes: SplitSizes = field(default_factory=SplitSizes)
    train: TrainConfig = field(default_factory=TrainConfig)
    tolerance_pp: float = 0.5
    parity_samples: int = 128

    def to_json(self) -> str:
        """Serialised for checkpoints, so `export` can re-derive the same splits."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BuildConfig:
        """The inverse of `to_json`."""
        raw = json.loads(text)
        train = raw.pop("train")
        if train.get("exit_weights") is not None:
            train["exit_weights"] = tuple(train["exit_weights"])
        percentiles = raw.pop("percentiles")
        return cls(
            **{k: v for k, v in raw.items() if k != "sizes"},
            sizes=SplitSizes(**raw["sizes"]),
            train=TrainConfig(**train),
            percentiles=tuple(percentiles) if percentiles is not None else None,
        )


@dataclass
class Trained:
    """A trained network and the exact splits it was trained and will be calibrated on."""

    model: MultiExitNet
    splits: Splits
    result: TrainResult


def train_model(config: BuildConfig) -> Trained:
    """Load the data, build the architecture with its exits placed, and train it."""
    splits = load_splits(config.data, config.sizes, config.train.seed)
    torch.manual_seed(config.train.seed)
    model = build_model(
        config.arch,
        splits.train.input_shape,
        len(splits.train.labels),
        percentiles=config.percentiles,
        **config.arch_options,
    )
    log.info(
        "%s: %s with exits after units %s, %d train / %d val / %d test samples",
        config.name,
        config.arch,
        list(model.config.cuts),
        len(splits.train),
        len(splits.val),
        len(splits.test),
    )
    result = train(model, splits.train, config.train)
    log.info("trained in %.0fs on %s", result.seconds, result.device)
    return Trained(model, splits, result)


def build_repository(config: BuildConfig, out: Path) -> Path:
    """Train, calibrate, export and check `config`'s model into `out`; returns its folder."""
    from models.package import package  # keeps onnx/onnxruntime out of train-only imports

    return package(train_model(config), config, out)


def default_configs(threads: int | None = 2) -> list[BuildConfig]:
    """The two bundled models: `mnist` (residual CNN) and `mnist-lenet` (B-LeNet).

    Sized for `make model` to finish in about a quarter of an hour on two shared cores.
    """
    # one pass over 55k images in small batches: ~860 updates, the most two cores allow
    train = TrainConfig(mode="joint", epochs=1, batch_size=64, lr=3e-3, seed=0, threads=threads)
    sizes = SplitSizes(val_samples=5000)
    return [
        BuildConfig(name="mnist", arch="resnet", data="mnist", sizes=sizes, train=train),
        BuildConfig(
            name="mnist-lenet",
            arch="blenet",
            data="mnist",
            sizes=sizes,
            train=replace(train, epochs=3, lr=5e-3),
        ),
    ]


def tiny_config(name: str = "tiny", data: str = "mnist", progress: bool = False) -> BuildConfig:
    """A 3-exit residual CNN that builds in seconds on real MNIST: the tests' model."""
    return BuildConfig(
        name=name,
        arch="resnet",
        arch_options={"width": 8, "depth": (1, 1, 1)},
        percentiles=(0.3, 0.65, 1.0),
        data=data,
        sizes=SplitSizes(train_samples=2000, val_samples=500, test_samples=500),
        # three short epochs: the final exit (global pooling) needs ~200 steps to overtake
        # one thread: a net this small gains nothing from two, and on a busy machine every
        # multi-threaded op pays for descheduled OpenMP workers (30x slower seen)
        train=TrainConfig(epochs=3, batch_size=32, lr=1e-2, seed=0, threads=1, progress=progress),
        parity_samples=64,
    )
