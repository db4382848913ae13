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
from typing import Any

import click

from models.architectures import REGISTRY
from models.build import BuildConfig, Trained, build_repository, default_configs
from models.data import DataError
from models.manifest import ManifestError
from models.paths import bundled_repository
from models.sources import SplitSizes
from models.train import TrainConfig

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _floats(text: str | None) -> tuple[float, ...] | None:
    """ "0.15,0.4,1" -> (0.15, 0.4, 1.0); empty -> None."""
    if not text:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from exc


def _options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`width=16`, `depth=1,1,1` -> {"width": 16, "depth": (1, 1, 1)} (Python literals)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


TRAIN_OPTIONS: list[Decorator] = [
    click.option("--data", required=True, help="mnist, fashion-mnist, npz:PATH or folder:PATH"),
    click.option(
        "--arch", type=click.Choice(sorted(REGISTRY)), default="resnet", show_default=True
    ),
    click.option("--arch-option", "arch_option", multiple=True, help="KEY=VALUE, e.g. width=16"),
    click.option("--percentiles", help="exit positions as cost shares, e.g. 0.15,0.4,0.7,1"),
    click.option("--mode", type=click.Choice(["joint", "layerwise"]), default="joint"),
    click.option("--epochs", type=int, default=2, show_default=True),
    click.option("--batch-size", type=int, default=128, show_default=True),
    click.option("--lr", type=float, default=3e-3, show_default=True),
    click.option("--exit-weights", help="loss weight per exit for joint training, e.g. 1,1,1,2"),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--threads", type=int, help="torch CPU threads (default: torch's choice)"),
    click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda"),
    click.option("--val-fraction", type=float, default=0.1, show_default=True),
    click.option("--val-samples", type=int, help="validation size (overrides --val-fraction)"),
    click.option("--train-samples", "--limit", "train_samples", type=int, help="cap training set"),
    click.option("--test-samples", type=int, help="cap test set"),
    click.option("--progress/--no-progress", default=True, help="show a progress bar"),
]
PUBLISH_OPTIONS: list[Decorator] = [
    click.option("--name", required=True, help="model name in the repository"),
    click.option("--version", "version", default="1", show_default=True),
    click.option("--out", type=click.Path(path_type=Path), required=True, help="repository"),
    click.option("--tolerance", type=float, default=0.5, show_default=True, help="pp below final"),
]


def _logging() -> None:
    """Phase timings on stderr, so a long build shows where its time goes."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def _user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Report bad input (data, options, a failed parity check) as a message, not a trace."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from models.export import ExportError
        from models.placement import PlacementError

        try:
            return func(*args, **kwargs)
        except (DataError, ManifestError, ExportError, PlacementError, KeyError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise click.ClickException(str(message)) from exc

    return wrapper


def _apply(options: list[Decorator]) -> Decorator:
    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func

    return wrap


def _config(kw: dict[str, Any], name: str = "model") -> BuildConfig:
    """A BuildConfig from the parsed CLI options."""
    weights = _floats(kw["exit_weights"])
    return BuildConfig(
        name=name,
        arch=kw["arch"],
        arch_options=_options(kw["arch_option"]),
        percentiles=_floats(kw["percentiles"]),
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
            exit_weights=weights,
            seed=kw["seed"],
            threads=kw["threads"],
            device=kw["device"],
            progress=kw["progress"],
        ),
    )


@click.command()
@_apply(TRAIN_OPTIONS)
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True, help="output .pt")
@_user_errors
def train(checkpoint: Path, **kw: Any) -> None:
    """Train a multi-exit network and save a checkpoint for `export`."""
    from models.build import train_model
    from models.checkpoint import save_checkpoint

    _logging()
    config = _config(kw)
    trained = train_model(config)
    save_checkpoint(trained.model, config, checkpoint)
    click.echo(f"trained in {trained.result.seconds:.0f}s on {trained.result.device}: {checkpoint}")


@click.command()
@click.option("--checkpoint", type=click.Path(path_type=Path, exists=True), required=True)
@_apply(PUBLISH_OPTIONS)
@click.option("--parity-samples", type=int, default=128, show_default=True)
@_user_errors
def export(checkpoint: Path, name: str, version: str, out: Path, **kw: Any) -> None:
    """Calibrate a checkpoint on its validation split and export it into a repository."""
    from models.checkpoint import load_checkpoint
    from models.package import package
    from models.sources import load_splits
    from models.train import TrainResult

    _logging()
    model, config = load_checkpoint(checkpoint)
    config = replace(
        config,
        name=name,
        version=version,
        tolerance_pp=kw["tolerance"],
        parity_samples=kw["parity_samples"],
    )
    splits = load_splits(config.data, config.sizes, config.train.seed)
    _report(package(Trained(model, splits, TrainResult()), config, out))


@click.command()
@_apply(TRAIN_OPTIONS)
@_apply(PUBLISH_OPTIONS)
@_user_errors
def build(name: str, version: str, out: Path, tolerance: float, **kw: Any) -> None:
    """Train, calibrate and export in one go: the command to run on your own data."""
    _logging()
    config = replace(_config(kw, name), version=version, tolerance_pp=tolerance)
    _report(build_repository(config, out))


@click.command("build-default")
@click.option("--out", type=click.Path(path_type=Path), default=bundled_repository)
@click.option("--only", multiple=True, help="build just these bundled models")
@click.option("--threads", type=int, default=2, show_default=True)
@_user_errors
def build_default(out: Path, only: tuple[str, ...], threads: int) -> None:
    """Rebuild the bundled models `mnist` (residual CNN) and `mnist-lenet` (B-LeNet)."""
    _logging()
    for config in default_configs(threads):
        if not only or config.name in only:
            _report(build_repository(config, out))


def _report(version_dir: Path) -> None:
    """Print where the version went and its calibration summary."""
    from models.manifest import load_manifest

    manifest = load_manifest(version_dir)
    cal = manifest.calibration
    click.echo(f"wrote {version_dir}")
    if cal is not None:
        test = cal.test
        click.echo(
            f"  policy {cal.policy}: test accuracy {test.get('accuracy')} vs final exit "
            f"{test.get('final_exit_accuracy')}, compute fraction {test.get('compute_fraction')}, "
            f"exits {test.get('exit_distribution')}"
        )
