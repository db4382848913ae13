"""How one stage's batches are started and settled: a loop per stage (service/scheduler.py).

Serial (the default): one batch of the stage at a time; as it comes back, the next due
batch is handed to the worker before the finished one is answered, so the worker does not
wait for the event loop. Overlapped (`batches_in_flight` > 1, for GPUs): up to that many
batches at once, so the device runs one while the host assembles or answers another; each
is settled as it comes back, in whatever order.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Protocol

from service.batch import Outcome
from service.jobs import Claim
from service.stage import Stage


class Batches(Protocol):
    """What the loops need from the pipeline they belong to."""

    closed: bool

    def start_batch(self, k: int, claims: list[Claim]) -> asyncio.Future[Outcome]: ...

    async def outcome(
        self, k: int, claims: list[Claim], running: asyncio.Future[Outcome]
    ) -> Outcome | None: ...

    def finish(self, k: int, claims: list[Claim], outcome: Outcome | None) -> None: ...

    def fail(self, k: int, claims: list[Claim], exc: Exception) -> None: ...

    def queued(self) -> bool: ...


async def serial(batches: Batches, stage: Stage) -> None:
    """Collect a batch and run it; as a batch comes back, start the next due one before
    answering it, so the worker does not sit idle while the event loop catches up."""
    k = stage.index
    while True:
        claims = await stage.collect()
        running = batches.start_batch(k, claims) if claims else None
        while running is not None:
            inline = running.done()  # run on the loop: let it read sockets after
            outcome = await batches.outcome(k, claims, running)
            following = stage.take_due()
            running = batches.start_batch(k, following) if following else None
            batches.finish(k, claims, outcome)
            claims = following
            if inline and batches.queued():
                await asyncio.sleep(0)


async def overlapped(batches: Batches, stage: Stage, limit: int) -> None:
    """Up to `limit` batches of the stage running at once, each settled as it lands."""
    slots = asyncio.Semaphore(limit)
    while True:
        await slots.acquire()
        claims = await stage.collect()
        if not claims:
            slots.release()
            continue
        running = batches.start_batch(stage.index, claims)
        landed = functools.partial(_landed, batches, stage.index, claims, slots)
        running.add_done_callback(landed)


def _landed(
    batches: Batches,
    k: int,
    claims: list[Claim],
    slots: asyncio.Semaphore,
    running: asyncio.Future[Outcome],
) -> None:
    """An overlapped batch is back: free its slot, then settle it (or fail its requests);
    nothing to do once the pipeline is closed, which has answered them all."""
    slots.release()
    if batches.closed or running.cancelled():
        return
    exc = running.exception()
    if exc is not None:
        batches.fail(k, claims, exc if isinstance(exc, Exception) else RuntimeError(exc))
        return
    batches.finish(k, claims, running.result())
