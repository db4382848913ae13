"""The command line's options and the click types that check them at parse time.

Every value that can be wrong on its own is refused here, as a usage error naming the
option: click's ranges and choices, and the manifest's own pydantic rules through
`Validated`. What can only be judged against the data (exit-weight count, split sizes)
is checked by `build.plan()` before training.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import click
from pydantic import Field, TypeAdapter, ValidationError

from models.architectures import REGISTRY
from models.manifest import NAME_PATTERN, VERSION_PATTERN

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


def arch_options(pairs: tuple[str, ...]) -> dict[str, Any]:
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
    click.option(
        "--data",
        required=True,
        help="images: mnist, fashion-mnist, npz:PATH, folder:PATH; "
        "texts: rotten-tomatoes, csv:PATH, jsonl:PATH",
    ),
    click.option(
        "--text-column", default="text", show_default=True, help="CSV/JSONL field of the text"
    ),
    click.option(
        "--label-column", default="label", show_default=True, help="CSV/JSONL field of the label"
    ),
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
        "--mode",
        type=click.Choice(["joint", "layerwise", "heads", "two_stage"]),
        default="joint",
        show_default=True,
        help="heads: train only the exits on the frozen backbone; two_stage: fine-tune the "
        "final exit, then the other heads on the frozen backbone",
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
    click.option(
        "--distill",
        type=click.FloatRange(0, 1),
        default=0.0,
        show_default=True,
        help="share of each early exit's loss spent matching the final exit's softmax",
    ),
    click.option(
        "--head-lr",
        type=click.FloatRange(min=0, min_open=True),
        help="learning rate of the exit heads [default: --lr]; fine-tuning wants --lr small",
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
    click.option(
        "--weights",
        type=click.Choice(["fp32", "fp16"]),
        default="fp32",
        show_default=True,
        help="fp16: store large weights as FP16 (rounded first; computed in FP32)",
    ),
]
