"""What a route needs from the app: the data plane, the settings, JSON responses, and
path parameter types checked before they reach the data plane."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, cast

import orjson
from fastapi import Path, Request, Response
from starlette.datastructures import State

from models.manifest import NAME_PATTERN, VERSION_PATTERN
from service.errors import NotReady
from service.settings import Settings

if TYPE_CHECKING:
    from service.dataplane import DataPlane

# Path parameters as the repository allows them; FastAPI refuses others with a 400 (see
# api.errors) before any lookup, and the OpenAPI schema carries the patterns.
ModelName = Annotated[str, Path(pattern=NAME_PATTERN, examples=["mnist"])]
ModelVersion = Annotated[str, Path(pattern=VERSION_PATTERN, examples=["1"])]


def dataplane(request: Request) -> DataPlane:
    return cast("DataPlane", request.app.state.dataplane)


def serving(request: Request) -> DataPlane:
    """The data plane, if it takes inference requests now; else 503 with Retry-After."""
    return serving_plane(request.app.state)


def serving_plane(state: State) -> DataPlane:
    """`serving` for a caller that has the app's state but no request (the infer lane).

    Checked before the model lookup: while draining, models are unloading, and a client
    must hear "come back later" (503), not "no such model" (404).
    """
    plane = cast("DataPlane", state.dataplane)
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
