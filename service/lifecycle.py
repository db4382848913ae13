"""Starting and stopping what the app runs besides routes: the data plane and the metrics
port. Both directions are idempotent, so the lifespan, the SIGTERM drain and a failed start
can each call them without caring who was first.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from service.metrics_port import MetricsPort
from service.settings import Settings

GC_GEN0_THRESHOLD = 20_000

if TYPE_CHECKING:
    from service.dataplane import DataPlane

log = logging.getLogger(__name__)
# dataplane.stop() bounds itself by drain_timeout_s; this margin only guards against a hang.
_STOP_MARGIN_S = 5.0


class Lifecycle:
    """Start once, stop once: data plane first up and last down, metrics port around it."""

    def __init__(self, dataplane: DataPlane, settings: Settings, registry: CollectorRegistry):
        self.dataplane, self.settings, self.registry = dataplane, settings, registry
        self._started = False
        self._stopping: asyncio.Future[None] | None = None
        self._metrics = MetricsPort(settings, registry) if settings.metrics_port else None

    async def start(self) -> None:
        """Load and warm the models, then open the metrics port (scrapes only once serving)."""
        if self._started:
            return
        self._started = True
        await self.dataplane.start()
        settle_heap()
        if self._metrics is not None:
            await self._metrics.start()

    async def drain(self) -> None:
        """Readiness off, answer what is queued and in flight, then close the metrics port."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        timeout = self.settings.drain_timeout_s + _STOP_MARGIN_S
        try:
            await asyncio.wait_for(self.dataplane.stop(), timeout)
        except TimeoutError:
            log.error("data plane did not stop within %.0f s", timeout)
        finally:
            if self._metrics is not None:
                await self._metrics.stop()

    @asynccontextmanager
    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.drain()


def settle_heap() -> None:
    """Keep the garbage collector off the hot path once the models are loaded.

    Everything allocated so far (modules, sessions' metadata) lives as long as the process:
    frozen, full collections stop scanning it. A request allocates a few hundred
    short-lived containers, so the default gen-0 threshold (700) ran a collection every
    request or two; most of those objects die by reference counting long before 20 000.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
