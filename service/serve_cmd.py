"""`exitserve serve`: settings from flags over `EXITSERVE_*` variables over defaults, then
uvicorn in this process with a graceful drain on SIGTERM.

Bad settings or a model that fails to load end the command with a one-paragraph message
and exit code 2 (settings) or 1 (start), never a traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click
import uvicorn
from pydantic import ValidationError

from service.app import create_app
from service.http_lane import InferLane
from service.http_limits import Limits, protocol_class
from service.server import DrainingServer, StartError
from service.settings import ENV_PREFIX, Settings
from service.settings_flags import flag_name, settings_options, settings_values


@click.command()
@settings_options
def serve(**flags: Any) -> None:
    """Serve the model repository over HTTP (v2 and v1) with metrics on their own port.

    The admin token is read from EXITSERVE_ADMIN_TOKEN only, so it never shows in `ps`.
    """
    settings = load_settings(flags)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        run(settings)
    except StartError as exc:
        click.echo(f"exitserve serve: cannot start: {exc}", err=True)
        sys.exit(1)


def load_settings(flags: dict[str, Any]) -> Settings:
    """Settings from the given flags over the environment; exit 2 with a clear list if bad."""
    try:
        return Settings(**settings_values(flags))
    except ValidationError as exc:
        click.echo("exitserve serve: invalid settings:\n" + describe(exc), err=True)
        sys.exit(2)


def describe(exc: ValidationError) -> str:
    """One line per problem: the setting, the flag and variable that set it, what is wrong."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        field = loc[0] if loc else ""
        flag = flag_name(loc[1] if field == "batching" and len(loc) > 1 else field)
        source = f"{'.'.join(loc)} ({flag} / {ENV_PREFIX}{field.upper()})" if loc else "settings"
        lines.append(f"  {source}: {err['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def run(settings: Settings) -> None:
    """Build the app and run uvicorn until a signal has drained it.

    The HTTP protocol is httptools with the connection limits of `service.http_limits`, and
    v2 infer requests answered in it by the app's infer lane (`service.http_lane`);
    WebSockets are off (the API has none), so no request can switch to an unlimited protocol.
    """
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.http_port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        loop="auto",
        http=protocol_class(Limits.from_settings(settings), InferLane(app)),
        ws="none",
        timeout_keep_alive=settings.keep_alive_timeout_s,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.drain_timeout_s) + 1,
        server_header=False,
        proxy_headers=settings.access_log,  # client addresses matter to access logs alone
    )
    DrainingServer(config, app.state.lifecycle).run()
