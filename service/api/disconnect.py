"""Stop working for a client that is gone: its rows must not run in later stages."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from starlette.types import Receive

from service.errors import ClientGone

T = TypeVar("T")
# Most answers come sooner; a watcher per request would cost more than a fast request's
# whole scheduling, and a client gone within this long wastes at most this much work.
WATCH_AFTER_S = 0.02


async def _disconnected(receive: Receive) -> None:
    """Return once the server sees the connection close (the body is already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class _Watch:
    """Watches the connection from WATCH_AFTER_S on; a hang-up cancels the work."""

    def __init__(self, receive: Receive, work: asyncio.Future[Any]) -> None:
        self.receive = receive
        self.work: asyncio.Future[Any] | None = work
        self.task: asyncio.Task[None] | None = None
        self.timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start)

    def _start(self) -> None:
        if self.work is not None and not self.work.done():
            self.task = asyncio.get_running_loop().create_task(_disconnected(self.receive))
            self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and self.work is not None:
            self.work.cancel()

    @property
    def hung_up(self) -> bool:
        return self.task is not None and self.task.done() and not self.task.cancelled()

    def close(self) -> None:
        """Stop watching and let go of the work: its error's traceback holds our frames."""
        self.timer.cancel()
        if self.task is not None:
            self.task.cancel()
        self.work = None


async def unless_disconnected(receive: Receive, work: asyncio.Future[T]) -> T:
    """Await `work`; if the client hangs up first, cancel it and raise ClientGone.

    Cancelling the data plane's future marks the request dead, so the scheduler skips its
    queued rows instead of computing answers nobody will read. The connection is watched
    only once the work has taken WATCH_AFTER_S. No frame here keeps `work` once it is done:
    a future holding an error (a timeout) whose traceback holds the frame holding the
    future is a reference cycle, and it would keep the request's body alive.
    """
    if work.done():  # answered already (Pipeline._solo): nothing to watch
        try:
            return work.result()
        finally:
            del work
    watch = _Watch(receive, work)
    try:
        return await work
    except asyncio.CancelledError:
        if watch.hung_up:
            raise ClientGone(
                "the client closed the connection before the answer was ready"
            ) from None
        raise
    finally:
        watch.close()
        del work
