"""uvicorn's Server with a drain on SIGTERM/SIGINT before it stops listening.

uvicorn on its own closes the listening socket at once. Here the first signal only starts
`Lifecycle.drain()`: readiness turns false, new inference requests get 503 + Retry-After
(load balancers see the probe fail and move traffic away), queued and in-flight requests
are answered; then uvicorn's own shutdown runs. A second signal skips the wait. The
signal is not re-raised afterwards, so a drained server exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType

import uvicorn

from service.lifecycle import Lifecycle

log = logging.getLogger(__name__)


class StartError(Exception):
    """The data plane could not start (e.g. a model failed to load); the message says why."""


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose shutdown begins with the app's drain."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self._drain_requested = False
        self._drain: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Load the models before binding, so a failure is one clear message, not a trace."""
        try:
            await self.lifecycle.start()
        except Exception as exc:
            log.debug("start failed", exc_info=True)
            await self.lifecycle.drain()
            raise StartError(str(exc) or type(exc).__name__) from None
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Signal handler: only set flags; `on_tick` starts the drain on the event loop."""
        if not self._drain_requested:
            self._drain_requested = True
            return
        self.should_exit = True  # a second signal: stop waiting for the drain
        if sig == signal.SIGINT:
            self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._drain_requested and self._drain is None:
            log.info("draining: readiness off, answering queued and in-flight requests")
            self._drain = asyncio.create_task(self.lifecycle.drain())
            self._drain.add_done_callback(self._drained)
        return await super().on_tick(counter)

    def _drained(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("drain failed: %s", task.exception())
        self.should_exit = True
