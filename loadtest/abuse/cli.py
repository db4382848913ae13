"""`python -m loadtest.abuse`: start a server, run the checks, print or write the table.

With `--out`, the table replaces what lies between the abuse markers of that document
(`make abuse` writes docs/reliability.md); the prose around them is left alone.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import click

from loadtest.abuse import CHECKS, Options, Row, Target, bad_input, memory, slow
from loadtest.machine import cpu_model
from loadtest.report import replace_section
from loadtest.server import running_server
from models.paths import bundled_repository

BEGIN, END = "<!-- abuse:begin -->", "<!-- abuse:end -->"
# Imported to register their checks; the order here is the order of the table.
CHECK_MODULES = (bad_input, memory, slow)
# The container image's allocator settings (Dockerfile), so RSS means what it means there.
IMAGE_ENV = ("GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576:glibc.malloc.arena_max=2",)


def render(rows: list[Row], server_args: list[str], env: tuple[str, ...]) -> str:
    """The run's command, date and machine, its server's settings, and the table."""
    command = shlex.join(["python", "-m", "loadtest.abuse", *sys.argv[1:]])
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Command: `{command}`, run {when} on {cpu_model()}, "
        f"{os.cpu_count()} cores (os.cpu_count).",
        "",
        f"Server: `{shlex.join([*env, 'exitserve', 'serve', *server_args])}` "
        "on the bundled models, over loopback.",
        "",
        "| check | measure | value |",
        "|---|---|---|",
    ]
    lines += [f"| {r.check} | {r.measure} | {r.value} |" for r in rows]
    return "\n".join(lines)


def run_checks(
    options: Options, names: list[str], args: list[str], env: dict[str, str]
) -> list[Row]:
    """Start one server with `args` and `env`, run the checks named, stop it."""
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(bundled_repository(), Path(tmp), args, env) as server,
    ):
        host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
        for name in names:
            click.echo(f"running {name} ...", err=True)
            rows += CHECKS[name](Target(server, host, port, options))
    return rows


@click.command()
@click.option("--out", type=click.Path(path_type=Path), help="write between its abuse markers")
@click.option("--only", multiple=True, type=click.Choice(list(CHECKS)), help="run these checks")
@click.option("--connections", default=200, show_default=True, help="slowloris connections")
@click.option(
    "--wait-s",
    default=12.0,
    show_default=True,
    help="slowloris wait before counting (header_timeout_s default 10 s + margin)",
)
@click.option("--header-mib", default=100, show_default=True, help="size of the huge header")
@click.option("--requests", default=200, show_default=True, help="normal requests per sample")
@click.option("--body-mib", default=16, show_default=True, help="size of the refused bodies")
@click.option("--bodies", default=10, show_default=True, help="refused bodies per round")
@click.option("--rounds", default=3, show_default=True, help="rounds of concurrent bodies")
@click.option("--model", default="mnist", show_default=True)
@click.option("--server-arg", "server_args", multiple=True, help="extra `serve` flag (repeat)")
@click.option(
    "--server-env",
    multiple=True,
    default=IMAGE_ENV,
    show_default=True,
    help="NAME=VALUE for the server's environment (repeat); default: the image's allocator",
)
def main(
    out: Path | None,
    only: tuple[str, ...],
    connections: int,
    wait_s: float,
    header_mib: int,
    requests: int,
    body_mib: int,
    bodies: int,
    rounds: int,
    model: str,
    server_args: tuple[str, ...],
    server_env: tuple[str, ...],
) -> None:
    """Run the abuse checks against a fresh server; print the table or write it into --out."""
    options = Options(connections, wait_s, header_mib, requests, model, body_mib, bodies, rounds)
    args = ["--device", "cpu", *server_args]
    env = dict(item.split("=", 1) for item in server_env)
    section = render(run_checks(options, list(only or CHECKS), args, env), args, server_env)
    if out is None:
        click.echo(section)
        return
    out.write_text(replace_section(out.read_text(), BEGIN, END, section))
    click.echo(f"wrote {out}", err=True)
