"""`exitserve train | export | build | build-default`: the model side of the command line.

`build` is the one command a user runs on their own data, e.g.
`exitserve build --data npz:my.npz --arch resnet --name my-model --version 1 --out repo/`.
`train` + `export` do the same in two steps, with a checkpoint in between.
"""

from __future__ import annotations

import ast
import functools
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import click
from pydantic import Field, TypeAdapter, ValidationError

from models.architectures import REGISTRY
from models.build import BuildConfig, OptionError, Trained, build_repository, default_configs
from models.data import DataError
from models.manifest import NAME_PATTERN, VERSION_PATTERN, ManifestError
from models.paths import bundled_repository
from models.sources import SizeError, SplitSizes
from models.train import TrainConfig

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class Validated(click.ParamType[Any, Any]):
    """A click type checked by a pydantic TypeAdapter: the manifest's own rules, at parse time.

    With `comma_list`, "1,1,2" is split first, so a list type checks every item.
    """

    def __init__(self, name: str, adapter: TypeAdapter[Any], comma_list: bool = False) -> None:
        self.name, self.adapter, self.comma_list = name, adapter, comma_list

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        raw = value
        if self.comma_list and isinstance(value, str):
            value = [v.strip() for v in value.split(",")]
        try:
            return self.adapter.validate_python(value)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = f" (item {int(error['loc'][0]) + 1})" if error["loc"] else ""
            self.fail(f"{raw!r}{where}: {error['msg']}", param, ctx)


MODEL_NAME = Validated("NAME", TypeAdapter(Annotated[str, Field(pattern=NAME_PATTERN)]))
VERSION = Validated("VERSION", TypeAdapter(Annotated[str, Field(pattern=VERSION_PATTERN)]))
Weights = list[Annotated[float, Field(ge=0, allow_inf_nan=False)]]
EXIT_WEIGHTS = Validated("W1,W2,...", TypeAdapter(Weights), comma_list=True)
Percentiles = list[Annotated[float, Field(gt=0, le=1)]]
PERCENTILES = Validated("P1,P2,...", TypeAdapter(Percentiles), comma_list=True)


def _options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`width=16`, `depth=1,1,1` -> {"width": 16, "depth": (1, 1, 1)} (Python literals)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            message = f"expected KEY=VALUE, got {pair!r}"
            raise click.BadParameter(message, param_hint="'--arch-option'")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


def _device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Refuse `cuda` up front on a machine without it, rather than at the first tensor."""
    if value == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise click.BadParameter("CUDA is not available on this machine", ctx, param)
    return value


POSITIVE = click.IntRange(min=1)
TRAIN_OPTIONS: list[Decorator] = [
    click.option("--data", required=True, help="mnist, fashion-mnist, npz:PATH or folder:PATH"),
    click.option(
        "--arch", type=click.Choice(sorted(REGISTRY)), default="resnet", show_default=True
    ),
    click.option("--arch-option", "arch_option", multiple=True, help="KEY=VALUE, e.g. width=16"),
    click.option(
        "--percentiles",
        type=PERCENTILES,
        help="exit positions as cost shares, e.g. 0.15,0.4,0.7,1",
    ),
    click.option(
        "--mode", type=click.Choice(["joint", "layerwise"]), default="joint", show_default=True
    ),
    click.option(
        "--epochs",
        type=POSITIVE,
        help="passes over the training data [default: enough for about 500 optimiser steps]",
    ),
    click.option("--batch-size", type=POSITIVE, default=128, show_default=True),
    click.option(
        "--lr", type=click.FloatRange(min=0, min_open=True), default=3e-3, show_default=True
    ),
    click.option(
        "--exit-weights",
        type=EXIT_WEIGHTS,
        help="loss weight per exit for joint training, e.g. 1,1,1,2",
    ),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--threads", type=POSITIVE, help="torch CPU threads (default: torch's choice)"),
    click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        callback=_device,
    ),
    click.option(
        "--val-fraction",
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        default=0.1,
        show_default=True,
        help="share of the training data held out for calibration",
    ),
    click.option("--val-samples", type=POSITIVE, help="validation size (overrides --val-fraction)"),
    click.option(
        "--train-samples", "--limit", "train_samples", type=POSITIVE, help="cap training set"
    ),
    click.option("--test-samples", type=POSITIVE, help="cap test set"),
    click.option("--progress/--no-progress", default=True, help="show a progress bar"),
]
PUBLISH_OPTIONS: list[Decorator] = [
    click.option("--name", type=MODEL_NAME, required=True, help="model name in the repository"),
    click.option("--version", "version", type=VERSION, default="1", show_default=True),
    click.option("--out", type=click.Path(path_type=Path), required=True, help="repository"),
    click.option(
        "--tolerance",
        type=click.FloatRange(min=0),
        default=0.5,
        show_default=True,
        help="accuracy (pp) the calibrated policy may lose against the reference exit",
    ),
    click.option(
        "--reference",
        type=click.Choice(["final", "best"]),
        default="final",
        show_default=True,
        help="calibrate against the final exit or the most accurate exit on validation",
    ),
    click.option("--force", is_flag=True, help="publish even if the quality gate refuses"),
]


def _logging() -> None:
    """Phase timings on stderr, so a long build shows where its time goes."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def _user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Report bad input as one line, not a trace: usage errors (exit 2) for data and options
    found before training, plain errors (exit 1) for what fails later (export, the gate)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from models.export import ExportError
        from models.gate import QualityError

        try:
            return func(*args, **kwargs)
        except (SizeError, OptionError) as exc:
            raise click.BadParameter(str(exc), param_hint=_flag(exc.option)) from exc
        except DataError as exc:
            raise click.BadParameter(str(exc), param_hint="'--data'") from exc
        except QualityError as exc:
            click.echo("\n".join(exc.figures))
            raise click.ClickException(str(exc)) from exc
        except (ManifestError, ExportError) as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def _flag(option: str) -> str:
    return "'--" + option.replace("_", "-") + "'"


