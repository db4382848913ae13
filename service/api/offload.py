"""Decoding a request body off the event loop when it is large enough to stall others."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, cast

import anyio
from starlette.datastructures import State

from service.errors import ExitServeError

T = TypeVar("T")
# Above this many bytes, parsing takes long enough (~ms) to stall other requests.
OFFLOAD_BYTES = 256 << 10
# Parsing holds the GIL, so more decodes at once gain no speed, only memory: a 16 MB JSON
# body is ~200 MB while it is Python lists and floats.
DECODE_THREADS = 2


async def decode(state: State, body: bytes, fn: Callable[..., T], *args: object) -> T:
    """`fn(body, *args)`: small bodies inline (a thread hop costs more than parsing them),
    large ones in a worker thread, at most DECODE_THREADS at once per app (`state`).

    An error must not cross the thread hop as a raised exception: anyio's future would hold
    it while its traceback holds the frame awaiting that future, a reference cycle that
    keeps the body and the parsed JSON alive until the (rarely run) cycle collector finds
    it. The worker returns it as a value instead, and it is raised here without a cycle.
    """
    if len(body) <= OFFLOAD_BYTES:
        return fn(body, *args)
    limiter = _limiter(state)
    outcome = await anyio.to_thread.run_sync(_settled, fn, body, *args, limiter=limiter)
    if isinstance(outcome, _Failed):
        try:
            raise outcome.error
        finally:
            del outcome  # else this frame -> outcome -> error -> traceback -> this frame
    return outcome


def _limiter(state: State) -> anyio.CapacityLimiter:
    """One per app, made in its event loop on first use."""
    if getattr(state, "decode_limiter", None) is None:
        state.decode_limiter = anyio.CapacityLimiter(DECODE_THREADS)
    return cast(anyio.CapacityLimiter, state.decode_limiter)


@dataclass(frozen=True)
class _Failed:
    error: Exception


def _settled(fn: Callable[..., T], *args: object) -> T | _Failed:
    """`fn`'s value, or what it raised; a client error keeps no frames (nothing to log)."""
    try:
        return fn(*args)
    except ExitServeError as exc:
        return _Failed(_without_frames(exc))
    except Exception as exc:  # a bug: its traceback goes to the log, then frees the body
        return _Failed(exc)


def _without_frames(exc: ExitServeError) -> ExitServeError:
    """The error alone: no traceback, no chained error whose traceback holds request data."""
    exc.__context__ = exc.__cause__ = None
    return exc.with_traceback(None)
