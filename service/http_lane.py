"""The v2 infer lane: inference requests answered by the HTTP protocol itself.

At one sample per request the ASGI cycle around the infer core costs about as much server
CPU as the core does: FastAPI's middleware and routing, Starlette's Request and Response,
each ASGI message a dict passed down four wrappers. uvicorn's protocol (service/http_limits.py)
hands `POST /v2/models/{name}[/versions/{version}]/infer` to this lane instead of the app.
The lane runs the same core as the documented routes (service/api/v2_infer.py), so limits,
decoding, errors and disconnects are one code path, and writes the response in one write.

What the app's layers would do, it does too: the request metrics (endpoint `infer`), the
`{"error": ...}` body and headers of an ExitServeError, and for anything else a logged
traceback and a bare 500. uvicorn's connection handling is untouched: keep-alive,
pipelining (a pipelined request waits for the answer before it), `Connection: close`,
100-continue, graceful shutdown (the lane's tasks are the server's tasks, awaited on exit).
Requests the lane does not take (other paths, names the patterns refuse, a server with
access logs on) go to the app as before.

A request whose whole body came with its head (every small request over a fast link), not
compressed and small enough to decode inline, is started in the protocol's callback
(`start`): decoded and queued at once, and, when stage 0 ran at once (`Pipeline._solo`),
answered before the callback returns. Any other request is read, decoded and queued by a
task (`serve`). Once queued, either is answered by a callback on its future: no task and
no connection watcher per request. The protocol holds that future among the server's
tasks (shutdown awaits it) and cancels it if the connection is lost, so a client that
hangs up stops costing compute at once.

A second dispatcher beside FastAPI's router, where the design asks for one: kept for two
paths because it measured +10% single-sample throughput at saturation and +6% at
concurrency 1 (`python -m loadtest.ab`, docs/benchmarks.md's session-18 notes).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, cast

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.types import Receive
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle

from models.manifest import NAME_PATTERN, VERSION_PATTERN
from service.api.offload import OFFLOAD_BYTES
from service.api.v2_infer import Started, read_infer, start_infer
from service.errors import ClientGone, ExitServeError, NotReady, error_body
from service.metrics import UNKNOWN, Metrics
from service.protocol.v2_decode import DecodedInfer
from service.protocol.v2_encode import JSON, EncodedResponse, encode_infer
from service.types import InferenceResult

log = logging.getLogger(__name__)
ENDPOINT = "infer"  # the documented route's name: request metrics label by it
_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
_NAME, _VERSION = re.compile(NAME_PATTERN), re.compile(VERSION_PATTERN)
_INTERNAL = error_body("internal error")
Track = Callable[["asyncio.Future[InferenceResult]"], None]  # the protocol holds pending work
Outcome = EncodedResponse | Exception


class InferLane:
    """Answers v2 infer requests for one app, given uvicorn's request-response cycle."""

    def __init__(self, app: FastAPI) -> None:
        self.state = app.state
        self.metrics = cast(Metrics, app.state.metrics)

    @staticmethod
    def target(scope: Mapping[str, Any]) -> tuple[str, str | None] | None:
        """(model, version) when `scope` is a v2 infer request the lane takes, else None."""
        match = _PATH.match(scope["path"]) if scope["method"] == "POST" else None
        if match is None:
            return None
        name, version = match.groups()
        if not _NAME.match(name) or (version is not None and not _VERSION.match(version)):
            return None  # FastAPI's route answers 400 naming the pattern
        return name, version

    @staticmethod
    def in_hand(cycle: RequestResponseCycle) -> bool:
        """Whether `start` can take the request: its whole body is read, uncompressed,
        and small enough to decode inline (service/api/offload.py)."""
        if cycle.more_body or cycle.disconnected or len(cycle.body) > OFFLOAD_BYTES:
            return False
        return all(key != b"content-encoding" for key, _ in cycle.scope["headers"])

    def start(
        self, cycle: RequestResponseCycle, name: str, version: str | None, track: Track
    ) -> None:
        """Decode and queue a request `in_hand` now; answer it now if its answer is ready,
        else when its future is done (`track` hands the future to the protocol)."""
        begun = time.perf_counter()
        headers = Headers(raw=cast(list[tuple[bytes, bytes]], cycle.scope["headers"]))
        body, cycle.body = bytes(cycle.body), bytearray()  # read, as `receive` would
        try:
            future, decoded = start_infer(self.state, headers, body, name, version)
        except Exception as exc:
            self._reply(cycle, name, begun, exc)
            return
        self._when_done(cycle, name, begun, (future, decoded), track)

    async def serve(
        self, cycle: RequestResponseCycle, name: str, version: str | None, track: Track
    ) -> None:
        """Read, decode and queue the cycle's request (a task: its body may come in later
        reads), then answer it as `start` does: exactly one response, none if the client
        is gone."""
        begun = time.perf_counter()
        try:
            headers = Headers(raw=cast(list[tuple[bytes, bytes]], cycle.scope["headers"]))
            receive = cast(Receive, cycle.receive)
            started = await read_infer(self.state, headers, receive, name, version)
        except Exception as exc:
            self._reply(cycle, name, begun, exc)
            return
        self._when_done(cycle, name, begun, started, track)

    def _when_done(
        self, cycle: RequestResponseCycle, name: str, begun: float, started: Started, track: Track
    ) -> None:
        """Answer now if the answer is ready, else when its future is done (`track` hands
        the future to the protocol, which cancels it if the connection is lost)."""
        future, decoded = started
        if future.done():
            self._reply(cycle, name, begun, _encoded(future, decoded))
            return
        track(future)
        future.add_done_callback(partial(self._settled, cycle, name, begun, decoded))

    def _settled(
        self,
        cycle: RequestResponseCycle,
        name: str,
        begun: float,
        decoded: DecodedInfer,
        future: asyncio.Future[InferenceResult],
    ) -> None:
        """Answer a queued request once its future is done. Cancelled, it was the protocol
        (the client hung up) or a forced shutdown (uvicorn cancels what is left)."""
        if not future.cancelled():
            self._reply(cycle, name, begun, _encoded(future, decoded))
        elif cycle.disconnected or cycle.transport.is_closing():
            gone = "the client closed the connection before the answer was ready"
            self._reply(cycle, name, begun, ClientGone(gone))
        else:
            self._reply(cycle, name, begun, NotReady("the server is shutting down"))

    def _reply(self, cycle: RequestResponseCycle, name: str, begun: float, out: Outcome) -> None:
        """Write the answer or the error's response, and count the request."""
        if isinstance(out, EncodedResponse):
            status, body = 200, out.body
            head = _head(out.media_type, len(body), out.headers)
        elif isinstance(out, ExitServeError):
            status, body = out.status_code, error_body(out.message)
            head = _head(JSON, len(body), out.headers)
            out.__traceback__ = None  # a timed-out future may outlive us; its frames hold the body
        else:
            log.error("unhandled error in POST %s", cycle.scope["path"], exc_info=out)
            out.__traceback__ = None
            status, body = 500, _INTERNAL
            head = _head(JSON, len(body), {})
        _respond(cycle, status, head, body)
        known = self.state.dataplane.serves(name)
        seconds = time.perf_counter() - begun
        self.metrics.record_request(name if known else UNKNOWN, ENDPOINT, status, seconds)


def _encoded(future: asyncio.Future[InferenceResult], decoded: DecodedInfer) -> Outcome:
    """The done future's answer encoded as asked, or its error."""
    try:
        return encode_infer(future.result(), decoded.outputs, decoded.request_id)
    except Exception as exc:
        return exc


def _head(media_type: str, length: int, headers: dict[str, str]) -> bytes:
    lines = [f"content-type: {media_type}\r\ncontent-length: {length}\r\n"]
    lines.extend(f"{key.lower()}: {value}\r\n" for key, value in headers.items())
    return "".join(lines).encode("latin-1")


def _respond(cycle: RequestResponseCycle, status: int, head: bytes, body: bytes) -> None:
    """Write the whole response at once and finish the cycle as uvicorn's `send` would."""
    if cycle.disconnected or cycle.response_started:
        return
    cycle.response_started, cycle.waiting_for_100_continue = True, False
    parts = [STATUS_LINE[status]]
    for key, value in cycle.default_headers:  # the Date header
        parts += [key, b": ", value, b"\r\n"]
    parts.append(head)
    if not cycle.keep_alive:
        parts.append(b"connection: close\r\n")
    parts += [b"\r\n", body]
    cycle.transport.write(b"".join(parts))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
