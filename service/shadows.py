"""Shadow rows in the stages: which early answers go on, and what they prove (issue 11).

The scheduler's side of fidelity control. In a stage batch (worker thread) a `Watch`
notes the watched rows' surety and label at each early exit and picks the early answers
to shadow; at the last exit it hands the observed rows' trails over as evidence, which
the event loop records into the controller. Per batch, in numpy; a version without a
controller has no Watch and its packets no trail, so it pays nothing.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from service.fidelity import FidelityController, surety
from service.jobs import ByteBudget, ShadowJob
from service.policies import ExitPolicy, ProbArray
from service.stage import Stage
from service.trail import IntArray, Trail

if TYPE_CHECKING:  # batch imports this module: the types only
    from service.batch import Outcome
    from service.metrics import Metrics


@dataclass(frozen=True)
class Evidence:
    """The observed rows of one batch at the last exit: their trails and final labels."""

    trail: Trail
    final: IntArray

    def shadows(self, early: int) -> npt.NDArray[np.int64]:
        """How many of them were shadows, per exit that answered them early."""
        answered = self.trail.answered
        return np.bincount(answered[answered < early], minlength=early)


class Watch:
    """One version's shadow sampling: the controller's sampler and evidence, and the
    full-depth owner of its shadow rows."""

    def __init__(
        self, fid: FidelityController, crowded: Callable[[], bool] = lambda: False
    ) -> None:
        self.fid = fid
        self.early = len(fid.base.thresholds) - 1  # exits before the last one
        never = -math.inf if fid.base.kind == "entropy" else math.inf
        self.full_depth: ExitPolicy = dataclasses.replace(
            fid.base, thresholds=tuple(never for _ in fid.base.thresholds)
        )
        self.crowded = crowded  # under load: shed shadows rather than make them
        self.wake: Callable[[], None] = lambda: None  # a controller step is due
        self.job: ShadowJob | None = None

    def start(self) -> ShadowJob:
        """The owner of the shadow rows (on the event loop: a job holds a future)."""
        self.job = ShadowJob.of(self.fid.model, self.fid.version, self.full_depth)
        return self.job

    @property
    def on(self) -> bool:
        """Whether new requests' rows get a trail (the controller is enabled)."""
        return self.fid.enabled

    def note(
        self, k: int, probs: ProbArray, pred: IntArray, trail: Trail, top: ProbArray | None
    ) -> None:
        """Remember every row's surety and label at early exit k. `top`: the rows' highest
        probabilities if the exit's decision computed them (the confidence surety)."""
        if k < self.early:
            kind = self.fid.base.kind
            trail.surety[:, k] = (
                top if top is not None and kind == "confidence" else surety(kind, probs)
            )
            trail.label[:, k] = pred

    def pick(
        self, k: int, exits: npt.NDArray[np.bool_], real: int, trail: Trail
    ) -> tuple[IntArray, int]:
        """Batch rows answered at exit k that go on as shadows, and how many picked were
        shed instead because the version is under load."""
        leaving = exits[:real] & (trail.inclusion[:real] > 0)
        chosen, fraction = self.fid.sampler.draw(int(np.count_nonzero(leaving)))
        if not len(chosen):
            return chosen, 0
        picked = leaving.nonzero()[0][chosen]
        if self.crowded():
            return picked[:0], len(picked)
        trail.answered[picked] = k
        trail.inclusion[picked] = fraction
        return picked, 0

    def observed(self, trail: Trail, final: IntArray) -> Evidence | None:
        """At the last exit: the rows that are evidence (watched survivors and shadows)."""
        rows = np.flatnonzero(trail.inclusion > 0)
        return Evidence(trail.take(rows), final[rows]) if len(rows) else None

    def record(self, evidence: Evidence, now: float) -> list[tuple[int, int]]:
        """Into the controller's evidence (event loop); (compared, agreed) per early exit."""
        t = evidence.trail
        return self.fid.evidence.record(
            t.surety, t.label, evidence.final, t.answered, t.inclusion, now
        )


def crowded(
    watch: Watch,
    stages: Sequence[Stage],
    budget: ByteBudget,
    limits: tuple[int, int],
    rows: int,
    cost: int,
) -> bool:
    """Whether a version is busy enough that shadows must give way: a stage queue (with
    `rows` more at stage 0) above the share `shed_above` of max_queue_samples, or the
    bytes in flight (with `cost` more, and the queued shadows' `row_bytes` each) above
    that share of the byte budget. `limits`: (max_queue_samples, row_bytes). Shadows are
    not charged to the budget, so this bounds them: at most `shed_above` of it. Only
    reads ints, so worker threads may ask."""
    share, (limit, row_bytes) = watch.fid.config.shed_above, limits
    queued = [s.rows + s.shadow_rows for s in stages]
    queued[0] += rows
    shadow_bytes = row_bytes * sum(s.shadow_rows for s in stages)
    return max(queued) > share * limit or (budget.used + cost + shadow_bytes > share * budget.limit)


def shed(watch: Watch, stages: Sequence[Stage]) -> list[int]:
    """Drop every queued shadow row; how many, per exit that answered them early."""
    counts = np.zeros(watch.early, np.int64)
    for stage in stages:
        for packet in stage.shed():
            if packet.trail is not None:
                answered = packet.trail.answered[packet.start :]
                counts += np.bincount(answered[answered < watch.early], minlength=watch.early)
    return [int(c) for c in counts]


def observe(
    watch: Watch,
    stages: Sequence[Stage],
    metrics: Metrics,
    version: tuple[str, str],
    k: int,
    outcome: Outcome,
) -> None:
    """Fidelity control's share of a batch, on the loop: queue its shadows, count its
    answers on the controller's sample clock, record its evidence, wake a due step."""
    now = time.monotonic()
    if outcome.shadows is not None:
        stages[k + 1].put_shadow(outcome.shadows)
    metrics.record_shadows(*version, k, outcome.shadowed, outcome.shed)
    watch.fid.evidence.count(sum(count for _, count, _ in outcome.answered))
    if outcome.evidence is not None:
        metrics.record_agreement(*version, watch.record(outcome.evidence, now))
    if watch.fid.due(now):
        watch.wake()
