"""When a stage batch runs on the event loop rather than a worker thread.

Two thread handoffs cost ~0.2 ms, a third of a small CNN's segment, so the only request
in flight runs inline when its run is expected to be short (the loop reads no socket and
fires no timeout meanwhile). The expectation is the stage's measured cost per row.
"""

from __future__ import annotations

from collections.abc import Iterable

from service.jobs import Job


class InlineRule:
    """Per-stage cost per row (a moving average) and the limit on an inline run."""

    def __init__(self, limit_s: float, stages: int) -> None:
        self.limit_s = limit_s
        self.row_cost = [0.0] * stages  # seconds per row, 0 until measured

    def learn(self, k: int, rows: int, seconds: float) -> None:
        """Stage k ran `rows` rows in `seconds`."""
        if rows:
            cost, old = seconds / rows, self.row_cost[k]
            self.row_cost[k] = cost if not old else 0.8 * old + 0.2 * cost

    def quick(self, k: int, rows: int, jobs: Iterable[Job]) -> bool:
        """Whether `rows` rows at stage k may run inline, `jobs` being those in flight."""
        limit, per_row = self.limit_s, self.row_cost[k]
        if not limit or not per_row or not alone(jobs):
            return False
        return per_row * rows <= limit


def alone(jobs: Iterable[Job]) -> bool:
    """Whether at most one of `jobs` is unanswered. An answered request leaves the
    pipeline's jobs a loop turn later (its future's callback), and its caller may already
    have sent the next one: that must not count as load."""
    undone = 0
    for job in jobs:
        undone += not job.future.done()
        if undone > 1:
            return False
    return True
