"""Choose per-exit thresholds: cheapest expected compute within an accuracy tolerance.

Pure numpy on softmax outputs, so it is cheap to search exhaustively. For each policy a
shared threshold grid is swept over all early exits (this sweep is also the report's
accuracy/compute curve); then a greedy per-exit pass, first exit first, lowers compute
further while validation accuracy stays >= final-exit accuracy - tolerance. The compute
fraction of a sample is the cumulative cost of the exit it takes over the full-depth cost.
A one-sided safety margin (SAFETY_Z standard errors of the paired accuracy drop) keeps the
search from fitting validation noise, so the tolerance also holds on the test set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from models.data import FloatArray, IntArray

POLICIES = ("confidence", "entropy", "margin")
PATIENCE = "patience"  # PABEE: leave once k consecutive exits agree; calibrated as k itself
ALL_POLICIES = (*POLICIES, PATIENCE)
GRID_POINTS = 160
GREEDY_PASSES = 2
# one-sided margin, in standard errors of the validation accuracy drop (about 84% coverage)
SAFETY_Z = 1.0


@dataclass(frozen=True)
class Outcome:
    """What a threshold setting does on one split."""

    accuracy: float
    compute_fraction: float
    exit_distribution: list[float]


@dataclass(frozen=True)
class PolicyChoice:
    """A policy's calibrated thresholds (one per exit, manifest convention) and outcome."""

    policy: str
    thresholds: list[float]
    val: Outcome
    feasible: bool
    curve: list[tuple[float, float]] = field(default_factory=list)
    # z standard errors of the paired validation drop: what the setting had to leave unused
    margin: float = 0.0


def scores(probs: FloatArray, policy: str) -> npt.NDArray[np.float64]:
    """(exits, N) scores where higher means "more sure"; entropy is negated to fit."""
    p = probs.astype(np.float64)
    if policy == "confidence":
        return np.asarray(p.max(axis=-1), dtype=np.float64)
    if policy == "entropy":
        return np.asarray((p * np.log(np.clip(p, 1e-12, None))).sum(axis=-1), dtype=np.float64)
    if policy == "margin":
        top2 = np.sort(p, axis=-1)[..., -2:]
        return np.asarray(top2[..., 1] - top2[..., 0], dtype=np.float64)
    raise ValueError(f"unknown policy {policy!r}; expected one of {POLICIES}")


def exits_taken(score: npt.NDArray[np.float64], cuts: npt.NDArray[np.float64]) -> IntArray:
    """Index of the first exit whose score reaches its cut; the last exit takes the rest."""
    passes = score[:-1] >= cuts[:, None]
    passes = np.vstack([passes, np.ones((1, score.shape[1]), dtype=bool)])
    return np.asarray(np.argmax(passes, axis=0), dtype=np.int64)


def outcome(taken: IntArray, correct: npt.NDArray[np.bool_], cumulative: FloatArray) -> Outcome:
    """Accuracy, mean compute fraction and exit histogram of one routing of the samples."""
    n, exits = taken.shape[0], correct.shape[0]
    return Outcome(
        accuracy=float(correct[taken, np.arange(n)].mean()),
        compute_fraction=float(np.asarray(cumulative, dtype=np.float64)[taken].mean()),
        exit_distribution=(np.bincount(taken, minlength=exits) / n).tolist(),
    )


def to_manifest(policy: str, cuts: npt.NDArray[np.float64], num_classes: int) -> list[float]:
    """Internal cuts as the manifest states them, with an always-exit value for the last exit."""
    if policy == "entropy":
        return [float(-c) + 0.0 for c in cuts] + [math.log(num_classes)]
    return [float(c) for c in cuts] + [0.0]


def from_manifest(policy: str, thresholds: list[float]) -> npt.NDArray[np.float64]:
    """The inverse of `to_manifest` (the last exit's value is dropped)."""
    early = np.asarray(thresholds[:-1], dtype=np.float64)
    return -early if policy == "entropy" else early


