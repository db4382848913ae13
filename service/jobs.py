"""What moves through the stages: requests in flight (jobs) and blocks of their rows.

A `Packet` is the unit a stage queue holds: one hidden-state tensor and the `Span`s that
say which request each of its rows belongs to. A request enters stage 0 as one packet;
the survivors of one stage batch leave as one packet, so queue work is per packet and
per request, never per sample, and on a GPU survivors cost one Gather, not one per request.

Threading: futures, `remaining` and `dead` are written on the event loop only; the worker
threads write a job's result rows (disjoint per stage, each row exactly once), or make its
whole answer from their batch, and read `dead` to skip rows whose client is gone.
"""

from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from models.manifest import Manifest, TensorSpec
from service.policies import ExitPolicy
from service.runtime import Hidden
from service.trail import Trail
from service.types import InferenceResult

Rows = npt.NDArray[np.int64]
ITEM_BYTES = {"FP32": 4, "FP16": 2, "INT64": 8, "INT32": 4}
ANSWER_BYTES = 8 + 4 + 4  # a row's label (int64), confidence (fp32) and exit (int32)


def row_state_bytes(manifest: Manifest) -> int:
    """The most a row in flight holds besides its input: its largest hidden state and its
    answer. Rows are admitted at stage 0 but grow at later stages (a conv net's hidden state
    is many times its input), so admission charges this bound up front."""
    seq = 1 if manifest.text is None else manifest.text.max_length  # text: the longest
    outputs = [s.hidden_output for s in manifest.segments if s.hidden_output]
    hidden = max((_bytes(spec, seq) for spec in outputs), default=0)
    mask = 0 if manifest.text is None else ITEM_BYTES["INT64"] * seq
    return hidden + mask + 4 * len(manifest.labels) + ANSWER_BYTES


def _bytes(spec: TensorSpec, seq: int) -> int:
    """A tensor's bytes per row, a dynamic (sequence) axis counted at `seq`."""
    return ITEM_BYTES[spec.datatype] * int(np.prod([seq if d == -1 else d for d in spec.shape]))


class ByteBudget:
    """Bytes that admitted requests may hold, shared by every pipeline (event loop only)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def fits(self, cost: int) -> bool:
        return self.used + cost <= self.limit

    def take(self, cost: int) -> None:
        self.used += cost

    def give_back(self, cost: int) -> None:
        self.used -= cost


@dataclass(eq=False)
class Job:
    """One request: its policy, deadline, future, and where its answer is put together.

    A request whose rows all exit in one batch piece (every one-sample request) is
    answered with views of that batch's arrays (`batch._answer`); only a request whose rows
    exit at different stages or batches gets result arrays, on its first partial answer.
    """

    id: str
    model: str
    version: str
    policy: ExitPolicy
    deadline: float
    future: asyncio.Future[InferenceResult]
    size: int  # rows
    classes: int
    remaining: int
    dead: bool = False
    watched: bool = False  # under the default policy: its rows are fidelity evidence
    parts: _Parts | None = None  # result rows written so far, when answered in parts
    shadow: ClassVar[bool] = False

    @classmethod
    def create(
        cls,
        job_id: str,
        model: str,
        version: str,
        rows: int,
        classes: int,
        policy: ExitPolicy,
        deadline: float,
        watched: bool = False,
    ) -> Job:
        future: asyncio.Future[InferenceResult] = asyncio.get_running_loop().create_future()
        return cls(
            id=job_id,
            model=model,
            version=version,
            policy=policy,
            deadline=deadline,
            future=future,
            size=rows,
            classes=classes,
            remaining=rows,
            watched=watched,
        )

    def rows_done(self, count: int, result: InferenceResult | None = None) -> None:
        """Count answered rows; the last one resolves the future (event loop only), with
        `result` when the batch answered every row at once, else with the parts written."""
        self.remaining -= count
        if self.remaining > 0 or self.future.done():
            return
        if result is None:
            parts = self._parts()
            result = InferenceResult(
                self.model, self.version, parts.label, parts.probs, parts.confidence, parts.exit
            )
        self.future.set_result(result)

    def fail(self, exc: BaseException) -> None:
        """Answer the request with an error, once; its queued rows are then skipped."""
        self.dead = True
        if not self.future.done():
            self.future.set_exception(exc)

    def write(self, rows: Rows, probs: npt.NDArray[np.float32], label: Rows, exit_: int) -> None:
        """Store some of its rows' answers (worker thread; rows are disjoint between stages)."""
        parts = self._parts()
        parts.probs[rows] = probs
        parts.label[rows] = label
        parts.confidence[rows] = probs.max(axis=1) if len(probs) else 0.0
        parts.exit[rows] = exit_

    def _parts(self) -> _Parts:
        """The result arrays, made once: two stages' worker threads may write at once."""
        if self.parts is None:
            with _PARTS_LOCK:
                if self.parts is None:
                    self.parts = _Parts.empty(self.size, self.classes)
        return self.parts


