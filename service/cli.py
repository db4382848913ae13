"""The `exitserve` command: one entry point, subcommands loaded only when used.

Training subcommands import torch; `serve` must not, so each command's module is imported
lazily when that command runs.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

# command name -> "module:attribute" of a click.Command
_COMMANDS = {
    "serve": "service.serve_cmd:serve",
    "train": "models.cli:train",
    "export": "models.cli:export",
    "build": "models.cli:build",
    "build-default": "models.cli:build_default",
}


class _LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        command: Any = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup)
@click.version_option(package_name="exitserve")
def main() -> None:
    """exitserve: train, export and serve multi-exit networks."""


if __name__ == "__main__":
    main()
