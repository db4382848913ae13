"""Agreement as a function of the threshold, with one-sided Wilson bounds.

Closed forms only (no scipy on the serving path). Comparisons carry weights (the inverse
of the probability that the row was observed), so that shadows sampled at a fraction and
survivors observed for free estimate the same population; the bounds then use Kish's
effective sample size, which is the plain count when every weight is equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def z_value(confidence: float) -> float:
    """The standard normal quantile of a one-sided `confidence` level."""
    return NormalDist().inv_cdf(confidence)


def wilson(p: FloatArray, n: FloatArray, z: float) -> tuple[FloatArray, FloatArray]:
    """Lower and upper Wilson score bounds of a proportion `p` seen in `n` trials.

    Wilson rather than the normal approximation: it stays inside [0, 1] and keeps its
    coverage at the agreements near 1 and the small counts this controller lives with.
    Where n is 0 the bounds are the whole interval [0, 1].
    """
    p = np.asarray(p, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    safe = np.where(n > 0, n, 1.0)
    z2 = z * z
    centre = (p + z2 / (2 * safe)) / (1 + z2 / safe)
    half = z * np.sqrt(p * (1 - p) / safe + z2 / (4 * safe * safe)) / (1 + z2 / safe)
    lower = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), 0.0)
    upper = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), 1.0)
    return lower, upper


@dataclass(frozen=True)
class Curve:
    """Per candidate threshold: the comparisons at or above it and their agreement."""

    thresholds: FloatArray  # ascending
    count: FloatArray  # raw number of comparisons with score >= threshold
    total: FloatArray  # their summed weight
    hits: FloatArray  # the summed weight of those that agreed
    n_eff: FloatArray  # Kish effective sample size
    agreement: FloatArray  # weighted share that agreed (nan where none)
    lower: FloatArray
    upper: FloatArray
    z: float
    strict_upper: FloatArray  # the upper bound at the stricter level a raise is held to

    def accepted(self, bar: float, min_samples: int) -> int | None:
        """The lowest grid index certified to keep agreement >= `bar`, or None.

        Fixed-sequence testing: from the surest threshold that has enough evidence
        downwards, stop at the first whose lower bound misses the bar. Testing in an order
        fixed before looking at the outcomes keeps the chance of certifying any bad
        threshold at the single test's level, where picking the best of all would not.
        "Enough" is at least `min_samples` and the count at which even a perfect record
        could reach the bar (n >= z^2 bar / (1 - bar)): a test that cannot pass would
        only end the sequence early.
        """
        needed = self.z * self.z * bar / (1.0 - bar) if bar < 1.0 else math.inf
        tested = np.flatnonzero(self.n_eff >= max(min_samples, needed))
        if len(tested) == 0:
            return None
        best = None
        for i in tested[::-1]:
            if self.lower[i] < bar:
                break
            best = int(i)
        return best


def curve(
    score: FloatArray,
    agree: BoolArray,
    weight: FloatArray,
    grid: FloatArray,
    z: float,
    z_strict: float | None = None,
) -> Curve:
    """Weighted agreement among comparisons with score >= t, for every t in `grid`;
    `z_strict` (default `z`) sets `strict_upper`, the bound a raise must clear."""
    order = np.argsort(score, kind="stable")
    s, w = score[order], weight[order]
    wa = np.where(agree[order], w, 0.0)
    # suffix sums: everything at index >= i
    tail_w = _suffix(w)
    tail_wa = _suffix(wa)
    tail_w2 = _suffix(w * w)
    idx = np.searchsorted(s, grid, side="left")
    total, hits, squares = tail_w[idx], tail_wa[idx], tail_w2[idx]
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(total > 0, hits / total, np.nan)
        n_eff = np.where(squares > 0, total * total / squares, 0.0)
    count = (len(s) - idx).astype(np.float64)
    raw_hits = _suffix(agree[order].astype(np.float64))[idx]
    lower, upper = _bounds(p, n_eff, count, raw_hits, z)
    strict = upper if z_strict is None else _bounds(p, n_eff, count, raw_hits, z_strict)[1]
    return Curve(grid, count, total, hits, n_eff, p, lower, upper, z, strict)


def _bounds(
    p: FloatArray, n_eff: FloatArray, count: FloatArray, raw_hits: FloatArray, z: float
) -> tuple[FloatArray, FloatArray]:
    """The wider of the weighted (Kish) and the unweighted Wilson intervals.

    Kish's n_eff understates the variance when a rare outcome carries a large weight: one
    disagreement shadowed at fraction 0.02 (weight 50) among agreements shadowed at 0.25
    dropped the weighted upper bound below target on clean data and switched an exit off.
    Both estimators are consistent for a steady stream, so a move now needs both to agree.
    """
    lw, uw = wilson(np.nan_to_num(p), n_eff, z)
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = np.where(count > 0, raw_hits / np.where(count > 0, count, 1.0), 0.0)
    lu, uu = wilson(raw, count, z)
    return np.minimum(lw, lu), np.maximum(uw, uu)


def _suffix(values: FloatArray) -> FloatArray:
    """Sums of values[i:] for i in 0..len (the last entry is 0)."""
    out = np.zeros(len(values) + 1, dtype=np.float64)
    out[:-1] = np.cumsum(values[::-1])[::-1]
    return out
