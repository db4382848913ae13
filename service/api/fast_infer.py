"""The v2 infer hot path, taken before FastAPI's router and its own middleware.

Profiled at one sample per request, FastAPI's routing, dependency and response layers
cost about twice the CPU of the infer handler itself, more than the model's early exit
does. `fast_path` matches the two v2 infer paths with one regex; `ExitServeApp`
(service/app.py) sends those requests through the app's metrics and error layers to this
lane, which calls the same `serve_infer` core as the documented routes, so limits, errors
and disconnect handling stay one code path. The routes remain for the OpenAPI document
and for any request this lane does not take (a name or version the patterns refuse gets
FastAPI's 400).
"""

from __future__ import annotations

import re

from fastapi import APIRouter, FastAPI, Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from models.manifest import NAME_PATTERN
from service.api.errors import exitserve_response
from service.api.infer_routes import router, serve_infer
from service.errors import ExitServeError

_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
_NAME, _VERSION = re.compile(NAME_PATTERN), re.compile(r"^[0-9]{1,9}$")


class FastInfer:
    """POST /v2/models/{name}[/versions/{version}]/infer, answered without the router."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app, self.api = app, api
        self.route = _route_named(router, "infer")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = fast_path(scope)
        if match is None:
            await self.app(scope, receive, send)
            return
        name, version = match
        scope["app"], scope["route"] = self.api, self.route  # as the router would set them
        scope["path_params"] = {
            "model_name": name,
            **({"model_version": version} if version else {}),
        }
        try:
            response = await serve_infer(Request(scope, receive), name, version)
        except ExitServeError as exc:
            response = exitserve_response(exc)
            # As Starlette does for routed requests: the error may outlive this request
            # (a timed-out future still queued) and its traceback's frames hold the body.
            exc.__traceback__ = None
        await response(scope, receive, send)


def fast_path(scope: Scope) -> tuple[str, str | None] | None:
    """(model, version) when this lane takes the request, else None."""
    match = _PATH.match(scope["path"]) if scope["type"] == "http" else None
    if match is None or scope["method"] != "POST" or not _valid(*match.groups()):
        return None
    name, version = match.groups()
    return name, version


def _valid(name: str, version: str | None) -> bool:
    return bool(_NAME.match(name)) and (version is None or bool(_VERSION.match(version)))


def _route_named(api: APIRouter, name: str) -> BaseRoute:
    """The documented route this lane stands in for (request metrics label by its name)."""
    for route in api.routes:
        if getattr(route, "name", None) == name:
            return route
    raise LookupError(f"no route named {name!r}")
