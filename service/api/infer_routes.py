"""Inference endpoints: v2 infer (JSON and binary tensors) and the friendly v1 predict.

Each route reads the body within the limit, decodes it against the model's input spec,
awaits the data plane and encodes the answer; large bodies are decoded off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from service.api import context as ctx
from service.api.body import read_body
from service.api.disconnect import unless_disconnected
from service.api.docs import INFER_ERRORS, json_body
from service.protocol import v1
from service.protocol.schema import InferenceResponse, PredictResponse
from service.protocol.v2_decode import HEADER_LENGTH, decode_infer
from service.protocol.v2_encode import JSON, encode_infer

router = APIRouter(tags=["inference"])
T = TypeVar("T")
# Above this many bytes, parsing takes long enough (~ms) to stall other requests.
OFFLOAD_BYTES = 256 << 10
_V2_BODY = json_body("InferenceRequest", binary=True)


@router.post(
    "/v2/models/{model_name}/infer",
    name="infer",
    response_model=InferenceResponse,
    responses=INFER_ERRORS,
    openapi_extra=_V2_BODY,
)
async def infer(request: Request, model_name: ctx.ModelName) -> Response:
    """Run a v2 inference request; binary outputs come after the JSON header."""
    return await serve_infer(request, model_name, None)


@router.post(
    "/v2/models/{model_name}/versions/{model_version}/infer",
    name="infer",
    response_model=InferenceResponse,
    responses=INFER_ERRORS,
    openapi_extra=_V2_BODY,
)
async def version_infer(
    request: Request, model_name: ctx.ModelName, model_version: ctx.ModelVersion
) -> Response:
    return await serve_infer(request, model_name, model_version)


@router.post(
    "/v1/models/{model_name}:predict",
    name="v1_predict",
    response_model=PredictResponse,
    responses=INFER_ERRORS,
    openapi_extra=json_body("PredictRequest"),
)
async def predict(request: Request, model_name: ctx.ModelName) -> Response:
    """`{"instances": [...]}` in, one prediction per instance out, in order."""
    plane, limits = ctx.serving(request), ctx.settings(request)
    manifest = plane.manifest(model_name, None)
    body = await read_body(request, limits.max_body_bytes)
    data = await _decode(
        len(body), v1.decode_predict, body, manifest, limits.max_samples_per_request
    )
    result = await unless_disconnected(request, plane.submit(data))
    return Response(v1.encode_predict(result), media_type=JSON)


async def serve_infer(request: Request, name: str, version: str | None) -> Response:
    """The v2 infer core, shared by the routes and the fast lane (api.fast_infer)."""
    plane, limits = ctx.serving(request), ctx.settings(request)
    manifest = plane.manifest(name, version)
    body = await read_body(request, limits.max_body_bytes)
    decoded = await _decode(
        len(body),
        decode_infer,
        body,
        request.headers.get(HEADER_LENGTH),
        manifest,
        limits.max_samples_per_request,
    )
    result = await unless_disconnected(request, plane.submit(decoded.request))
    encoded = encode_infer(result, decoded.outputs, decoded.request_id)
    return Response(encoded.body, media_type=encoded.media_type, headers=encoded.headers)


async def _decode(size: int, fn: Callable[..., T], *args: object) -> T:
    """Small bodies inline (a thread hop costs more than parsing them), large ones offloaded."""
    if size > OFFLOAD_BYTES:
        return await run_in_threadpool(fn, *args)
    return fn(*args)
