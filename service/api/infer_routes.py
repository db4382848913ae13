"""Inference endpoints: v2 infer (JSON and binary tensors) and the friendly v1 predict.

Each route reads the body within the limit, decodes it against the model's input spec,
awaits the data plane and encodes the answer; large bodies are decoded off the event loop.
Served by uvicorn with exitserve's protocol, v2 infer requests are answered by the
protocol's infer lane (service/http_lane.py) on the same core (api/v2_infer.py); these
routes document them and answer any the lane does not take.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.api import context as ctx
from service.api.body import read_body
from service.api.disconnect import unless_disconnected
from service.api.docs import INFER_ERRORS, json_body
from service.api.offload import decode
from service.api.v2_infer import answer_infer
from service.protocol import v1
from service.protocol.schema import InferenceResponse, PredictResponse
from service.protocol.v2_encode import JSON

router = APIRouter(tags=["inference"])
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
    body = await read_body(request.headers, request.receive, limits.max_body_bytes)
    data = await decode(
        request.app.state,
        body,
        v1.decode_predict,
        loaded.manifest,
        limits.max_samples_per_request,
        loaded.tokens,
    )
    result = await unless_disconnected(request.receive, plane.submit(data, loaded))
    return Response(v1.encode_predict(result), media_type=JSON)


async def serve_infer(request: Request, name: str, version: str | None) -> Response:
    encoded = await answer_infer(request.app.state, request.headers, request.receive, name, version)
    return Response(encoded.body, media_type=encoded.media_type, headers=encoded.headers)
