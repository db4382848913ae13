"""Offline replay of a drifting stream: static thresholds vs the fidelity controller.

Every exit's probabilities are computed once at full depth with the bare segment chain
(loadtest.inprocess), then each batch is routed with the server's own policy code
(`service.policies.decide`) under the policy in force at that moment. Shadows, evidence
and controller steps are driven exactly as the scheduler will drive them, so the figures
tell early whether the design meets issue 11's acceptance, without a server or a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from loadtest.drift import Phase
from loadtest.inprocess import Chain
from models.manifest import Manifest
from service.fidelity import FidelityConfig, FidelityController, ThresholdChange, surety
from service.policies import ExitPolicy, decide, resolve_policy
from service.types import PolicyKind, PolicyOverride

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
TAIL = 1000  # acceptance: agreement over a phase's last 1000 samples
LEVEL = 0.985  # acceptance: agreement on every shift
ROLLING = 500  # window of the reaction-time estimate


@dataclass(frozen=True)
class Outputs:
    """Every exit's label and surety for every sample of the stream (full depth)."""

    pred: IntArray  # (N, exits)
    surety: npt.NDArray[np.float64]  # (N, exits)
    probs: list[FloatArray]  # per exit (N, C)


@dataclass(frozen=True)
class Served:
    """What the server answered per sample, and which answers were shadowed."""

    exit: npt.NDArray[np.int32]
    label: IntArray
    shadow: npt.NDArray[np.bool_]


@dataclass(frozen=True)
class PhaseFigures:
    """One phase of one run."""

    name: str
    agreement_tail: float  # with full depth, over the phase's last TAIL samples
    early_share: float  # answered before the last exit, whole phase
    early_share_tail: float
    compute: float  # mean share of full-depth compute per answer
    shadow_cost: float  # shadow compute / (answer + shadow compute)
    shadow_cost_tail: float
    reaction: int | None  # samples until the rolling agreement first reaches LEVEL


@dataclass(frozen=True)
class Replay:
    static: tuple[PhaseFigures, ...]
    controlled: tuple[PhaseFigures, ...]
    changes: tuple[ThresholdChange, ...]
    recovery: int | None  # samples into the last phase until the early share is back


def exit_outputs(chain: Chain, x: FloatArray, kind: PolicyKind, batch: int = 1024) -> Outputs:
    """Run every segment on every sample (the shared bare-onnxruntime chain)."""
    per_exit: list[list[FloatArray]] = [[] for _ in chain.manifest.segments]
    for i in range(0, len(x), batch):
        hidden: FloatArray | None = x[i : i + batch]
        for k in range(chain.manifest.num_exits):
            assert hidden is not None
            hidden, probs = chain.run_segment(k, hidden)
            per_exit[k].append(probs)
    joined = [np.concatenate(p) for p in per_exit]
    pred = np.stack([p.argmax(axis=1) for p in joined], axis=1).astype(np.int64)
    score = np.stack([surety(kind, p) for p in joined], axis=1)
    return Outputs(pred, score, joined)


def route(policy: ExitPolicy, probs: list[FloatArray]) -> npt.NDArray[np.int32]:
    """The exit each row leaves at under `policy`, with the server's decision code."""
    n = len(probs[0])
    exits = np.full(n, len(probs) - 1, dtype=np.int32)
    alive = np.arange(n)
    pred, streak = np.full(n, -1, np.int64), np.zeros(n, np.int32)
    for k, p in enumerate(probs):
        d = decide(policy, k, p[alive], pred, streak)
        exits[alive[d.exits]] = k
        alive, pred, streak = alive[~d.exits], d.pred[~d.exits], d.streak[~d.exits]
        if len(alive) == 0:
            break
    return exits


def serve(
    outputs: Outputs,
    policy: ExitPolicy,
    controller: FidelityController | None,
    batch: int,
    samples_per_s: float,
) -> Served:
    """Route the stream batch by batch; with a controller, shadow, record and step."""
    n, last = len(outputs.pred), outputs.pred.shape[1] - 1
    exits, shadow = np.zeros(n, np.int32), np.zeros(n, np.bool_)
    for i in range(0, n, batch):
        rows = slice(i, min(i + batch, n))
        now = i / samples_per_s
        if controller is not None:
            policy = controller.policy
        exits[rows] = route(policy, [p[rows] for p in outputs.probs])
        if controller is not None:
            shadow[rows] = observe(controller, outputs, rows, exits[rows], last, now)
            if controller.due(now):
                controller.step(now)
    label = outputs.pred[np.arange(n), exits]
    return Served(exits, label, shadow)


