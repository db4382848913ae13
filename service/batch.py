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


def assemble(runner: SegmentRunner, claims: list[Claim]) -> Batch | None:
    """The claimed rows of live requests as one batch input, or None if none is left."""
    xs: list[Hidden] = []
    pieces: list[Piece] = []
    preds: list[Rows] = []
    streaks: list[npt.NDArray[np.int32]] = []
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
        for job, lo, hi, rows in live:
            start = pieces[-1].hi if pieces else 0
            pieces.append(Piece(job, start, start + hi - lo, rows))
            if job not in seen:  # claims are FIFO: the first packet waited longest
                seen.add(job)
                waits.append(now - packet.queued_at)
    if not pieces:
        return None
    x = runner.concat(xs)
    return Batch(x, pieces, np.concatenate(preds), np.concatenate(streaks), waits)


def run_batch(runner: SegmentRunner, k: int, claims: list[Claim]) -> Outcome:
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
    outcome = Outcome(size=batch.size, seconds=ended - started, waits=batch.waits)
    outcome.input_seconds = started - begun
    spans = _answer(k, batch, out.probs, exits, pred, outcome)
    if spans:
        outcome.forward = _survivors(runner, k, out, exits, pred, streak, spans)
    outcome.output_seconds = time.monotonic() - ended
    return outcome


def _answer(
    k: int,
    batch: Batch,
    probs: npt.NDArray[np.float32],
    exits: npt.NDArray[np.bool_],
    pred: Rows,
    outcome: Outcome,
) -> list[Span]:
    """Write exited rows into their jobs; return the survivors' spans, in batch order."""
    spans: list[Span] = []
    for piece in batch.pieces:
        if piece.job.dead:  # cancelled or timed out while its batch ran
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
    return spans


def _rows(x: Hidden | None, default: int) -> int:
    if x is None:
        return default
    return int(x.shape()[0]) if isinstance(x, ort.OrtValue) else len(x)


def _survivors(
    runner: SegmentRunner,
    k: int,
    out: SegmentOutput,
    exits: npt.NDArray[np.bool_],
    pred: Rows,
    streak: npt.NDArray[np.int32],
    spans: list[Span],
) -> Packet:
    """The rows that did not exit, with their hidden rows, as one packet (one Gather)."""
    if out.hidden is None:
        raise RuntimeError(f"rows survived segment {k}, which has no hidden output")
    keep = np.flatnonzero(~exits).astype(np.int64)
    hidden = out.hidden if len(keep) == len(exits) else runner.take(out.hidden, keep)
    return Packet(hidden, spans, pred[keep], streak[keep], queued_at=time.monotonic())


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
