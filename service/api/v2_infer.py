"""The v2 infer core: body in, encoded answer out, shared by the documented routes
(service/api/infer_routes.py) and the protocol's infer lane (service/http_lane.py).

It needs only what both have: the app's state, the request headers and ASGI `receive`
(for the body and to notice a client that hangs up). One model lookup per request, so
decoding and queueing see the same version even if a reload lands in between.
`start_infer` is the same core for a body already in hand, small and not compressed: the
lane runs it in the protocol's own callback, with no task and no ASGI message. The lane
reads any other body with `read_infer`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from starlette.datastructures import Headers, State
from starlette.types import Receive

from service.api.body import body_in_hand, read_body
from service.api.context import serving_plane
from service.api.disconnect import unless_disconnected
from service.api.offload import decode
from service.protocol.v2_decode import HEADER_LENGTH, DecodedInfer, decode_infer
from service.protocol.v2_encode import EncodedResponse, encode_infer
from service.settings import Settings
from service.types import InferenceResult

if TYPE_CHECKING:
    from models.manifest import Manifest
    from service.registry import Loaded
    from service.text import Tokens

Started = tuple["asyncio.Future[InferenceResult]", DecodedInfer]


async def answer_infer(
    state: State, headers: Headers, receive: Receive, name: str, version: str | None
) -> EncodedResponse:
    """Run one v2 inference request; raises ExitServeError for anything the client hears."""
    future, decoded = await read_infer(state, headers, receive, name, version)
    result = await unless_disconnected(receive, future)
    return encode_infer(result, decoded.outputs, decoded.request_id)


async def read_infer(
    state: State, headers: Headers, receive: Receive, name: str, version: str | None
) -> Started:
    """`answer_infer` up to the queue: the body read and decoded, and the answer's future
    (the lane waits for it by a callback, with no watcher)."""
    plane, limits = serving_plane(state), cast(Settings, state.settings)
    loaded = plane.lookup(name, version)
    body = await read_body(headers, receive, limits.max_body_bytes)
    decoded = await decode(state, body, decode_infer, *_decoding(headers, loaded, limits))
    return plane.submit(decoded.request, loaded), decoded


def start_infer(
    state: State, headers: Headers, body: bytes, name: str, version: str | None
) -> Started:
    """`answer_infer` up to the queue, for a whole body in hand that decodes inline
    (`body_in_hand`): the answer's future (done already when stage 0 ran at once) and
    the decoded request the answer is encoded for."""
    plane, limits = serving_plane(state), cast(Settings, state.settings)
    loaded = plane.lookup(name, version)
    body = body_in_hand(body, limits.max_body_bytes)
    decoded = decode_infer(body, *_decoding(headers, loaded, limits))
    return plane.submit(decoded.request, loaded), decoded


def _decoding(
    headers: Headers, loaded: Loaded, limits: Settings
) -> tuple[str | None, Manifest, int, Tokens | None]:
    """`decode_infer`'s arguments after the body, the same for both ways in."""
    return (
        headers.get(HEADER_LENGTH),
        loaded.manifest,
        limits.max_samples_per_request,
        loaded.tokens,
    )
