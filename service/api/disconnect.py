"""Stop working for a client that is gone: its rows must not run in later stages."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from fastapi import Request

from service.errors import ClientGone

T = TypeVar("T")
# Most answers come sooner; a watcher per request would cost more than a fast request's
# whole scheduling, and a client gone within this long wastes at most this much work.
WATCH_AFTER_S = 0.02


async def _disconnected(request: Request) -> None:
    """Return once the server sees the connection close (the body is already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: asyncio.Future[T]) -> T:
    """Await `work`; if the client hangs up first, cancel it and raise ClientGone.

    Cancelling the data plane's future marks the request dead, so the scheduler skips its
    queued rows instead of computing answers nobody will read. The connection is watched
    only once the work has taken WATCH_AFTER_S.
    """
    loop = asyncio.get_running_loop()
    watch: list[asyncio.Task[None]] = []

    def start_watch() -> None:
        if not work.done():
            task = loop.create_task(_disconnected(request))
            task.add_done_callback(lambda t: t.cancelled() or work.cancel())
            watch.append(task)

    timer = loop.call_later(WATCH_AFTER_S, start_watch)
    try:
        return await work
    except asyncio.CancelledError:
        if watch and watch[0].done() and not watch[0].cancelled():
            raise ClientGone(
                "the client closed the connection before the answer was ready"
            ) from None
        raise
    finally:
        timer.cancel()
        for task in watch:
            task.cancel()
