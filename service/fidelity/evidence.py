"""Shadow comparisons per exit: a bounded ring of (surety, agreed, left, weight, age).

A comparison says, for one observed row and one early exit it reached: how sure that exit
was, whether its label equals the last exit's, whether the row left there, and the
inverse of the chance that the row was observed. Rows that left early are observed only
when the sampler shadows them (weight 1/fraction); rows that reached the last exit are
observed for free (weight 1) and are what tell the controller about the rows *below* a
threshold, the only way a raised threshold can ever come back down. Old comparisons
expire by traffic count and by clock, so the estimates follow the traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Comparisons:
    """One exit's comparisons still within the horizon (copies, safe to keep)."""

    score: FloatArray
    agree: BoolArray
    left: BoolArray
    weight: FloatArray

    def __len__(self) -> int:
        return len(self.score)


class ExitRing:
    """Fixed-capacity columns; an append overwrites the oldest entries in O(rows)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._score = np.zeros(capacity, np.float64)
        self._agree = np.zeros(capacity, np.bool_)
        self._left = np.zeros(capacity, np.bool_)
        self._weight = np.zeros(capacity, np.float64)
        self._seq = np.zeros(capacity, np.int64)
        self._stamp = np.zeros(capacity, np.float64)
        self._head = 0  # next slot to write
        self.size = 0

    def append(
        self,
        score: FloatArray,
        agree: BoolArray,
        left: BoolArray,
        weight: FloatArray,
        seq: int,
        stamp: float,
    ) -> None:
        n = len(score)
        if n > self.capacity:  # only the newest fit
            n, cut = self.capacity, slice(n - self.capacity, n)
            score, agree, left, weight = score[cut], agree[cut], left[cut], weight[cut]
        slots = (self._head + np.arange(n)) % self.capacity
        self._score[slots], self._agree[slots], self._left[slots] = score, agree, left
        self._weight[slots], self._seq[slots], self._stamp[slots] = weight, seq, stamp
        self._head = (self._head + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def recent(self, min_seq: int, min_stamp: float) -> Comparisons:
        """The entries recorded at or after traffic count `min_seq` and time `min_stamp`."""
        live = np.arange(self.size)
        keep = live[(self._seq[live] >= min_seq) & (self._stamp[live] >= min_stamp)]
        return Comparisons(
            self._score[keep].copy(),
            self._agree[keep].copy(),
            self._left[keep].copy(),
            self._weight[keep].copy(),
        )

    def clear(self) -> None:
        self._head = self.size = 0


class EvidenceStore:
    """The rings of one model version's early exits, and the traffic count that ages them."""

    def __init__(self, early_exits: int, capacity: int, horizon_samples: int, horizon_s: float):
        self.rings = [ExitRing(capacity) for _ in range(early_exits)]
        self.horizon_samples = horizon_samples
        self.horizon_s = horizon_s
        self.seen = 0  # rows of traffic so far; the sample clock

    def count(self, rows: int) -> None:
        """Advance the sample clock by `rows` answered rows (every row, observed or not)."""
        self.seen += rows

    def record(
        self,
        surety: FloatArray,
        pred: IntArray,
        final: IntArray,
        answered_at: npt.NDArray[np.integer[Any]],
        inclusion: FloatArray | float,
        now: float,
    ) -> list[tuple[int, int]]:
        """Add observed rows; returns per early exit (answers compared, answers agreed).

        `surety`/`pred` are (rows, early exits): each row's score and label at every early
        exit it passed; entries past `answered_at` (where the row left) are ignored, since
        that exit never saw the row under the serving policy. `final` is the last exit's
        label, `inclusion` the chance the row was observed (1 for rows that reached the
        last exit, the shadow fraction for rows that left early).
        """
        weight = np.broadcast_to(1.0 / np.asarray(inclusion, np.float64), answered_at.shape)
        counts = []
        for k, ring in enumerate(self.rings):
            reached = answered_at >= k
            agree = pred[reached, k] == final[reached]
            left = answered_at[reached] == k
            ring.append(surety[reached, k], agree, left, weight[reached], self.seen, now)
            counts.append((int(left.sum()), int((agree & left).sum())))
        return counts

    def recent(self, exit_index: int, now: float) -> Comparisons:
        """Exit `exit_index`'s comparisons within both horizons."""
        ring = self.rings[exit_index]
        return ring.recent(self.seen - self.horizon_samples, now - self.horizon_s)

    def clear(self) -> None:
        for ring in self.rings:
            ring.clear()