_PARTS_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Parts:
    """A request's result rows, filled in as its rows exit."""

    label: npt.NDArray[np.int64]
    probs: npt.NDArray[np.float32]
    confidence: npt.NDArray[np.float32]
    exit: npt.NDArray[np.int32]

    @classmethod
    def empty(cls, rows: int, classes: int) -> _Parts:
        return cls(
            np.full(rows, -1, dtype=np.int64),
            np.zeros((rows, classes), dtype=np.float32),
            np.zeros(rows, dtype=np.float32),
            np.full(rows, -1, dtype=np.int32),
        )


@dataclass(eq=False)
class ShadowJob(Job):
    """The owner of a version's shadow rows: early answers sent on to the last exit only
    to be compared. Nobody waits on it: it answers nothing, never fails, never expires."""

    shadow: ClassVar[bool] = True

    @classmethod
    def of(cls, model: str, version: str, policy: ExitPolicy) -> ShadowJob:
        """One per pipeline, with the full-depth policy (event loop: it holds a future)."""
        job = cls.create("shadow", model, version, 0, 0, policy, math.inf)
        assert isinstance(job, ShadowJob)
        return job

    def rows_done(self, count: int, result: InferenceResult | None = None) -> None:
        return None

    def fail(self, exc: BaseException) -> None:
        return None

    def write(self, rows: Rows, probs: npt.NDArray[np.float32], label: Rows, exit_: int) -> None:
        return None


@dataclass(eq=False)
class Span:
    """Consecutive packet rows that belong to one job: `rows` are the job's row indices."""

    job: Job
    rows: Rows


@dataclass(eq=False)
class Packet:
    """A block of rows waiting for a stage, with the state their policy carries.

    A request's packet at stage 0 carries no state (`pred`, `streak`, `trail` None): rows
    that have seen no exit all start alike, so the batch makes it for all its rows at once
    (service/assembly.py); `early` then says whether, and for how many early exits, the
    rows get a fidelity trail.
    """

    x: Hidden
    spans: list[Span]
    pred: Rows | None  # argmax at the previous exit; None: no exit yet (-1)
    streak: npt.NDArray[np.int32] | None  # exits agreeing on it; None: no exit yet (0)
    queued_at: float
    start: int = 0  # rows before it were already claimed by a batch
    trail: Trail | None = None  # fidelity control's memory of the rows; None when off
    early: int | None = None  # at stage 0: the early exits of the trail its rows get
    # Its rows of `x`, in order (None: all of them). On a device a batch forwards its
    # survivors by naming their rows in its hidden state (service/device_rows.py).
    sel: Rows | None = None
    offsets: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.offsets = [0]
        for span in self.spans:
            self.offsets.append(self.offsets[-1] + len(span.rows))

    @property
    def size(self) -> int:
        return self.offsets[-1]

    @property
    def left(self) -> int:
        """Rows not yet claimed."""
        return self.size - self.start

    def alive(self) -> bool:
        return any(not s.job.dead for s in self.spans)

    @classmethod
    def entry(cls, job: Job, x: Hidden, now: float, early: int | None = None) -> Packet:
        """A request's rows as they enter stage 0, with a trail if `early` exits are watched."""
        spans = [Span(job, np.arange(job.remaining, dtype=np.int64))]
        return cls(x=x, spans=spans, pred=None, streak=None, queued_at=now, early=early)


@dataclass(frozen=True)
class Claim:
    """Rows [start, stop) of a packet, taken into one batch."""

    packet: Packet
    start: int
    stop: int

    def pieces(self) -> list[tuple[Job, int, int, Rows]]:
        """(job, lo, hi, job rows) per span inside the claim; lo and hi count packet rows."""
        out = []
        offsets = self.packet.offsets
        for i, span in enumerate(self.packet.spans):
            lo, hi = max(offsets[i], self.start), min(offsets[i + 1], self.stop)
            if lo < hi:
                out.append((span.job, lo, hi, span.rows[lo - offsets[i] : hi - offsets[i]]))
        return out
