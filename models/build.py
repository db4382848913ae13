"""From a data source to a published model version: train, then calibrate and export.

`build_repository(config, out)` is the one call behind `exitserve build`, `build-default`
and the test fixtures; the bundled and the tiny test models differ only in their config.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from models.architectures import REGISTRY, build_model
from models.calibrate import accuracy_per_exit
from models.data import Splits, TextDataset
from models.multiexit import MultiExitNet
from models.placement import PlacementError
from models.sources import SplitSizes, load_splits
from models.textdata import Columns
from models.train import (
    TrainConfig,
    TrainResult,
    exit_probabilities,
    resolve_epochs,
    resolve_weights,
    train,
)

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
    columns: Columns = field(default_factory=Columns)  # text and label fields of CSV/JSONL
    tolerance_pp: float = 0.5
    parity_samples: int = 128
    # calibrate against the final exit, or the most accurate one on validation
    reference: Literal["final", "best"] = "final"
    force: bool = False  # publish even when the quality gate refuses
    # fp16: large weights rounded to FP16 and stored so (computed in FP32): half the files
    weights: Literal["fp32", "fp16"] = "fp32"

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
            **{k: v for k, v in raw.items() if k not in ("sizes", "columns")},
            sizes=SplitSizes(**raw["sizes"]),
            columns=Columns(**raw.get("columns", {})),
            train=TrainConfig(**train),
            percentiles=tuple(percentiles) if percentiles is not None else None,
        )


class OptionError(ValueError):
    """A build option that cannot work with this data; `option` names the BuildConfig field."""

    def __init__(self, message: str, option: str) -> None:
        super().__init__(message)
        self.option = option


@dataclass
class Trained:
    """A trained network and the exact splits it was trained and will be calibrated on."""

    model: MultiExitNet
    splits: Splits
    result: TrainResult


@dataclass
class Plan:
    """Data loaded and checked, network built, every option checked: ready to train.

    `config` has its epoch count resolved, so a checkpoint records what actually ran.
    """

    config: BuildConfig
    splits: Splits
    model: MultiExitNet


def plan(config: BuildConfig) -> Plan:
    """Everything that can be wrong with the data or the options, found before step one."""
    splits = load_splits(config.data, config.sizes, config.train.seed, config.columns)
    _check_modality(config, splits)
    torch.manual_seed(config.train.seed)
    try:
        model = build_model(
            config.arch,
            splits.train.input_shape,
            len(splits.train.labels),
            percentiles=config.percentiles,
            **config.arch_options,
        )
    except PlacementError as exc:
        raise OptionError(str(exc), "percentiles") from exc
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        message = exc.args[0] if exc.args else repr(exc)
        raise OptionError(f"{config.arch} cannot be built: {message}", "arch_option") from exc
    try:
        resolve_weights(config.train, model.num_exits)
    except ValueError as exc:
        raise OptionError(str(exc), "exit_weights") from exc
    train_config = resolve_epochs(config.train, len(splits.train))
    return Plan(replace(config, train=train_config), splits, model)


def _check_modality(config: BuildConfig, splits: Splits) -> None:
    """Text data needs a text architecture and images an image one; say which, up front."""
    spec = REGISTRY.get(config.arch)
    text = isinstance(splits.train, TextDataset)
    if spec is None or (spec.modality == "text") == text:
        return
    kind = "text" if text else "image"
    fitting = sorted(n for n, s in REGISTRY.items() if (s.modality == "text") == text)
    raise OptionError(
        f"{config.data} holds {kind} data, but {config.arch} is not a {kind} architecture: "
        f"use {' or '.join(fitting)}",
        "arch",
    )


def train_model(config: BuildConfig) -> Trained:
    """Load the data, build the architecture with its exits placed, and train it."""
    return train_plan(plan(config))


def train_plan(ready: Plan) -> Trained:
    """Train the planned network on its training split."""
    config, splits, model = ready.config, ready.splits, ready.model
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
    log.info("trained %d epochs in %.0fs on %s", result.epochs, result.seconds, result.device)
    return Trained(model, splits, result)


def validation_accuracy(trained: Trained) -> list[float]:
    """Each exit's accuracy on the validation split: the first sign of a failed run."""
    probs = exit_probabilities(trained.model, trained.splits.val)
    return accuracy_per_exit(probs, trained.splits.val.y)


def build_repository(config: BuildConfig, out: Path) -> Path:
    """Train, calibrate, export and check `config`'s model into `out`; returns its folder."""
    from models.package import package  # keeps onnx/onnxruntime out of train-only imports

    return package(train_model(config), config, out)


def sentiment_config(threads: int | None = 2, mode: str = "two_stage") -> BuildConfig:
    """`sentiment`: MiniLM-L6 fine-tuned on Rotten Tomatoes, exits after layers 2, 3, 4, 6.

    Two-stage (DeeBERT): backbone and final exit fine-tuned first, then the early heads on
    the frozen result, distilled from the final exit; `mode` builds the other training
    modes on the very same splits for docs/models.md's comparison.
    """
    train = TrainConfig(
        mode=mode,  # type: ignore[arg-type]
        epochs=3 if mode == "heads" else 2,
        batch_size=32,
        lr=5e-5,  # the pretrained backbone: small steps, or it forgets
        head_lr=2e-3,
        distill=0.5,
        seed=0,
        threads=threads,
    )
    return BuildConfig(
        name="sentiment",
        arch="minilm",
        data="rotten-tomatoes",
        # 2,550 test and 2,400 validation snippets: the gate needs 2,174 to resolve 0.8 pp
        # at 83% accuracy; 0.8 (not 1.0) so that the 1 pp target also holds on test (with
        # 1.0 and 2,000 validation snippets the test drop was 1.29 pp)
        sizes=SplitSizes(val_samples=2400, test_fraction=0.2),
        train=train,
        tolerance_pp=0.8,
        parity_samples=64,
        weights="fp16",  # ~45 MB instead of ~90 MB; see docs/models.md for the parity
    )


def default_configs(threads: int | None = 2) -> list[BuildConfig]:
    """The bundled models: `mnist` (residual CNN), `mnist-lenet` (B-LeNet), `sentiment` (text).

    Sized for `make model` to finish in about half an hour on two shared cores.
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
        sentiment_config(threads),
    ]


def bench_configs(threads: int | None = 2) -> list[BuildConfig]:
    """Benchmark-only models, kept out of the served repository: `fashion`, `mnist`'s residual
    CNN on Fashion-MNIST, whose harder images leave at later exits.

    Two epochs, not one, and calibrated against the most accurate exit: after one epoch its
    final exit trailed exit 3, and thresholds held to that weaker exit let 88% of the test
    images leave at exit 1, which is not the deep workload the benchmark needs.
    """
    mnist = default_configs(threads)[0]
    train = replace(mnist.train, epochs=2)
    return [replace(mnist, name="fashion", data="fashion-mnist", train=train, reference="best")]


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
        # 500 validation samples cannot resolve a 0.5 pp tolerance, so the gate would refuse;
        # the servers' tests need a model that builds in seconds, not one that passes it
        force=True,
    )
