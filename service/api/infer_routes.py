"""Inference endpoints: v2 infer (JSON and binary tensors) and the friendly v1 predict.

Each route reads the body within the limit, decodes it against the model's input spec,
awaits the data plane and encodes the answer; large bodies are decoded off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, cast

import anyio
from fastapi import APIRouter, Request, Response

from service.api import context as ctx
from service.api.body import read_body
from service.api.disconnect import unless_disconnected
from service.api.docs import INFER_ERRORS, json_body
from service.errors import ExitServeError
from service.protocol import v1
from service.protocol.schema import InferenceResponse, PredictResponse
from service.protocol.v2_decode import HEADER_LENGTH, decode_infer
from service.protocol.v2_encode import JSON, encode_infer

router = APIRouter(tags=["inference"])
T = TypeVar("T")
# Above this many bytes, parsing takes long enough (~ms) to stall other requests.
OFFLOAD_BYTES = 256 << 10
# Parsing holds the GIL, so more decodes at once gain no speed, only memory: a 16 MB JSON
# body is ~200 MB while it is Python lists and floats.
DECODE_THREADS = 2
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
    loaded = plane.lookup(model_name, None)
    body = await read_body(request, limits.max_body_bytes)
    data = await _decode(
        request,
        body,
        v1.decode_predict,
        loaded.manifest,
        limits.max_samples_per_request,
        loaded.tokens,
    )
    result = await unless_disconnected(request, plane.submit(data, loaded))
    return Response(v1.encode_predict(result), media_type=JSON)


async def serve_infer(request: Request, name: str, version: str | None) -> Response:
    """The v2 infer core, shared by the routes and the fast lane (api.fast_infer)."""
    plane, limits = ctx.serving(request), ctx.settings(request)
    loaded = plane.lookup(name, version)  # the one lookup: decode and queue on one version
    body = await read_body(request, limits.max_body_bytes)
    decoded = await _decode(
        request,
        body,
        decode_infer,
        request.headers.get(HEADER_LENGTH),
        loaded.manifest,
        limits.max_samples_per_request,
        loaded.tokens,
    )
    result = await unless_disconnected(request, plane.submit(decoded.request, loaded))
    encoded = encode_infer(result, decoded.outputs, decoded.request_id)
    return Response(encoded.body, media_type=encoded.media_type, headers=encoded.headers)


async def _decode(request: Request, body: bytes, fn: Callable[..., T], *args: object) -> T:
    """`fn(body, *args)`: small bodies inline (a thread hop costs more than parsing them),
    large ones in a worker thread, at most DECODE_THREADS at once.

    An error must not cross the thread hop as a raised exception: anyio's future would hold
    it while its traceback holds the frame awaiting that future, a reference cycle that
    keeps the body and the parsed JSON alive until the (rarely run) cycle collector finds
    it. The worker returns it as a value instead, and it is raised here without a cycle.
    """
    if len(body) <= OFFLOAD_BYTES:
        return fn(body, *args)
    limiter = _decode_limiter(request)
    outcome = await anyio.to_thread.run_sync(_settled, fn, body, *args, limiter=limiter)
    if isinstance(outcome, _Failed):
        try:
            raise outcome.error
        finally:
            del outcome  # else this frame -> outcome -> error -> traceback -> this frame
    return outcome


def _decode_limiter(request: Request) -> anyio.CapacityLimiter:
    """One per app, made in its event loop on first use."""
    state = request.app.state
    if getattr(state, "decode_limiter", None) is None:
        state.decode_limiter = anyio.CapacityLimiter(DECODE_THREADS)
    return cast(anyio.CapacityLimiter, state.decode_limiter)


@dataclass(frozen=True)
class _Failed:
    error: Exception


def _settled(fn: Callable[..., T], *args: object) -> T | _Failed:
    """`fn`'s value, or what it raised; a client error keeps no frames (nothing to log)."""
    try:
        return fn(*args)
    except ExitServeError as exc:
        return _Failed(_without_frames(exc))
    except Exception as exc:  # a bug: its traceback goes to the log, then frees the body
        return _Failed(exc)


def _without_frames(exc: ExitServeError) -> ExitServeError:
    """The error alone: no traceback, no chained error whose traceback holds request data."""
    exc.__context__ = exc.__cause__ = None
    return exc.with_traceback(None)
