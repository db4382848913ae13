"""One "surety" scale for every threshold policy, and the grid of thresholds on it.

The controller reasons on surety, where higher always means surer (entropy is negated,
as models/calibrate.py does), so one rule serves confidence, entropy and margin. The
manifest and `ExitPolicy` keep their own convention (entropy <= t); `to_policy` and
`from_policy` convert. Thresholds move on a fixed grid: it makes steps countable
("at most k points"), makes the fixed-sequence tests' order independent of the data, and
packs points near the top, where over-confident exits need their bar.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from service.policies import ProbArray, entropy, margin, max_prob
from service.types import PolicyKind

FloatArray = npt.NDArray[np.float64]
GRID_RATIO = 0.6  # each point above the calibrated one closes 40% of the gap left to the top
GRID_POINTS_ABOVE = 20  # so the last leaves 0.6**20 (4e-5) of it: 0.99998 from 0.5
GRID_POINTS_BELOW = 8  # evenly down to the bottom, used only when allowed
THRESHOLD_POLICIES = ("confidence", "entropy", "margin")


def surety(kind: PolicyKind, probs: ProbArray) -> FloatArray:
    """Per row, the policy's score with "higher = surer", computed as the policy does.

    Uses the policy module's own float32 functions so that a comparison's score sits on
    the same side of a threshold as the live decision did.
    """
    if kind == "confidence":
        return max_prob(probs).astype(np.float64)
    if kind == "entropy":
        return -entropy(probs).astype(np.float64)
    if kind == "margin":
        return margin(probs).astype(np.float64)
    raise ValueError(f"policy {kind!r} has no thresholds to control")


def bounds(kind: PolicyKind, classes: int) -> tuple[float, float]:
    """The least and the most sure values the surety can take."""
    if kind == "entropy":
        return -math.log(classes), 0.0
    if kind == "confidence":
        return 1.0 / classes, 1.0
    return 0.0, 1.0


def to_policy(kind: PolicyKind, value: float) -> float:
    """A surety threshold in the policy's convention; +inf surety = never leave."""
    if kind != "entropy":
        return value
    return -value if math.isfinite(value) else -math.inf


def from_policy(kind: PolicyKind, threshold: float) -> float:
    return -threshold if kind == "entropy" else threshold


def grid(kind: PolicyKind, classes: int, calibrated: float, below: bool) -> tuple[FloatArray, int]:
    """Ascending surety thresholds and the index of the calibrated one.

    Above it: top - gap * r**i, then the top itself (a bar only the surest rows reach).
    Below it (only if `below`): points spread evenly down to the bottom.
    """
    low, top = bounds(kind, classes)
    gap = max(top - calibrated, 0.0)
    above = [top - gap * GRID_RATIO**i for i in range(1, GRID_POINTS_ABOVE + 1)] + [top]
    under: list[float] = []
    if below and calibrated > low:
        step = (calibrated - low) / GRID_POINTS_BELOW
        under = [low + step * i for i in range(GRID_POINTS_BELOW)]
    points = np.unique(np.asarray([*under, calibrated, *above], dtype=np.float64))
    return points, int(np.searchsorted(points, calibrated))
