"""The v2 infer core: body in, encoded answer out, shared by the documented routes
(service/api/infer_routes.py) and the protocol's infer lane (service/http_lane.py).

It needs only what both have: the app's state, the request headers and ASGI `receive`
(for the body and to notice a client that hangs up). One model lookup per request, so
decoding and queueing see the same version even if a reload lands in between.
"""

from __future__ import annotations

from typing import cast

from starlette.datastructures import Headers, State
from starlette.types import Receive

from service.api.body import read_body
from service.api.context import serving_plane
from service.api.disconnect import unless_disconnected
from service.api.offload import decode
from service.protocol.v2_decode import HEADER_LENGTH, decode_infer
from service.protocol.v2_encode import EncodedResponse, encode_infer
from service.settings import Settings


async def answer_infer(
    state: State, headers: Headers, receive: Receive, name: str, version: str | None
) -> EncodedResponse:
    """Run one v2 inference request; raises ExitServeError for anything the client hears."""
    plane, limits = serving_plane(state), cast(Settings, state.settings)
    loaded = plane.lookup(name, version)
    body = await read_body(headers, receive, limits.max_body_bytes)
    decoded = await decode(
        state,
        body,
        decode_infer,
        headers.get(HEADER_LENGTH),
        loaded.manifest,
        limits.max_samples_per_request,
        loaded.tokens,
    )
    result = await unless_disconnected(receive, plane.submit(decoded.request, loaded))
    return encode_infer(result, decoded.outputs, decoded.request_id)
