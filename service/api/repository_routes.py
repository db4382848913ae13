"""Triton's model repository extension: index, load and unload, behind the admin token;
and the fidelity controller's operator actions (reset, freeze, unfreeze), an extension.

Models load only from the server's own repository folder: a request names a model (and
optionally a version), never a path, and Triton's file/config overrides are refused.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from service.api.admin import require_admin
from service.api.body import read_body
from service.api.context import ModelName, dataplane, json_response
from service.api.docs import errors
from service.errors import BadRequest, PayloadTooLarge
from service.protocol.json_body import load_object, show

router = APIRouter(
    tags=["repository"], dependencies=[Depends(require_admin)], responses=errors(400, 401, 403)
)
# Admin bodies are a few small keys; anything bigger is not a repository request.
MAX_ADMIN_BODY = 4096


@router.post("/v2/repository/index", name="repository_index")
async def index(request: Request) -> Response:
    """Every model version on disk with its state (`{"ready": true}` lists only serving ones)."""
    body = await _body(request)
    ready_only = body.get("ready", False)
    if not isinstance(ready_only, bool):
        raise BadRequest("ready: must be true or false")
    entries = dataplane(request).repository_index()
    return json_response([e for e in entries if e["state"] == "READY" or not ready_only])


@router.post(
    "/v2/repository/models/{model_name}/load", name="repository_load", responses=errors(404, 503)
)
async def load(request: Request, model_name: ModelName) -> Response:
    """(Re)load a model, or one version, from the repository; old versions serve meanwhile."""
    version = _version(await _body(request))
    versions = await dataplane(request).load_model(model_name, version)
    return json_response({"name": model_name, "versions": versions})


@router.post(
    "/v2/repository/models/{model_name}/unload", name="repository_unload", responses=errors(404)
)
async def unload(request: Request, model_name: ModelName) -> Response:
    """Stop serving a model (or one version) once its queued requests are answered."""
    body = await _body(request)
    _unload_dependents(body)
    version = _version(body)
    await dataplane(request).unload_model(model_name, version)
    return json_response({"name": model_name, "unloaded": version or "all"})


FIDELITY = "/v2/repository/models/{model_name}/fidelity"
_FIDELITY_DOC = errors(404, 503)


@router.post(f"{FIDELITY}/reset", name="fidelity_reset", responses=_FIDELITY_DOC)
async def fidelity_reset(request: Request, model_name: ModelName) -> Response:
    """Back to the calibrated thresholds; the controller's evidence is forgotten."""
    return await _fidelity(request, model_name, "reset")


@router.post(f"{FIDELITY}/freeze", name="fidelity_freeze", responses=_FIDELITY_DOC)
async def fidelity_freeze(request: Request, model_name: ModelName) -> Response:
    """Keep the current thresholds until unfrozen (estimates still update)."""
    return await _fidelity(request, model_name, "freeze")


@router.post(f"{FIDELITY}/unfreeze", name="fidelity_unfreeze", responses=_FIDELITY_DOC)
async def fidelity_unfreeze(request: Request, model_name: ModelName) -> Response:
    """Let the controller move thresholds again."""
    return await _fidelity(request, model_name, "unfreeze")


async def _fidelity(request: Request, name: str, action: str) -> Response:
    """An action on one version (`{"parameters": {"version": "1"}}`, default: the version
    that serves); answers with the controller's snapshot after it."""
    version = _version(await _body(request))
    return json_response(dataplane(request).fidelity_action(name, version, action))


async def _body(request: Request) -> dict[str, Any]:
    try:
        raw = await read_body(request.headers, request.receive, MAX_ADMIN_BODY)
    except PayloadTooLarge:  # its message names max_body_bytes, the inference limit
        raise PayloadTooLarge(
            f"repository request body is larger than the {MAX_ADMIN_BODY} bytes "
            "an admin request may have (a fixed limit)"
        ) from None
    return load_object(raw) if raw.strip() else {}


def _unload_dependents(body: dict[str, Any]) -> None:
    """Triton's `unload_dependents` flag, which tritonclient always sends: accepted and
    dropped, since no model here depends on another (no ensembles)."""
    params = body.get("parameters")
    flag = params.pop("unload_dependents", False) if isinstance(params, dict) else False
    if not isinstance(flag, bool):
        raise BadRequest("parameters.unload_dependents: must be true or false")


def _version(body: dict[str, Any]) -> str | None:
    """`{"parameters": {"version": "2"}}`; any other parameter (paths, configs) is refused."""
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("parameters: must be a JSON object")
    for key in params:
        if key != "version":
            raise BadRequest(
                f"parameters.{show(key)[1:-1]}: not accepted; models load only "
                "from the server's repository, by name and version"
            )
    version = params.get("version")
    if version is not None and not (
        isinstance(version, str) and version.isdigit() and len(version) <= 9
    ):
        raise BadRequest("parameters.version: must be a version number as a string")
    return version
