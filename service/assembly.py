"""Putting a stage batch together from claimed packet rows (worker thread).

The batch input is the claimed rows of live requests, in claim order; beside it go the
rows' policy state (previous prediction, streak) and, under fidelity control, their
trail. Rows entering at stage 0 have no state yet: their packets carry none, and it is
made here once for the whole batch rather than once per request at admission.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from service.jobs import Claim, Job, Packet, Rows
from service.runtime import Hidden, SegmentOutput
from service.trail import Trail

G = TypeVar("G", bound=np.generic)


class SegmentRunner(Protocol):
    """What a stage needs from a runtime; `ModelRuntime` is one, unit tests use fakes.

    `run` returns arrays of its own for every call: answers are views of its `probs`.
    """

    def run(self, k: int, x: Hidden) -> SegmentOutput: ...

    def take(self, x: Hidden, rows: Rows) -> Hidden: ...

    def select(self, parts: list[tuple[Hidden, Rows | None]]) -> Hidden: ...


@dataclass(frozen=True)
class Piece:
    """Batch rows [lo, hi) belong to `job`'s rows `rows`."""

    job: Job
    lo: int
    hi: int
    rows: Rows


@dataclass
class Batch:
    x: Hidden
    pieces: list[Piece]
    pred: Rows
    streak: npt.NDArray[np.int32]
    waits: list[float]
    real: int  # rows of requests; shadow rows (if any) follow them
    trail: Trail | None = None

    @property
    def size(self) -> int:
        return self.pieces[-1].hi if self.pieces else 0


@dataclass(frozen=True)
class _Part:
    """The rows one claim adds: packet rows `idx` (None: the whole packet), `n` of them."""

    packet: Packet
    idx: Rows | None
    n: int


def assemble(runner: SegmentRunner, claims: list[Claim]) -> Batch | None:
    """The claimed rows of live requests as one batch input, or None if none is left."""
    if len(claims) == 1 and (batch := _whole_packet(claims[0])) is not None:
        return batch
    return _gather(runner, claims)


def _whole_packet(claim: Claim) -> Batch | None:
    """`assemble`'s usual case without its row bookkeeping: one claim of a whole packet
    whose requests all still wait (every batch at one request in flight); else None."""
    packet = claim.packet
    if claim.start or claim.stop != packet.size or packet.sel is not None:
        return None
    if any(s.job.dead for s in packet.spans):
        return None
    pieces, lo, real = [], 0, 0
    waiting: set[Job] = set()  # one wait per request, as `_gather` counts them
    for span in packet.spans:
        hi = lo + len(span.rows)
        pieces.append(Piece(span.job, lo, hi, span.rows))
        if not span.job.shadow:
            real += hi - lo
            waiting.add(span.job)
        lo = hi
    waits = [time.monotonic() - packet.queued_at] * len(waiting)
    if not lo:
        return None
    pred = _NO_PRED.get(lo) if packet.pred is None else packet.pred
    streak = _NO_STREAK.get(lo) if packet.streak is None else packet.streak
    batch = Batch(packet.x, pieces, pred, streak, waits, real)
    batch.trail = packet.trail
    if packet.trail is None and packet.early is not None:  # stage 0, watched
        batch.trail = Trail.fresh(lo, packet.early, True)
    return batch


