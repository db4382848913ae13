"""Stop working for a client that is gone: its rows must not run in later stages."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import Request

from service.errors import ClientGone

T = TypeVar("T")


async def _disconnected(request: Request) -> None:
    """Return once the server sees the connection close (the body is already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Await `work`; if the client hangs up first, cancel it and raise ClientGone.

    Cancelling the data plane's wait marks the request dead, so the scheduler skips its
    queued rows instead of computing answers nobody will read.
    """
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not task.done():
        task.cancel()
        raise ClientGone("the client closed the connection before the answer was ready")
    return task.result()
