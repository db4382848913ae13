"""When one exit's threshold moves, given its agreement curve: the controller's decision rule.

Asymmetric on purpose. The calibrated threshold was validated offline, so it stands until
the evidence *clearly* says otherwise (the upper bound of the agreement there is below the
target); a raise is then as large as needed, to the lowest threshold the evidence
certifies (its lower bound reaches the target), or the exit is switched off when none is
certified. Coming back down needs the opposite proof: the lower threshold's lower bound
must clear the target plus a hysteresis margin, with enough evidence, and each step is
bounded. Between the two bars nothing moves, so noise does not make thresholds flap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.fidelity.stats import Curve, wilson

Reason = str


@dataclass(frozen=True)
class Bars:
    """The numbers a decision is held to."""

    target: float
    hysteresis: float
    min_samples: int
    max_step: int
    floor: int  # lowest grid index allowed (the calibrated one unless below is allowed)


@dataclass(frozen=True)
class Move:
    """A new grid index for one exit (len(grid) = switched off) and why."""

    index: int
    reason: Reason


def disabled(curve: Curve) -> int:
    """The index that means "this exit never answers"."""
    return len(curve.thresholds)


def pooled(curves: Sequence[Curve], index: Sequence[int], z: float) -> tuple[float, float] | None:
    """Effective size and upper bound (at `z`) of the agreement of the answers being given:
    every exit at its grid position `index[k]`, pooled; None when no exit gives any."""
    total = hits = squares = 0.0
    for curve, i in zip(curves, index, strict=True):
        if i < disabled(curve) and curve.total[i] > 0:
            total += curve.total[i]
            hits += curve.hits[i]
            squares += curve.total[i] ** 2 / curve.n_eff[i]
    if total == 0:
        return None
    n_eff = total * total / squares
    _, upper = wilson(np.array([hits / total]), np.array([n_eff]), z)
    return n_eff, float(upper[0])


def decide(curve: Curve, current: int, bars: Bars) -> Move | None:
    """The move for an exit now at grid index `current`, or None to stay."""
    raised = _raise(curve, current, bars)
    return raised if raised is not None else _lower(curve, current, bars)


def violated(curve: Curve, index: int, bars: Bars) -> bool:
    """Clear evidence that the agreement at `index` is below target: the bound at the
    stricter raise level (`strict_upper`), since this test repeats at every step."""
    if index >= disabled(curve) or curve.n_eff[index] < bars.min_samples:
        return False
    return bool(curve.strict_upper[index] < bars.target)


def _raise(curve: Curve, current: int, bars: Bars) -> Move | None:
    if not violated(curve, current, bars):
        return None
    upper = curve.strict_upper[current]
    best = curve.accepted(bars.target, bars.min_samples)
    if best is None or best <= current:
        why = f"upper bound {upper:.4f} < target {bars.target:.4f} and no threshold certified"
        return Move(disabled(curve), why)
    why = f"upper bound {upper:.4f} < target {bars.target:.4f}; lowest certified threshold"
    return Move(best, why)


def _lower(curve: Curve, current: int, bars: Bars) -> Move | None:
    best = curve.accepted(bars.target + bars.hysteresis, bars.min_samples)
    if best is None:
        return None
    start = min(current, disabled(curve))
    index = max(best, start - bars.max_step, bars.floor)
    if index >= current:
        return None
    bar, low, at = bars.target + bars.hysteresis, curve.lower[best], curve.thresholds[best]
    return Move(index, f"certified down to {at:.6g}: lower bound {low:.4f} >= {bar:.4f}")


def threshold_at(curve: Curve, index: int) -> float:
    """The surety threshold at a grid index; +inf when switched off."""
    return math.inf if index >= disabled(curve) else float(curve.thresholds[index])