def patience_exits(probs: FloatArray, patience: int) -> IntArray:
    """PABEE's routing, as the server does it: the first exit whose prediction is the same as
    at the `patience` - 1 exits before it (a streak of `patience`); the last exit otherwise."""
    preds = probs.argmax(axis=-1)
    streak = np.ones(preds.shape, dtype=np.int64)
    for k in range(1, len(preds)):
        streak[k] = np.where(preds[k] == preds[k - 1], streak[k - 1] + 1, 1)
    passes = np.vstack([streak[:-1] >= patience, np.ones((1, preds.shape[1]), dtype=bool)])
    return np.asarray(np.argmax(passes, axis=0), dtype=np.int64)


def apply(
    probs: FloatArray,
    labels: IntArray,
    policy: str,
    thresholds: list[float],
    cumulative: FloatArray,
) -> Outcome:
    """Evaluate manifest-style thresholds on any split (used for the test set); for
    patience, every entry of `thresholds` is k."""
    correct = probs.argmax(axis=-1) == labels[None, :]
    if policy == PATIENCE:
        return outcome(patience_exits(probs, int(thresholds[0])), correct, cumulative)
    score = scores(probs, policy)
    return outcome(exits_taken(score, from_manifest(policy, thresholds)), correct, cumulative)


@dataclass(frozen=True)
class Budget:
    """What a setting may lose: `tolerance` (a fraction) below exit `reference`'s accuracy,
    after a margin of `z` standard errors."""

    tolerance: float
    z: float
    reference: int = -1


@dataclass(frozen=True)
class _Candidate:
    """A threshold setting, what it does, and how much tolerance it leaves unused."""

    cuts: npt.NDArray[np.float64]
    result: Outcome
    slack: float
    margin: float

    @property
    def feasible(self) -> bool:
        return self.slack >= -1e-12


def _evaluate(
    score: npt.NDArray[np.float64],
    correct: npt.NDArray[np.bool_],
    cumulative: FloatArray,
    cuts: npt.NDArray[np.float64],
    budget: Budget,
) -> _Candidate:
    """Route the samples; slack = tolerance - (accuracy drop + z standard errors).

    The drop is paired (same samples, routed answer vs the reference exit's answer), and its
    standard error keeps the greedy search from spending the whole tolerance on noise that
    would not carry over to unseen data.
    """
    return _judge(exits_taken(score, cuts), correct, cumulative, cuts, budget)


