"""Place exits at requested percentiles of the backbone's cumulative cost.

The background article's rule: compute each layer's relative cost and put exits where the
running total crosses chosen percentiles, so that "exit 1 at 15%" means the first answer
costs about 15% of a full pass whatever the architecture looks like.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate


class PlacementError(ValueError):
    """Percentiles that cannot be honoured with the given units."""


def cumulative_fractions(costs: Sequence[int]) -> list[float]:
    """Share of the total cost spent after each unit (the last one is 1.0)."""
    total = sum(costs)
    if total <= 0 or any(c < 0 for c in costs):
        raise PlacementError(f"unit costs must be non-negative with a positive total: {costs}")
    return [c / total for c in accumulate(costs)]


def place_exits(costs: Sequence[int], percentiles: Sequence[float]) -> list[int]:
    """Cut points (number of units before each exit) nearest to each percentile.

    The final exit always sits after the last unit. Percentiles must rise strictly in
    (0, 1]; two that land on the same unit boundary are an error rather than silently
    merged, so a caller never gets fewer exits than asked for without knowing.
    """
    if not percentiles or list(percentiles) != sorted(set(percentiles)):
        raise PlacementError(f"percentiles must be strictly increasing: {list(percentiles)}")
    if percentiles[0] <= 0 or percentiles[-1] > 1:
        raise PlacementError(f"percentiles must lie in (0, 1]: {list(percentiles)}")
    fractions = cumulative_fractions(costs)
    cuts: list[int] = []
    for p in percentiles[:-1] if percentiles[-1] == 1 else percentiles:
        # the unit boundary whose running cost is nearest p; ties go to the cheaper one
        best = min(
            range(len(fractions) - 1), key=lambda i: (abs(fractions[i] - p), i), default=None
        )
        if best is None or (cuts and best + 1 <= cuts[-1]):
            raise PlacementError(f"percentile {p} lands on an exit already placed; add depth")
        cuts.append(best + 1)
    cuts.append(len(costs))
    return cuts


def group_costs(costs: Sequence[int], cuts: Sequence[int]) -> list[int]:
    """Backbone cost of each block between consecutive cut points."""
    starts = [0, *cuts[:-1]]
    return [sum(costs[a:b]) for a, b in zip(starts, cuts, strict=True)]
