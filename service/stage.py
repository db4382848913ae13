"""One segment's queue and dynamic batcher: max batch size, max queue delay.

Like Triton's dynamic batcher: once a packet waits, the stage collects more until the
batch is full or the oldest packet has waited `max_delay_s`. A batch may take part of a
packet (the rest stays at the head), so one large request never exceeds the batch size.
Packets whose requests are gone (answered with an error, cancelled, past their deadline)
are dropped here, before they cost a segment run. Shadow packets (fidelity control) wait
in a queue of their own: a batch takes request rows first and fills with shadows only if
there is room; a stage runs shadows alone only when no request row waits, and then only
once they fill a batch or the oldest has waited `shadow_delay_s`: nobody waits for a
shadow, and a batch of one costs nearly what a full one does.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from service.errors import RequestTimeout
from service.jobs import Claim, Packet


class Stage:
    """A bounded-by-admission queue of packets in front of segment `index` (event loop only)."""

    def __init__(
        self,
        index: int,
        max_batch: int,
        max_delay_s: float,
        shadow_delay_s: float = 0.0,
    ) -> None:
        self.index = index
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.shadow_delay_s = max(shadow_delay_s, max_delay_s)
        self.rows = 0  # unclaimed rows queued, dead ones included until dropped (a gauge)
        self.shadow_rows = 0  # unclaimed shadow rows queued
        self._queue: deque[Packet] = deque()
        self._shadows: deque[Packet] = deque()
        self._waiter: asyncio.Future[bool] | None = None  # the stage loop, waiting for a put

    def put(self, packet: Packet) -> None:
        self._queue.append(packet)
        self.rows += packet.left
        self._wake()

    def put_shadow(self, packet: Packet) -> None:
        self._shadows.append(packet)
        self.shadow_rows += packet.left
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(True)

    def shed(self) -> list[Packet]:
        """Drop the queued shadows (load); the caller counts them."""
        packets = list(self._shadows)
        self._shadows.clear()
        self.shadow_rows = 0
        return packets

    def clear(self) -> list[Packet]:
        """Empty the queues (shutdown); the caller answers the packets' requests."""
        packets = list(self._queue)
        self._queue.clear()
        self.shed()
        self.rows = 0
        return packets

    async def collect(self, idle_s: float | None = None) -> list[Claim]:
        """The next batch, or [] when nothing arrived within `idle_s` (None: wait for it;
        the stage loop does, and is cancelled at shutdown, so an idle stage arms no timer)."""
        if not self._queue and not self._shadows and not await self._woken(idle_s):
            return []
        self._drop_dead(time.monotonic())
        if not self._queue and not self._shadows:
            return []
        while not self._due(time.monotonic()):
            await self._woken(self._deadline() - time.monotonic())
        return self._claim()

    def take_due(self) -> list[Claim]:
        """The next batch if it is due now (what `collect` would return at once), else [].

        The stage loop asks this as a batch comes back, to hand the worker its next batch
        before the finished one is answered: the worker does not wait for the event loop.
        """
        now = time.monotonic()
        self._drop_dead(now)
        if not self._queue or not self._due(now):
            return []  # a shadow-only batch goes through `collect`, which may wait for more
        return self._claim()

    def _due(self, now: float) -> bool:
        """Whether the batch must start now: full, or its oldest row has waited its delay.
        Shadows never fill a batch of request rows early."""
        return (self.rows or self.shadow_rows) >= self.max_batch or self._deadline() <= now

    def _deadline(self) -> float:
        """When the batch must start: its oldest request row's wait, else its shadows'."""
        if self._queue:
            return self._queue[0].queued_at + self.max_delay_s
        return self._shadows[0].queued_at + self.shadow_delay_s

    async def _woken(self, timeout: float | None) -> bool:
        """Whether a packet was put within `timeout` seconds (None: until one is).

        A bare future and (only for a bounded wait) a timer: asyncio.wait_for on an Event
        costs a task and extra loop turns, measurable at one sample per request.
        """
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, _resolve, waiter, False)
        try:
            return bool(await waiter)
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None

    def _claim(self) -> list[Claim]:
        claims: list[Claim] = []
        taken = 0
        while self._queue and taken < self.max_batch:
            packet = self._queue[0]
            if not self._keep(packet, time.monotonic()):
                self._pop()
                continue
            m = min(packet.left, self.max_batch - taken)
            claims.append(Claim(packet, packet.start, packet.start + m))
            packet.start += m
            self.rows -= m
            taken += m
            if packet.left == 0:
                self._queue.popleft()
        while self._shadows and taken < self.max_batch:  # after every request row
            packet = self._shadows[0]
            m = min(packet.left, self.max_batch - taken)
            claims.append(Claim(packet, packet.start, packet.start + m))
            packet.start += m
            self.shadow_rows -= m
            taken += m
            if packet.left == 0:
                self._shadows.popleft()
        return claims

    def _drop_dead(self, now: float) -> None:
        while self._queue and not self._keep(self._queue[0], now):
            self._pop()

    def _pop(self) -> None:
        self.rows -= self._queue.popleft().left

    @staticmethod
    def _keep(packet: Packet, now: float) -> bool:
        """Expire requests past their deadline; keep the packet if any request still waits."""
        for span in packet.spans:
            job = span.job
            if not job.dead and now > job.deadline:
                job.fail(RequestTimeout(f"request '{job.id}' timed out in the queue"))
        return packet.alive()


def _resolve(waiter: asyncio.Future[bool], value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)
