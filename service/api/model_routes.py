"""Per-model endpoints: metadata, readiness, Triton config, statistics and fidelity.

Each exists with and without `/versions/{model_version}`; without it the data plane picks
the version that serves by default.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from service.api.context import ModelName, ModelVersion, dataplane, json_response
from service.api.docs import LOOKUP_ERRORS, errors
from service.errors import NotReady
from service.protocol.schema import ModelMetadataResponse, ModelReadyResponse

router = APIRouter(tags=["models"])
M = "/v2/models/{model_name}"
MV = "/v2/models/{model_name}/versions/{model_version}"
_STATS_DOC: dict[int | str, dict[str, Any]] = {200: {"description": "Triton statistics JSON"}}
_CONFIG_DOC: dict[int | str, dict[str, Any]] = {200: {"description": "Triton model config JSON"}}
_FIDELITY_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The fidelity controller's snapshot (extension, docs/fidelity.md): "
        "state, target, shadow_fraction, samples_seen, per early exit its state, threshold "
        "(null = switched off), calibrated threshold and agreement estimate with one-sided "
        "bounds, and the latest threshold changes. 404 when the version has no controller."
    }
}
# 404: not in the repository; 503: in it but not serving (unloaded, load failed, starting)
LOOKUP: dict[int | str, dict[str, Any]] = {**LOOKUP_ERRORS, **errors(503)}


@router.get("/v2/models/stats", name="model_stats", responses={**_STATS_DOC})
async def all_stats(request: Request) -> Response:
    """Statistics of every loaded model version (registered before `{model_name}`)."""
    return json_response(dataplane(request).model_stats())


@router.get(M, name="model_metadata", response_model=ModelMetadataResponse, responses=LOOKUP)
async def metadata(request: Request, model_name: ModelName) -> Response:
    return _metadata(request, model_name, None)


@router.get(MV, name="model_metadata", response_model=ModelMetadataResponse, responses=LOOKUP)
async def version_metadata(
    request: Request, model_name: ModelName, model_version: ModelVersion
) -> Response:
    return _metadata(request, model_name, model_version)


@router.get(
    f"{M}/ready",
    name="model_ready",
    response_model=ModelReadyResponse,
    responses=LOOKUP,
)
async def ready(request: Request, model_name: ModelName) -> Response:
    return _ready(request, model_name, None)


@router.get(
    f"{MV}/ready",
    name="model_ready",
    response_model=ModelReadyResponse,
    responses=LOOKUP,
)
async def version_ready(
    request: Request, model_name: ModelName, model_version: ModelVersion
) -> Response:
    return _ready(request, model_name, model_version)


@router.get(f"{M}/config", name="model_config", responses={**_CONFIG_DOC, **LOOKUP})
async def config(request: Request, model_name: ModelName) -> Response:
    return _config(request, model_name, None)


@router.get(f"{MV}/config", name="model_config", responses={**_CONFIG_DOC, **LOOKUP})
async def version_config(
    request: Request, model_name: ModelName, model_version: ModelVersion
) -> Response:
    return _config(request, model_name, model_version)


@router.get(f"{M}/stats", name="model_stats", responses={**_STATS_DOC, **LOOKUP})
async def stats(request: Request, model_name: ModelName) -> Response:
    return _stats(request, model_name, None)


@router.get(f"{MV}/stats", name="model_stats", responses={**_STATS_DOC, **LOOKUP})
async def version_stats(
    request: Request, model_name: ModelName, model_version: ModelVersion
) -> Response:
    return _stats(request, model_name, model_version)


@router.get(f"{M}/fidelity", name="model_fidelity", responses={**_FIDELITY_DOC, **LOOKUP})
async def fidelity(request: Request, model_name: ModelName) -> Response:
    """The fidelity controller of the version that serves by default (an extension)."""
    return json_response(dataplane(request).fidelity(model_name, None))


@router.get(f"{MV}/fidelity", name="model_fidelity", responses={**_FIDELITY_DOC, **LOOKUP})
async def version_fidelity(
    request: Request, model_name: ModelName, model_version: ModelVersion
) -> Response:
    """The fidelity controller of one version (an extension)."""
    return json_response(dataplane(request).fidelity(model_name, model_version))


def _metadata(request: Request, name: str, version: str | None) -> Response:
    meta = dataplane(request).model_metadata(name, version)
    return json_response(meta)


def _ready(request: Request, name: str, version: str | None) -> Response:
    """404 for a model or version the repository lacks; 503 while it is not serving
    (starting, draining, unloaded, or its load failed), so a probe knows to come back."""
    plane = dataplane(request)
    served = plane.manifest(name, version).version  # raises NotFound or NotReady
    if not plane.model_ready(name, version):
        raise NotReady(f"model {name!r} is not ready")
    return json_response({"name": name, "version": served, "ready": True})


def _config(request: Request, name: str, version: str | None) -> Response:
    return json_response(dataplane(request).model_config(name, version))


def _stats(request: Request, name: str, version: str | None) -> Response:
    return json_response(dataplane(request).model_stats(name, version))
