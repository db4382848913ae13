"""One stage batch, run on a worker thread: assemble rows (service/assembly.py), run the
segment, decide exits, answer the rows that exit and gather the survivors.

Everything here is the blocking part of a stage (numpy and onnxruntime, which releases
the GIL); it touches no futures. Its `Outcome` tells the event loop which requests got
rows answered and which rows go on, as one packet, to the next stage.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.assembly import Batch, Piece, SegmentRunner, assemble
from service.jobs import Claim, Job, Packet, Rows, Span
from service.policies import Decision, ExitPolicy, decide, max_prob
from service.runtime import Hidden, SegmentOutput
from service.shadows import Evidence, Watch
from service.trail import Trail
from service.types import InferenceResult

__all__ = ["Outcome", "SegmentRunner", "run_batch"]
Probs = npt.NDArray[np.float32]
_NO_ROWS: Rows = np.empty(0, dtype=np.int64)  # no survivors (read-only: shared)
_NO_ROWS.flags.writeable = False


@dataclass
class Outcome:
    """What a batch did: answered rows per job, survivors, and timings for the metrics."""

    jobs: list[Job] = field(default_factory=list)
    # per job: rows answered, and its whole answer when this batch answered every row
    answered: list[tuple[Job, int, InferenceResult | None]] = field(default_factory=list)
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
    d = _decide(k, out.probs, batch)
    watched = watch if batch.trail is not None else None
    if watched is not None and batch.trail is not None:
        watched.note(k, out.probs, d.pred, batch.trail, d.top)
    outcome = Outcome(size=batch.size, seconds=ended - started, waits=batch.waits)
    outcome.input_seconds = started - begun
    spans, keep = _answer(k, batch, out.probs, d, outcome)
    if spans:
        outcome.forward = _packet(runner, k, out, keep, d, spans, batch.trail)
    if watched is not None:
        _shadow(runner, k, out, batch, d, watched, outcome)
    outcome.output_seconds = time.monotonic() - ended
    return outcome


def _shadow(
    runner: SegmentRunner,
    k: int,
    out: SegmentOutput,
    batch: Batch,
    d: Decision,
    watch: Watch,
    outcome: Outcome,
) -> None:
    """Fidelity control's part of a batch: at an early exit, pick the early answers to
    shadow and send them on with the shadows already here; at the last, the evidence."""
    trail = batch.trail
    if trail is None or watch.job is None:
        return
    if k >= watch.early:
        outcome.evidence = watch.observed(trail, d.pred)
        return
    picked, outcome.shed = watch.pick(k, d.exits, batch.real, trail)
    outcome.shadowed = len(picked)
    if not len(picked) and batch.real == batch.size:  # the usual batch: no shadow rows
        return
    rows = np.concatenate([picked, np.arange(batch.real, batch.size, dtype=np.int64)])
    spans = [Span(watch.job, np.arange(len(rows), dtype=np.int64))]
    outcome.shadows = _packet(runner, k, out, rows, d, spans, trail)


def _answer(
    k: int,
    batch: Batch,
    probs: npt.NDArray[np.float32],
    d: Decision,
    outcome: Outcome,
) -> tuple[list[Span], Rows]:
    """Answer exited rows; return the survivors' spans, in batch order, and their batch rows.

    A request whose rows are all in one piece and all exit (every one-sample request) is
    answered with views of the batch's arrays, made here; one answered in parts has its
    rows written into its own arrays. Shadow rows (the batch's tail) are not answered here
    and go on separately; a request gone while its batch ran leaves its rows behind. When
    every row exits (the usual batch), no per-row counts are made.
    """
    spans: list[Span] = []
    exits, pred, real = d.exits, d.pred, batch.real
    every = bool(np.logical_and.reduce(exits[:real])) if real else True
    going = None if every else ~exits[:real]
    done_before = None if every else [0, *np.cumsum(exits[:real]).tolist()]
    whole = _Whole(k, probs, pred, d.top)
    for piece in batch.pieces:
        job, lo, hi = piece.job, piece.lo, piece.hi
        if job.dead:
            if going is not None:
                going[lo:hi] = False
            continue
        if job.shadow:
            continue
        done = hi - lo if done_before is None else done_before[hi] - done_before[lo]
        if done == hi - lo == job.size:
            outcome.answered.append((job, done, whole.result(job, lo, hi)))
        elif done == hi - lo:
            job.write(piece.rows, probs[lo:hi], pred[lo:hi], k)
            outcome.answered.append((job, done, None))
        elif done:
            ex = exits[lo:hi]
            job.write(piece.rows[ex], probs[lo:hi][ex], pred[lo:hi][ex], k)
            outcome.answered.append((job, done, None))
            spans.append(Span(job, piece.rows[~ex]))
        else:
            spans.append(Span(job, piece.rows))
        if not outcome.jobs or outcome.jobs[-1] is not job:
            outcome.jobs.append(job)
    return spans, (_NO_ROWS if going is None else going.nonzero()[0])


class _Whole:
    """Whole answers from one batch: views of its rows, with the columns every answer
    shares (confidence, exit) made once for the batch, when the first one needs them."""

    def __init__(
        self, k: int, probs: npt.NDArray[np.float32], pred: Rows, top: Probs | None
    ) -> None:
        self.k, self.probs, self.pred = k, probs, pred
        self.confidence = top  # the decision's own, when it computed them
        self.exit: npt.NDArray[np.int32] | None = None

    def result(self, job: Job, lo: int, hi: int) -> InferenceResult:
        if self.confidence is None:
            self.confidence = max_prob(self.probs)
        if self.exit is None:
            self.exit = np.empty(len(self.probs), dtype=np.int32)
            self.exit.fill(self.k)
        return InferenceResult(
            job.model,
            job.version,
            self.pred[lo:hi],
            self.probs[lo:hi],
            self.confidence[lo:hi],
            self.exit[lo:hi],
        )


def _rows(x: Hidden | None, default: int) -> int:
    if x is None:
        return default
    return int(x.shape()[0]) if isinstance(x, ort.OrtValue) else len(x)


def _packet(
    runner: SegmentRunner,
    k: int,
    out: SegmentOutput,
    keep: Rows,
    d: Decision,
    spans: list[Span],
    trail: Trail | None,
) -> Packet:
    """Batch rows `keep` with their hidden rows as one packet for stage k+1. On the host
    the rows are copied out (one Gather); on a device the packet names them in the whole
    hidden state, and the next batch gathers them as it merges its parts (no run here)."""
    if out.hidden is None:
        raise RuntimeError(f"rows survived segment {k}, which has no hidden output")
    keep = keep.astype(np.int64, copy=False)
    every, named = len(keep) == len(d.pred), isinstance(out.hidden, ort.OrtValue)
    hidden = out.hidden if every or named else runner.take(out.hidden, keep)
    sel = keep if named and not every else None
    packet = Packet(hidden, spans, d.pred[keep], d.streak[keep], time.monotonic(), sel=sel)
    packet.trail = None if trail is None else trail.take(keep)
    return packet


def _decide(k: int, probs: npt.NDArray[np.float32], batch: Batch) -> Decision:
    """Exit decisions for the whole batch, one vectorised call per distinct policy."""
    policy = batch.pieces[0].job.policy
    for piece in batch.pieces:  # the usual case: every request has the version's default
        if piece.job.policy is not policy:
            break
    else:
        return decide(policy, k, probs, batch.pred, batch.streak)
    groups: dict[ExitPolicy, list[Piece]] = defaultdict(list)
    for piece in batch.pieces:
        groups[piece.job.policy].append(piece)
    if len(groups) == 1:  # equal policies, not the same object: no row indexing needed
        return decide(next(iter(groups)), k, probs, batch.pred, batch.streak)
    n = batch.size
    exits = np.zeros(n, dtype=np.bool_)
    pred = np.zeros(n, dtype=np.int64)
    streak = np.zeros(n, dtype=np.int32)
    for policy, pieces in groups.items():
        idx = np.concatenate([np.arange(p.lo, p.hi, dtype=np.int64) for p in pieces])
        d = decide(policy, k, probs[idx], batch.pred[idx], batch.streak[idx])
        exits[idx], pred[idx], streak[idx] = d.exits, d.pred, d.streak
    return Decision(exits, pred, streak)
