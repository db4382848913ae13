"""Which early answers also run to the last exit (shadows), and how many.

The fraction is the only cost knob of fidelity control, so it adapts: it starts at its
maximum (a fresh model has no evidence), jumps back there on an alarm from the controller
(disagreement, a threshold change), and halves at each quiet step down to its minimum.
The per-row choice is an independent coin with the current fraction, drawn from a seeded
generator: cheap, reproducible, and it makes the fraction exactly each row's chance of
being observed, which the evidence's weights rely on. The coins are drawn as the number of
tails before the next head (geometric), so the many batches in which no row is picked
cost no random draw at all; a change of fraction draws that number afresh, which the
coins' independence allows.
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
_NONE: IntArray = np.empty(0, dtype=np.int64)  # no row picked (read-only: shared)
_NONE.flags.writeable = False
DECAY = 0.5  # per quiet step: from 0.25 to 0.02 in four steps


class ShadowSampler:
    """The adaptive shadow fraction and the per-batch choice.

    Stage batches of different exits choose on worker threads at once while the controller
    updates the fraction on the event loop: a lock keeps the generator and the fraction a
    choice was made with consistent (microseconds, once per batch)."""

    def __init__(self, low: float, high: float, seed: int = 0) -> None:
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"shadow fraction bounds must satisfy 0 <= {low} <= {high} <= 1")
        self.low, self.high = low, high
        self.fraction = high
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._tails = -1  # rows until the next picked one; -1: draw it (fraction changed)
        self.chosen = 0  # shadows requested so far (the scheduler counts those it sheds)

    def choose(self, rows: int) -> BoolArray:
        """Which of `rows` early answers to shadow; each with chance `self.fraction`."""
        mask = np.zeros(max(rows, 0), dtype=np.bool_)
        mask[self.draw(rows)[0]] = True
        return mask

    def draw(self, rows: int) -> tuple[IntArray, float]:
        """The positions among `rows` early answers picked as shadows, and the fraction
        used: each picked row's chance of being observed."""
        with self._lock:
            fraction = self.fraction
            if rows <= 0 or fraction <= 0.0:
                return _NONE, fraction
            if self._tails < 0:
                self._tails = self._tails_before_head(fraction)
            if self._tails >= rows:
                self._tails -= rows
                return _NONE, fraction
            first = self._tails  # a head; the rows after it are fresh coins
            coins = self._rng.random(rows - first - 1) < fraction
            picked = np.concatenate([[first], coins.nonzero()[0] + first + 1]).astype(np.int64)
            self._tails = self._tails_before_head(fraction)
            self.chosen += len(picked)
            return picked, fraction

    def _tails_before_head(self, fraction: float) -> int:
        return int(self._rng.geometric(fraction)) - 1

    def update(self, alarm: bool) -> float:
        """After a controller step: maximum on alarm, else decay towards the minimum."""
        with self._lock:
            self.fraction = self.high if alarm else max(self.low, self.fraction * DECAY)
            self._tails = -1
            return self.fraction

    def reset(self) -> None:
        """Back to the maximum, as after a load."""
        with self._lock:
            self.fraction = self.high
            self._tails = -1
