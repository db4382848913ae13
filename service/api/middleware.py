"""Pure ASGI middleware around every request: request metrics and the last-resort 500.

Pure ASGI (no BaseHTTPMiddleware) so a request pays a few function calls, not a task and a
stream copy. RequestMetrics sits outside CatchAll so that it sees the 500 CatchAll sends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_body
from service.metrics import UNKNOWN, Metrics

log = logging.getLogger(__name__)
UNMATCHED = "unmatched"


async def send_error(send: Send, status: int, message: str) -> None:
    """A complete `{"error": ...}` response, for middleware that answers by itself."""
    body = error_body(message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestMetrics:
    """Counts and times each request by route name and status; never by the raw path."""

    def __init__(self, app: ASGIApp, metrics: Metrics, serves: Callable[[str], bool]) -> None:
        self.app, self.metrics, self.serves = app, metrics, serves

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 0

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            if status:
                self._record(scope, status, time.perf_counter() - start)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        # FastAPI routes set scope["route"]; Starlette's own (openapi, docs) only "endpoint".
        route = scope.get("route") or scope.get("endpoint")
        endpoint = str(getattr(route, "name", None) or getattr(route, "__name__", UNMATCHED))
        name = scope.get("path_params", {}).get("model_name")
        model = name if name is not None and self.serves(name) else UNKNOWN
        self.metrics.record_request(model, endpoint, status, seconds)


class CatchAll:
    """The last resort: log the traceback, answer 500 without details, keep serving."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise  # half a response is out; let the server drop the connection
            await send_error(send, 500, "internal error")
