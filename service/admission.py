"""Whether a request's rows may enter a pipeline: queue limits and the bytes budget.

Pure checks on the pipeline's state, raising the error the client gets: 429 while a
stage queue or the bytes in flight are full (retrying later helps), 413 for a request
that could never fit the budget (retrying does not).
"""

from __future__ import annotations

from collections.abc import Sequence

from service.errors import Overloaded, PayloadTooLarge
from service.jobs import ByteBudget
from service.stage import Stage


def admit(
    stages: Sequence[Stage], budget: ByteBudget, limit: int, model: str, rows: int, cost: int
) -> None:
    """Refuse new rows while stage 0 or any later stage holds more than `limit`, or while
    the requests in flight hold too many bytes; a request that could never fit is a 413."""
    first, later = stages[0], stages[1:]
    if first.rows + rows > limit or any(s.rows > limit for s in later):
        queued = sum(s.rows for s in stages)
        raise Overloaded(f"model '{model}' is overloaded ({queued} samples queued); retry later")
    if cost > budget.limit:
        raise PayloadTooLarge(
            f"inputs[0]: {rows} samples of model '{model}' need {cost} bytes in flight, "
            f"more than max_inflight_bytes ({budget.limit}); send fewer per request"
        )
    if not budget.fits(cost):
        raise Overloaded(
            f"the server is overloaded ({budget.used} of {budget.limit} bytes in "
            f"flight, max_inflight_bytes); retry later"
        )
