"""One stage batch, run on a worker thread: assemble rows, run the segment, decide exits.

Everything here is the blocking part of a stage (numpy and onnxruntime, which releases
the GIL); it touches no futures. Its `Outcome` tells the event loop which requests got
rows answered and which rows go on, as one packet, to the next stage.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.jobs import Claim, Job, Packet, Rows, Span
from service.policies import ExitPolicy, decide
from service.runtime import Hidden, SegmentOutput
from service.shadows import Evidence, Watch
from service.trail import Trail


class SegmentRunner(Protocol):
    """What a stage needs from a runtime; `ModelRuntime` is one, unit tests use fakes."""

    def run(self, k: int, x: Hidden) -> SegmentOutput: ...

    def take(self, x: Hidden, rows: Rows) -> Hidden: ...

    def concat(self, xs: list[Hidden]) -> Hidden: ...


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


@dataclass
class Outcome:
    """What a batch did: answered rows per job, survivors, and timings for the metrics."""

    jobs: list[Job] = field(default_factory=list)
    answered: list[tuple[Job, int]] = field(default_factory=list)
    forward: Packet | None = None
    size: int = 0
    seconds: float = 0.0  # the segment run
    waits: list[float] = field(default_factory=list)  # one per request in the batch
    input_seconds: float = 0.0  # assembling the batch before the run
    output_seconds: float = 0.0  # exit decisions, answers and survivors after it
    shadows: Packet | None = None  # rows going on only to be compared (lowest priority)
    shadowed: int = 0  # early answers of this batch sent on as shadows
    shed: int = 0  # early answers picked as shadows but dropped: the version is busy
    evidence: Evidence | None = None  # at the last exit: observed rows, for the controller


def assemble(runner: SegmentRunner, claims: list[Claim]) -> Batch | None:
    """The claimed rows of live requests as one batch input, or None if none is left."""
    xs: list[Hidden] = []
    pieces: list[Piece] = []
    preds: list[Rows] = []
    streaks: list[npt.NDArray[np.int32]] = []
    trails: list[tuple[Trail | None, int]] = []
    waits: list[float] = []
    seen: set[Job] = set()  # a request's rows may come in several packets: one wait each
    now = time.monotonic()
    for claim in claims:
        packet = claim.packet
        live = [p for p in claim.pieces() if not p[0].dead]
        if not live:
            continue
        idx = np.concatenate([np.arange(lo, hi, dtype=np.int64) for _, lo, hi, _ in live])
        xs.append(packet.x if len(idx) == packet.size else runner.take(packet.x, idx))
        preds.append(packet.pred[idx])
        streaks.append(packet.streak[idx])
        trail = packet.trail
        if trail is not None and len(idx) != len(trail):
            trail = trail.take(idx)
        trails.append((trail, len(idx)))
        for job, lo, hi, rows in live:
            start = pieces[-1].hi if pieces else 0
            pieces.append(Piece(job, start, start + hi - lo, rows))
            if job not in seen and not job.shadow:  # claims are FIFO: the first waited longest
                seen.add(job)
                waits.append(now - packet.queued_at)
    if not pieces:
        return None
    x = runner.concat(xs)
    real = sum(p.hi - p.lo for p in pieces if not p.job.shadow)  # stages claim shadows last
    batch = Batch(x, pieces, np.concatenate(preds), np.concatenate(streaks), waits, real)
    batch.trail = _trails(trails)
    return batch


def _trails(trails: list[tuple[Trail | None, int]]) -> Trail | None:
    """One trail for the batch; rows that came without one (fidelity switched on while they
    were queued) are not evidence."""
    some = next((t for t, _ in trails if t is not None), None)
    if some is None:
        return None
    early = some.surety.shape[1]
    return Trail.concat([t if t is not None else Trail.fresh(n, early, False) for t, n in trails])


def run_batch(
    runner: SegmentRunner, k: int, claims: list[Claim], watch: Watch | None = None
) -> Outcome:
    """Run segment k on the claims' live rows; answer those that exit, forward the rest.

    Times its three phases for Triton's statistics (compute_input, _infer, _output).
    """
    begun = time.monotonic()
    batch = assemble(runner, claims)
    if batch is None:
        return Outcome()
    started = time.monotonic()
    out = runner.run(k, batch.x)
    ended = time.monotonic()
    for name, got in (("probs", len(out.probs)), ("hidden", _rows(out.hidden, batch.size))):
        if got != batch.size:  # a wrong-sized answer would shift rows between requests
            raise RuntimeError(f"segment {k} returned {got} {name} rows for {batch.size}")
    exits, pred, streak = _decide(k, out.probs, batch)
    watched = watch if batch.trail is not None else None
    if watched is not None and batch.trail is not None:
        watched.note(k, out.probs, pred, batch.trail)
    outcome = Outcome(size=batch.size, seconds=ended - started, waits=batch.waits)
    outcome.input_seconds = started - begun
    spans, keep = _answer(k, batch, out.probs, exits, pred, outcome)
    if spans:
        outcome.forward = _packet(runner, k, out, keep, pred, streak, spans, batch.trail)
    if watched is not None:
        _shadow(runner, k, out, batch, (exits, pred, streak), watched, outcome)
    outcome.output_seconds = time.monotonic() - ended
    return outcome


def _shadow(
    runner: SegmentRunner,
    k: int,
    out: SegmentOutput,
    batch: Batch,
    decided: tuple[npt.NDArray[np.bool_], Rows, npt.NDArray[np.int32]],
    watch: Watch,
    outcome: Outcome,
) -> None:
    """Fidelity control's part of a batch: at an early exit, pick the early answers to
    shadow and send them on with the shadows already here; at the last, the evidence."""
    exits, pred, streak = decided
    trail = batch.trail
    if trail is None or watch.job is None:
        return
    if k >= watch.early:
        outcome.evidence = watch.observed(trail, pred)
        return
    picked, outcome.shed = watch.pick(k, exits, batch.real, trail)
    outcome.shadowed = len(picked)
    rows = np.concatenate([picked, np.arange(batch.real, batch.size, dtype=np.int64)])
    if len(rows):
        spans = [Span(watch.job, np.arange(len(rows), dtype=np.int64))]
        outcome.shadows = _packet(runner, k, out, rows, pred, streak, spans, trail)


def _answer(
    k: int,
    batch: Batch,
    probs: npt.NDArray[np.float32],
    exits: npt.NDArray[np.bool_],
    pred: Rows,
    outcome: Outcome,
) -> tuple[list[Span], Rows]:
    """Write exited rows into their jobs; return the survivors' spans, in batch order, and
    their batch rows. Shadow rows (the batch's tail) are not answered here and go on
    separately; a request gone while its batch ran leaves its rows behind."""
    spans: list[Span] = []
    going = ~exits[: batch.real]
    for piece in batch.pieces:
        if piece.job.dead:
            going[piece.lo : piece.hi] = False
            continue
        if piece.job.shadow:
            continue
        ex = exits[piece.lo : piece.hi]
        done = piece.rows[ex]
        if done.size:
            answered = probs[piece.lo : piece.hi][ex]
            piece.job.write(done, answered, pred[piece.lo : piece.hi][ex], k)
            outcome.answered.append((piece.job, int(done.size)))
        if done.size < len(piece.rows):
            spans.append(Span(piece.job, piece.rows[~ex]))
        if not outcome.jobs or outcome.jobs[-1] is not piece.job:
            outcome.jobs.append(piece.job)
    return spans, np.flatnonzero(going)


def _rows(x: Hidden | None, default: int) -> int:
    if x is None:
        return default
    return int(x.shape()[0]) if isinstance(x, ort.OrtValue) else len(x)


def _packet(
    runner: SegmentRunner,
    k: int,
    out: SegmentOutput,
    keep: Rows,
    pred: Rows,
    streak: npt.NDArray[np.int32],
    spans: list[Span],
    trail: Trail | None,
) -> Packet:
    """Batch rows `keep` with their hidden rows as one packet for stage k+1 (one Gather)."""
    if out.hidden is None:
        raise RuntimeError(f"rows survived segment {k}, which has no hidden output")
    keep = keep.astype(np.int64, copy=False)
    hidden = out.hidden if len(keep) == len(pred) else runner.take(out.hidden, keep)
    packet = Packet(hidden, spans, pred[keep], streak[keep], queued_at=time.monotonic())
    packet.trail = None if trail is None else trail.take(keep)
    return packet


def _decide(
    k: int, probs: npt.NDArray[np.float32], batch: Batch
) -> tuple[npt.NDArray[np.bool_], Rows, npt.NDArray[np.int32]]:
    """Exit decisions for the whole batch, one vectorised call per distinct policy."""
    groups: dict[ExitPolicy, list[Piece]] = defaultdict(list)
    for piece in batch.pieces:
        groups[piece.job.policy].append(piece)
    if len(groups) == 1:  # the usual case: no row indexing needed
        d = decide(next(iter(groups)), k, probs, batch.pred, batch.streak)
        return d.exits, d.pred, d.streak
    n = batch.size
    exits = np.zeros(n, dtype=np.bool_)
    pred = np.zeros(n, dtype=np.int64)
    streak = np.zeros(n, dtype=np.int32)
    for policy, pieces in groups.items():
        idx = np.concatenate([np.arange(p.lo, p.hi, dtype=np.int64) for p in pieces])
        d = decide(policy, k, probs[idx], batch.pred[idx], batch.streak[idx])
        exits[idx], pred[idx], streak[idx] = d.exits, d.pred, d.streak
    return exits, pred, streak