def _apply(options: list[Decorator]) -> Decorator:
    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func

    return wrap


def _tuple(values: list[float] | None) -> tuple[float, ...] | None:
    return tuple(values) if values is not None else None


def _config(kw: dict[str, Any]) -> BuildConfig:
    """A BuildConfig from the parsed training options."""
    return BuildConfig(
        arch=kw["arch"],
        arch_options=_options(kw["arch_option"]),
        percentiles=_tuple(kw["percentiles"]),
        data=kw["data"],
        sizes=SplitSizes(
            val_fraction=kw["val_fraction"],
            train_samples=kw["train_samples"],
            val_samples=kw["val_samples"],
            test_samples=kw["test_samples"],
        ),
        train=TrainConfig(
            mode=kw["mode"],
            epochs=kw["epochs"],
            batch_size=kw["batch_size"],
            lr=kw["lr"],
            exit_weights=_tuple(kw["exit_weights"]),
            seed=kw["seed"],
            threads=kw["threads"],
            device=kw["device"],
            progress=kw["progress"],
        ),
    )


def _publishing(config: BuildConfig, kw: dict[str, Any]) -> BuildConfig:
    """`config` with the parsed publishing options."""
    return replace(
        config,
        name=kw["name"],
        version=kw["version"],
        tolerance_pp=kw["tolerance"],
        reference=kw["reference"],
        force=kw["force"],
    )


def _train(config: BuildConfig) -> tuple[Trained, BuildConfig]:
    """Check data and options, train, and say how each exit does on validation.

    Returns the config with its epoch count resolved, as it should be recorded.
    """
    from models.build import plan, train_plan, validation_accuracy

    ready = plan(config)  # every data and option error surfaces here, before step one
    trained = train_plan(ready)
    accuracy = " / ".join(f"{100 * a:.1f}" for a in validation_accuracy(trained))
    click.echo(
        f"trained {trained.result.epochs} epochs in {trained.result.seconds:.0f}s on "
        f"{trained.result.device}; validation accuracy per exit ({len(trained.splits.val)} "
        f"samples): {accuracy} %"
    )
    return trained, ready.config


@click.command()
@_apply(TRAIN_OPTIONS)
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True, help="output .pt")
@_user_errors
def train(checkpoint: Path, **kw: Any) -> None:
    """Train a multi-exit network and save a checkpoint for `export`."""
    from models.checkpoint import save_checkpoint

    _logging()
    trained, config = _train(_config(kw))
    save_checkpoint(trained.model, config, checkpoint)
    click.echo(f"saved {checkpoint}")


@click.command()
@click.option("--checkpoint", type=click.Path(path_type=Path, exists=True), required=True)
@_apply(PUBLISH_OPTIONS)
@click.option("--parity-samples", type=POSITIVE, default=128, show_default=True)
@_user_errors
def export(checkpoint: Path, out: Path, parity_samples: int, **kw: Any) -> None:
    """Calibrate a checkpoint on its validation split and export it into a repository."""
    from models.checkpoint import load_checkpoint
    from models.package import package
    from models.sources import load_splits
    from models.train import TrainResult

    _logging()
    model, config = load_checkpoint(checkpoint)
    config = replace(_publishing(config, kw), parity_samples=parity_samples)
    splits = load_splits(config.data, config.sizes, config.train.seed)
    _report(package(Trained(model, splits, TrainResult()), config, out))


@click.command()
@_apply(TRAIN_OPTIONS)
@_apply(PUBLISH_OPTIONS)
@_user_errors
def build(out: Path, **kw: Any) -> None:
    """Train, calibrate and export in one go: the command to run on your own data.

    Publishes only through the quality gate (see docs/models.md); --force overrides it.
    """
    from models.package import package

    _logging()
    trained, config = _train(_publishing(_config(kw), kw))
    _report(package(trained, config, out))


@click.command("build-default")
@click.option("--out", type=click.Path(path_type=Path), default=bundled_repository)
@click.option("--only", multiple=True, help="build just these bundled models")
@click.option("--threads", type=POSITIVE, default=2, show_default=True)
@_user_errors
def build_default(out: Path, only: tuple[str, ...], threads: int) -> None:
    """Rebuild the bundled models `mnist` (residual CNN) and `mnist-lenet` (B-LeNet)."""
    _logging()
    for config in default_configs(threads):
        if not only or config.name in only:
            _report(build_repository(config, out))


def _report(version_dir: Path) -> None:
    """Where the version went, its headline figures, and loudly anything that went wrong."""
    from models.report import load_report, summary

    click.echo(f"published {version_dir}")
    for line in summary(load_report(version_dir)):
        warning = line.startswith("WARNING")
        click.secho(line, fg="yellow" if warning else None, bold=warning)
