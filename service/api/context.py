"""What a route needs from the app: the data plane, the settings, JSON responses, and
path parameters checked before they reach the data plane."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, cast

import orjson
from fastapi import Request, Response

from models.manifest import NAME_PATTERN
from service.errors import BadRequest, NotReady
from service.settings import Settings

if TYPE_CHECKING:
    from service.dataplane import DataPlane

_NAME = re.compile(NAME_PATTERN)
_VERSION = re.compile(r"^[0-9]{1,9}$")


def dataplane(request: Request) -> DataPlane:
    return cast("DataPlane", request.app.state.dataplane)


def serving(request: Request) -> DataPlane:
    """The data plane, if it takes inference requests now; else 503 with Retry-After.

    Checked before the model lookup: while draining, models are unloading, and a client
    must hear "come back later" (503), not "no such model" (404).
    """
    plane = dataplane(request)
    if not plane.ready:
        raise NotReady("server is not ready: starting, or draining for shutdown")
    return plane


def settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


def json_response(
    content: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """orjson-encoded JSON; numpy arrays serialise natively."""
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code, headers, media_type="application/json")


def model_name(name: str) -> str:
    """A model name as the repository allows it; anything else never reaches a lookup."""
    if not _NAME.match(name):
        raise BadRequest(f"model name must match {NAME_PATTERN}")
    return name


def model_version(version: str | None) -> str | None:
    if version is not None and not _VERSION.match(version):
        raise BadRequest("model version must be a number of 1 to 9 digits")
    return version
