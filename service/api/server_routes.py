"""Server-wide endpoints: metadata and the liveness/readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.api.context import dataplane, json_response
from service.api.docs import errors
from service.errors import NotReady
from service.protocol.schema import LiveResponse, ReadyResponse, ServerMetadataResponse

router = APIRouter(tags=["server"])


@router.get("/v2", name="server_metadata", response_model=ServerMetadataResponse)
async def server_metadata(request: Request) -> Response:
    return json_response(dataplane(request).server_metadata())


@router.get(
    "/v2/health/live", name="health_live", response_model=LiveResponse, responses=errors(503)
)
async def health_live(request: Request) -> Response:
    if not dataplane(request).live:
        raise NotReady("server is not live")
    return json_response({"live": True})


@router.get(
    "/v2/health/ready", name="health_ready", response_model=ReadyResponse, responses=errors(503)
)
async def health_ready(request: Request) -> Response:
    """503 while models load and from the moment a shutdown starts draining."""
    if not dataplane(request).ready:
        raise NotReady("server is not ready")
    return json_response({"ready": True})