def _gather(runner: SegmentRunner, claims: list[Claim]) -> Batch | None:
    """`assemble` in general: parts of packets, dead requests' rows left out."""
    xs: list[tuple[Hidden, Rows | None]] = []
    parts: list[_Part] = []
    pieces: list[Piece] = []
    waits: list[float] = []
    seen: set[Job] = set()  # a request's rows may come in several packets: one wait each
    now = time.monotonic()
    for claim in claims:
        packet = claim.packet
        claimed = claim.pieces()
        live = [p for p in claimed if not p[0].dead]
        if not live:
            continue
        idx = None  # the usual case: the whole packet, no row indexing
        if len(live) < len(claimed) or claim.stop - claim.start < packet.size:
            idx = np.concatenate([np.arange(lo, hi, dtype=np.int64) for _, lo, hi, _ in live])
        xs.append((packet.x, _rows_of_x(packet.sel, idx)))
        parts.append(_Part(packet, idx, packet.size if idx is None else len(idx)))
        for job, lo, hi, rows in live:
            start = pieces[-1].hi if pieces else 0
            pieces.append(Piece(job, start, start + hi - lo, rows))
            if job not in seen and not job.shadow:  # claims are FIFO: the first waited longest
                seen.add(job)
                waits.append(now - packet.queued_at)
    if not pieces:
        return None
    x = runner.select(xs)
    real = sum(p.hi - p.lo for p in pieces if not p.job.shadow)  # stages claim shadows last
    pred = _column([(p.packet.pred, p) for p in parts], _NO_PRED)
    streak = _column([(p.packet.streak, p) for p in parts], _NO_STREAK)
    batch = Batch(x, pieces, pred, streak, waits, real)
    batch.trail = _trails(parts)
    return batch


def _rows_of_x(sel: Rows | None, idx: Rows | None) -> Rows | None:
    """Which rows of a packet's `x` a claim takes: its packet rows `idx` (None: all),
    through the rows the packet names in `x` (None: all of `x`)."""
    if sel is None:
        return idx
    if idx is None:
        return sel
    return sel[idx]


def _column(columns: list[tuple[npt.NDArray[G] | None, _Part]], fresh: _Fresh[G]) -> npt.NDArray[G]:
    """One state column for the batch; `fresh` for rows that have none yet (stage 0)."""
    if all(c is None for c, _ in columns):
        return fresh.get(sum(p.n for _, p in columns))
    return np.concatenate(
        [fresh.get(p.n) if c is None else c if p.idx is None else c[p.idx] for c, p in columns]
    )


class _Fresh(Generic[G]):
    """A state column's value before any exit, as read-only views of one array grown as
    batches grow: a stage-0 batch takes a slice instead of filling a new array."""

    def __init__(self, value: int, dtype: type[G]) -> None:
        self.value, self.dtype = value, dtype
        self.column = self._make(256)

    def _make(self, n: int) -> npt.NDArray[G]:
        column = np.full(n, self.value, dtype=self.dtype)
        column.flags.writeable = False
        return column

    def get(self, n: int) -> npt.NDArray[G]:
        column = self.column
        if n > len(column):  # two worker threads may both grow it: either array will do
            column = self.column = self._make(max(n, 2 * len(column)))
        return column[:n]


_NO_PRED = _Fresh(-1, np.int64)  # no exit yet: no prediction
_NO_STREAK = _Fresh(0, np.int32)


def _trails(parts: list[_Part]) -> Trail | None:
    """One trail for the batch, or None when no row has one.

    Rows entering at stage 0 under fidelity control get a fresh trail, made here for the
    whole batch; rows that came without one (a request with overrides, or fidelity
    switched on while they were queued) are not evidence.
    """
    early = next((_early(p.packet) for p in parts if _early(p.packet) is not None), None)
    if early is None:
        return None
    if all(p.packet.trail is None for p in parts):  # stage 0
        trail = Trail.fresh(sum(p.n for p in parts), early, False)
        lo = 0
        for p in parts:
            if p.packet.early is not None:
                trail.inclusion[lo : lo + p.n] = 1.0  # a watched request's rows are evidence
            lo += p.n
        return trail
    return Trail.concat([_trail(p, early) for p in parts])


def _early(packet: Packet) -> int | None:
    """How many early exits the packet's trail covers, if it has or is to get one."""
    return packet.early if packet.trail is None else packet.trail.surety.shape[1]


def _trail(part: _Part, early: int) -> Trail:
    trail = part.packet.trail
    if trail is None:
        return Trail.fresh(part.n, early, part.packet.early is not None)
    return trail if part.idx is None else trail.take(part.idx)
