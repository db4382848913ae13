"""Click options generated from the Settings fields, so every setting has a flag and a
setting added later gets one without anyone editing the command.

A flag's help is its field's description. Fields without a flag: admin_token (a secret
stays out of `ps`; EXITSERVE_ADMIN_TOKEN only) and the nested batching and fidelity
objects, whose server-wide knobs get their own flags (`--max-batch-size`,
`--fidelity-interval-s`) and whose per-model maps are JSON in the environment.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import click
from pydantic.fields import FieldInfo

from service.fidelity.config import FidelityConfig
from service.settings import ENV_PREFIX, BatchingConfig, Settings

F = TypeVar("F", bound=Callable[..., Any])
RENAMED = {"http_port": "port"}
NO_FLAG = frozenset({"admin_token", "batching", "model_batching", "fidelity", "model_fidelity"})
BATCHING = tuple(BatchingConfig.model_fields)
FIDELITY = "fidelity_"  # its flags: --fidelity-<field>


def flag_name(field: str) -> str:
    return "--" + RENAMED.get(field, field).replace("_", "-")


def settings_options(command: F) -> F:
    """Decorate `command` with one option per setting, each defaulting to None (= not set)."""
    # click lists options in reverse order of decoration: nested ones last, fields in order.
    for name in reversed(FidelityConfig.model_fields):
        info = FidelityConfig.model_fields[name]
        suffix = f"(all models) [env {ENV_PREFIX}FIDELITY, JSON]"
        command = _option(FIDELITY + name, info, suffix)(command)
    for name in reversed(BATCHING):
        info = BatchingConfig.model_fields[name]
        command = _option(name, info, f"(all models) [env {ENV_PREFIX}BATCHING, JSON]")(command)
    for name, info in reversed(list(Settings.model_fields.items())):
        if name not in NO_FLAG:
            command = _option(name, info, f"[env {ENV_PREFIX}{name.upper()}]")(command)
    return command


def settings_values(flags: dict[str, Any]) -> dict[str, Any]:
    """The flags that were given, shaped as Settings keyword arguments."""
    values = {k: v for k, v in flags.items() if v is not None}
    batching = {k: values.pop(k) for k in BATCHING if k in values}
    if batching:
        values["batching"] = batching  # pydantic-settings merges it with EXITSERVE_BATCHING
    fidelity = {k[len(FIDELITY) :]: values.pop(k) for k in list(values) if k.startswith(FIDELITY)}
    if fidelity:
        values["fidelity"] = fidelity
    return values


def _option(name: str, info: FieldInfo, suffix: str) -> Callable[[F], F]:
    help_text = f"{info.description or name.replace('_', ' ')} {suffix}"
    flag, annotation = flag_name(name), info.annotation
    if annotation is bool:
        decls = f"{flag}/--no-{flag[2:]}"
        return click.option(decls, name, default=None, help=help_text)
    return click.option(flag, name, type=_click_type(annotation), help=help_text)


def _click_type(annotation: Any) -> click.ParamType[Any] | type[Any]:
    args = get_args(annotation)
    if len(args) == 2 and type(None) in args:  # `X | None`: an absent flag is already None
        annotation = next(a for a in args if a is not type(None))
    if get_origin(annotation) is Literal:
        return click.Choice([str(a) for a in get_args(annotation)])
    if annotation is Path:
        return click.Path(path_type=Path)
    if get_origin(annotation) is list:
        return IntList()  # the only list setting: per-stage batch sizes
    if annotation in (int, float, str):
        return annotation  # type: ignore[no-any-return]
    raise TypeError(f"no flag type for setting type {annotation!r}; add one here")


class IntList(click.ParamType[list[int]]):
    """Comma-separated integers (`64,32,16`); pydantic checks each value's range."""

    name = "ints"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> list[int]:
        if isinstance(value, list):
            return value
        try:
            return [int(part) for part in str(value).split(",") if part.strip()]
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)