def observe(
    controller: FidelityController,
    outputs: Outputs,
    rows: slice,
    exits: npt.NDArray[np.int32],
    last: int,
    now: float,
) -> npt.NDArray[np.bool_]:
    """What the scheduler does per batch: pick shadows, record every observed row."""
    early = exits < last
    inclusion = np.ones(len(exits))
    inclusion[early] = controller.sampler.fraction
    shadow = np.zeros(len(exits), np.bool_)
    shadow[early] = controller.sampler.choose(int(early.sum()))
    seen = shadow | ~early
    pred, score = outputs.pred[rows][seen], outputs.surety[rows][seen]
    controller.evidence.record(
        score[:, :last], pred[:, :last], pred[:, last], exits[seen], inclusion[seen], now
    )
    controller.evidence.count(len(exits))
    return shadow


def figures(
    served: Served, outputs: Outputs, phase: Phase, cumulative: npt.NDArray[np.float64]
) -> PhaseFigures:
    """Agreement, early share, compute and shadow cost of one phase."""
    span = slice(phase.start, phase.stop)
    last = outputs.pred.shape[1] - 1
    agree = served.label[span] == outputs.pred[span, last]
    early = served.exit[span] < last
    spent = cumulative[served.exit[span]]
    extra = np.where(served.shadow[span], 1.0 - spent, 0.0)
    return PhaseFigures(
        name=phase.name,
        agreement_tail=float(agree[-TAIL:].mean()),
        early_share=float(early.mean()),
        early_share_tail=float(early[-TAIL:].mean()),
        compute=float(spent.mean()),
        shadow_cost=_share(extra, spent),
        shadow_cost_tail=_share(extra[-TAIL:], spent[-TAIL:]),
        reaction=first_reaching(agree.astype(np.float64), LEVEL),
    )


def _share(extra: npt.NDArray[np.float64], spent: npt.NDArray[np.float64]) -> float:
    return float(extra.sum() / (spent.sum() + extra.sum()))


def first_reaching(values: npt.NDArray[np.float64], level: float) -> int | None:
    """Samples until the mean over the last ROLLING first reaches `level`."""
    if len(values) < ROLLING:
        return None
    sums = np.convolve(values, np.ones(ROLLING), mode="valid") / ROLLING
    hits = np.flatnonzero(sums >= level)
    return int(hits[0]) + ROLLING if len(hits) else None


def replay(
    chain: Chain,
    x: FloatArray,
    phases: tuple[Phase, ...],
    config: FidelityConfig,
    batch: int = 64,
    samples_per_s: float = 2000.0,
) -> Replay:
    """Static thresholds and the controller over the same stream, phase by phase."""
    manifest = chain.manifest
    base = resolve_policy(manifest, PolicyOverride())
    outputs = exit_outputs(chain, x, base.kind)
    controller = FidelityController.for_manifest(manifest, base, config)
    if controller is None:
        raise ValueError(f"model '{manifest.name}' has no calibration and no target is set")
    static = serve(outputs, base, None, batch, samples_per_s)
    controlled = serve(outputs, base, controller, batch, samples_per_s)
    cumulative = _cumulative(manifest)
    return Replay(
        static=tuple(figures(static, outputs, p, cumulative) for p in phases),
        controlled=tuple(figures(controlled, outputs, p, cumulative) for p in phases),
        changes=tuple(controller.log),
        recovery=_recovery(static, controlled, phases, outputs.pred.shape[1] - 1),
    )


def _cumulative(manifest: Manifest) -> npt.NDArray[np.float64]:
    return np.asarray([s.cumulative_fraction for s in manifest.segments], dtype=np.float64)


def _recovery(
    static: Served, controlled: Served, phases: tuple[Phase, ...], last: int
) -> int | None:
    """Samples into the last phase until the rolling early share is within 5 points of the
    static policy's on that same phase (the clean-data figure)."""
    span = slice(phases[-1].start, phases[-1].stop)
    reference = float((static.exit[span] < last).mean())
    early = (controlled.exit[span] < last).astype(np.float64)
    return first_reaching(early, reference - 0.05)
