"""`exitserve train | export | build | build-default`: the model side of the command line.

`build` is the one command a user runs on their own data, e.g.
`exitserve build --data npz:my.npz --arch resnet --name my-model --version 1 --out repo/`.
`train` + `export` do the same in two steps, with a checkpoint in between.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from models.build import (
    BuildConfig,
    OptionError,
    Trained,
    bench_configs,
    build_repository,
    default_configs,
)
from models.data import DataError
from models.manifest import ManifestError
from models.options import POSITIVE, PUBLISH_OPTIONS, TRAIN_OPTIONS, Decorator, arch_options
from models.paths import (
    bundled_bench_repository,
    bundled_repository,
)
from models.sources import SizeError, SplitSizes
from models.textdata import Columns
from models.train import TrainConfig


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
        arch_options=arch_options(kw["arch_option"]),
        percentiles=_tuple(kw["percentiles"]),
        data=kw["data"],
        sizes=SplitSizes(
            val_fraction=kw["val_fraction"],
            train_samples=kw["train_samples"],
            val_samples=kw["val_samples"],
            test_samples=kw["test_samples"],
        ),
        columns=Columns(text=kw["text_column"], label=kw["label_column"]),
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
            distill=kw["distill"],
            head_lr=kw["head_lr"],
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
        weights=kw["weights"],
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
    splits = load_splits(config.data, config.sizes, config.train.seed, config.columns)
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
@click.option(
    "--bench-out",
    type=click.Path(path_type=Path),
    default=bundled_bench_repository,
    help="where benchmark-only models go (`fashion`; never served by default)",
)
@click.option("--only", multiple=True, help="build just these bundled models")
@click.option("--threads", type=POSITIVE, default=2, show_default=True)
@_user_errors
def build_default(out: Path, bench_out: Path, only: tuple[str, ...], threads: int) -> None:
    """Rebuild the bundled models `mnist` (residual CNN), `mnist-lenet` (B-LeNet),
    `sentiment` (MiniLM-L6 on Rotten Tomatoes; the slow one, about 10 minutes) and the
    benchmarks' `fashion` (mnist's CNN on Fashion-MNIST)."""
    _logging()
    targets = [(c, out) for c in default_configs(threads)]
    targets += [(c, bench_out) for c in bench_configs(threads)]
    for config, target in targets:
        if not only or config.name in only:
            _report(build_repository(config, target))


def _report(version_dir: Path) -> None:
    """Where the version went, its headline figures, and loudly anything that went wrong."""
    from models.report import load_report, summary

    click.echo(f"published {version_dir}")
    for line in summary(load_report(version_dir)):
        warning = line.startswith("WARNING")
        click.secho(line, fg="yellow" if warning else None, bold=warning)