def _judge(
    taken: IntArray,
    correct: npt.NDArray[np.bool_],
    cumulative: FloatArray,
    cuts: npt.NDArray[np.float64],
    budget: Budget,
) -> _Candidate:
    n = len(taken)
    diff = correct[taken, np.arange(n)].astype(np.float64) - correct[budget.reference]
    margin = budget.z * float(diff.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0
    slack = budget.tolerance - (-float(diff.mean()) + margin)
    return _Candidate(cuts, outcome(taken, correct, cumulative), slack, margin)


def _better(candidate: _Candidate, incumbent: _Candidate) -> bool:
    """Feasible beats infeasible; then lower compute; then higher accuracy."""
    if candidate.feasible != incumbent.feasible:
        return candidate.feasible
    if not candidate.feasible:
        return candidate.slack > incumbent.slack
    c, i = candidate.result, incumbent.result
    return (round(c.compute_fraction, 9), -c.accuracy) < (round(i.compute_fraction, 9), -i.accuracy)


def _search(
    score: npt.NDArray[np.float64],
    correct: npt.NDArray[np.bool_],
    cumulative: FloatArray,
    budget: Budget,
) -> tuple[_Candidate, list[tuple[float, float]]]:
    """Shared-grid sweep, then greedy per-exit refinement; returns the cheapest feasible cuts."""
    early = score[:-1]
    # start near "never": only each exit's single surest sample leaves early
    best = _evaluate(score, correct, cumulative, early.max(axis=1), budget)
    curve = []
    for t in np.unique(np.quantile(early, np.linspace(0.0, 1.0, GRID_POINTS))):
        candidate = _evaluate(score, correct, cumulative, np.full(len(early), t), budget)
        curve.append((candidate.result.compute_fraction, candidate.result.accuracy))
        if _better(candidate, best):
            best = candidate
    for _ in range(GREEDY_PASSES):
        for k in range(len(early)):
            for t in np.unique(np.quantile(early[k], np.linspace(0.0, 1.0, GRID_POINTS))):
                cuts = best.cuts.copy()
                cuts[k] = t
                candidate = _evaluate(score, correct, cumulative, cuts, budget)
                if _better(candidate, best):
                    best = candidate
    return best, curve


def calibrate(
    probs: FloatArray,
    labels: IntArray,
    cumulative: FloatArray,
    tolerance_pp: float = 0.5,
    policies: tuple[str, ...] = ALL_POLICIES,
    safety_z: float = SAFETY_Z,
    reference: int = -1,
) -> dict[str, PolicyChoice]:
    """Thresholds per policy on a validation split; `cumulative` is each exit's cost share.

    A setting is feasible when its paired accuracy drop below exit `reference` (the final
    one unless told), plus `safety_z` standard errors of that drop, stays within
    `tolerance_pp` percentage points.
    """
    if probs.ndim != 3 or probs.shape[0] != len(cumulative) or probs.shape[1] != len(labels):
        raise ValueError(f"probs {probs.shape} do not match {len(cumulative)} exits/labels")
    correct = probs.argmax(axis=-1) == labels[None, :]
    budget = Budget(tolerance_pp / 100.0, safety_z, reference)
    choices = {}
    for policy in policies:
        if policy == PATIENCE:
            choices[policy] = calibrate_patience(probs, correct, cumulative, budget)
            continue
        best, curve = _search(scores(probs, policy), correct, cumulative, budget)
        thresholds = to_manifest(policy, best.cuts, probs.shape[-1])
        choices[policy] = PolicyChoice(
            policy, thresholds, best.result, best.feasible, curve, best.margin
        )
    return choices


def calibrate_patience(
    probs: FloatArray, correct: npt.NDArray[np.bool_], cumulative: FloatArray, budget: Budget
) -> PolicyChoice:
    """The smallest patience k whose routing holds the tolerance (same margin as the others).

    Patience has no threshold to tune: k is the only knob, so where even the largest k that
    still lets anything leave early loses too much, the choice comes back infeasible (the
    manifest then declares no patience, and the policy must be refused) instead of the
    PABEE default silently costing accuracy.
    """
    exits = probs.shape[0]
    candidates = [
        _judge(patience_exits(probs, k), correct, cumulative, np.array([float(k)]), budget)
        for k in range(1, max(2, exits))
    ]
    curve = [(c.result.compute_fraction, c.result.accuracy) for c in candidates]
    best = candidates[-1]
    for candidate in reversed(candidates):
        if _better(candidate, best):
            best = candidate
    k = [float(best.cuts[0])] * exits
    return PolicyChoice(PATIENCE, k, best.result, best.feasible, curve, best.margin)


def pick_default(choices: dict[str, PolicyChoice]) -> str:
    """The feasible threshold policy with the lowest validation compute (confidence wins
    ties); patience is never the default (the manifest's default needs thresholds)."""
    order = sorted(
        (c for c in choices.values() if c.policy in POLICIES),
        key=lambda c: (not c.feasible, round(c.val.compute_fraction, 6), c.policy != "confidence"),
    )
    return order[0].policy


def best_exit(accuracies: list[float]) -> int:
    """The most accurate exit; on a tie the deeper one (the final exit unless beaten)."""
    return max(range(len(accuracies)), key=lambda k: (accuracies[k], k))


def accuracy_per_exit(probs: FloatArray, labels: IntArray) -> list[float]:
    """Each exit's own accuracy if every sample left there."""
    hits = (probs.argmax(axis=-1) == labels[None, :]).mean(axis=1)
    return [float(h) for h in hits]
