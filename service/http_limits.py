"""The HTTP edge's limits, enforced in uvicorn's httptools protocol: no proxy is assumed.

A connection is in one of three phases. *head*: from its opening (or a next request's
first byte) until the request head is parsed; it may take `max_header_bytes` and
`header_timeout_s`. *body*: until the body is in; it may take `body_timeout_s`. *idle*:
the app is answering or the connection waits for a next request (uvicorn's keep-alive
timer). Over a limit the client gets 431 or 408 with a JSON `{"error": ...}` naming the
setting, and the connection closes.

The header cap is applied before the parser sees the bytes: httptools joins a header's
pieces with `bytes +=` and uvicorn the URL's, so a 100 MiB header costs quadratic time on
the event loop. Here the parser never holds more than the cap. (A pipelined request's head
that begins in the same read as the previous request's body ends is counted from the next
read on: it may exceed the cap by at most one read; still bounded.)

v2 infer requests on a data port are handed to the infer lane (service/http_lane.py)
rather than the app: same limits, same connection handling, no ASGI stack. The lane
starts a request once its body is complete if that happens in the read that completed its
head (or had happened, for a pipelined one), else it runs as a task reading the body.

A connection opened beyond `max_connections` gets its request answered with 503 +
Retry-After instead of run, then closes; connections already open are not affected.
Deadline timers are armed only when a phase outlives the read that started it, so a
request that arrives in one read costs no timer at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from service.errors import error_body
from service.settings import Settings

if TYPE_CHECKING:
    from service.http_lane import InferLane

log = logging.getLogger(__name__)
Phase = Literal["head", "body", "idle"]
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class Limits:
    """The connection limits the protocol enforces (a copy of the settings it needs)."""

    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    max_requests_per_connection: int  # 0 = no limit

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            max_connections=settings.max_connections,
            max_requests_per_connection=settings.max_requests_per_connection,
        )


def error_response(status: int, message: str) -> bytes:
    """A complete `{"error": message}` response that closes the connection."""
    body = error_body(message)
    head = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n"
    return STATUS_LINE[status] + head % len(body) + b"\r\n" + body


async def over_capacity(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """Stands in for the app on a connection beyond `max_connections`."""
    body = error_body("too many connections (max_connections); retry later")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_S).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def protocol_class(limits: Limits, lane: InferLane | None = None) -> type[LimitedHttpTools]:
    """The protocol class to hand to `uvicorn.Config(http=...)`, bound to `limits` and, on
    the data port, to the app's infer lane."""

    class Configured(LimitedHttpTools):
        pass

    Configured.limits, Configured.lane = limits, lane
    return Configured


class LimitedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header cap, phase deadlines and a connection cap."""

    limits: ClassVar[Limits]
    lane: ClassVar[InferLane | None] = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._phase: Phase = "head"
        self._phase_start = self.loop.time()
        self._head_bytes = 0
        self._requests = 0
        self._timer: asyncio.TimerHandle | None = None
        self._reading = False  # in `data_received`
        self._lane_next: tuple[RequestResponseCycle, tuple[str, str | None]] | None = None
        self._lane_work: asyncio.Future[Any] | None = None  # a started request's answer
        self._lost = False  # the connection is gone
        if len(self.connections) > self.limits.max_connections:
            log.warning(
                "%d connections open (max_connections); answering 503", len(self.connections)
            )
            self.app = over_capacity
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)  # marks the cycle disconnected: the lane answers 499
        self._lost = True
        if self._lane_work is not None:  # nobody will read it: its rows stop running
            self._lane_work.cancel()

    def data_received(self, data: bytes) -> None:
        if self._phase == "idle":
            self._start_phase("head")
        self._reading = True
        try:
            while data and self._phase != "body" and not self.transport.is_closing():
                data = self._feed_head(data)
            if data and not self.transport.is_closing():
                super().data_received(data)
        finally:
            self._reading = False
        if self._lane_next is not None:  # the body goes on past this read
            self._lane_task(*self._lane_next)
        self._arm_deadline()

    def _feed_head(self, data: bytes) -> bytes:
        """Feed at most the head's remaining room; refuse if the head does not end in it."""
        room = self.limits.max_header_bytes - self._head_bytes
        if room <= 0:
            cap = self.limits.max_header_bytes
            self._refuse(431, f"request head is longer than {cap} bytes (max_header_bytes)")
            return b""
        self._head_bytes += min(room, len(data))
        super().data_received(data[:room])
        return data[room:]

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # A request answered within this read armed the idle keep-alive timer; one that
        # follows it in the same read is not idle time (uvicorn disarms it per read only).
        self._unset_keepalive_if_required()
        if self._phase == "idle":  # a pipelined request that began in the last one's read
            self._start_phase("head")

    def on_headers_complete(self) -> None:
        self._requests += 1
        super().on_headers_complete()
        self._start_phase("body")
        most = self.limits.max_requests_per_connection
        if most and self._requests >= most:
            self.cycle.keep_alive = False  # answered with `Connection: close`

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        """Run the request: by the infer lane if it takes it, else by the app. Pipelined
        requests come here too, in order, once the answer before them is complete."""
        lane, target = self.lane, None
        if lane is not None and app is self.config.loaded_app and not cycle.access_log:
            target = lane.target(cycle.scope)
        if lane is None or target is None:
            super()._start_asgi_task(cycle, app)
        elif self._reading:  # its body may end in this same read: `on_message_complete`
            self._lane_next = (cycle, target)
        else:  # pipelined, started as the answer before it went out: a task, not a
            self._lane_task(cycle, target)  # call chain as deep as the pipeline

    def _lane_task(self, cycle: RequestResponseCycle, target: tuple[str, str | None]) -> None:
        """The lane's request as a task that reads its body (`InferLane.serve`)."""
        self._lane_next = None
        assert self.lane is not None
        self._spawn(self.lane.serve(cycle, *target, self._track))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` as one of the server's tasks (awaited at shutdown)."""
        task = self.loop.create_task(work)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def _track(self, work: asyncio.Future[Any]) -> None:
        """Hold a started request's pending answer: among the server's tasks, so shutdown
        waits for it, and cancelled if the connection is lost."""
        self.tasks.add(work)  # type: ignore[arg-type]  # uvicorn only awaits and cancels
        self._lane_work = work
        work.add_done_callback(self._untrack)
        if self._lost:  # gone while the request was read (`serve`)
            work.cancel()
        self.flow.resume_reading()  # a large body paused reading: a hang-up must be seen

    def _untrack(self, work: asyncio.Future[Any]) -> None:
        self.tasks.discard(work)
        if self._lane_work is work:
            self._lane_work = None

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._start_phase("idle")
        self._head_bytes = 0
        waiting = self._lane_next
        if waiting is not None and waiting[0] is self.cycle and self.lane is not None:
            self._lane_next = None
            cycle, target = waiting
            if self.lane.in_hand(cycle):
                self.lane.start(cycle, *target, self._track)
            else:
                self._lane_task(cycle, target)

    def _start_phase(self, phase: Phase) -> None:
        self._cancel_deadline()
        self._phase, self._phase_start = phase, self.loop.time()

    def _arm_deadline(self) -> None:
        """Arm the phase's deadline if the phase is still open after this read."""
        if self._timer is not None or self._phase == "idle" or self.transport.is_closing():
            return
        timeout = (
            self.limits.header_timeout_s if self._phase == "head" else self.limits.body_timeout_s
        )
        delay = self._phase_start + timeout - self.loop.time()
        self._timer = self.loop.call_later(max(delay, 0.0), self._deadline_passed)

    def _cancel_deadline(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _deadline_passed(self) -> None:
        self._timer = None
        if self._phase == "body":
            timeout = self.limits.body_timeout_s
            self._refuse(408, f"request body not received within {timeout:g} s (body_timeout_s)")
        elif self._head_bytes == 0 and self._requests == 0:
            self.transport.close()  # never said anything: nobody to answer
        else:
            timeout = self.limits.header_timeout_s
            self._refuse(408, f"request head not received within {timeout:g} s (header_timeout_s)")

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` unless another response is on the wire, then close the connection."""
        if self.transport.is_closing():
            return
        log.info("%s: %d %s", _peer(self.client), status, message)
        cycle = self.cycle
        in_flight = cycle is not None and not cycle.response_complete
        if not self.pipeline and not (in_flight and cycle.response_started):
            self.transport.write(error_response(status, message))
        if in_flight:  # the app sees a disconnect and its answer, if any, is dropped
            cycle.disconnected = True
            cycle.message_event.set()
        self._cancel_deadline()
        self.transport.close()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "client"
