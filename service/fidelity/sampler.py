"""Which early answers also run to the last exit (shadows), and how many.

The fraction is the only cost knob of fidelity control, so it adapts: it starts at its
maximum (a fresh model has no evidence), jumps back there on an alarm from the controller
(disagreement, a threshold change), and halves at each quiet step down to its minimum.
The per-row choice is an independent coin with the current fraction, drawn from a seeded
generator: cheap, reproducible, and it makes the fraction exactly each row's chance of
being observed, which the evidence's weights rely on.
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]
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
        self.chosen = 0  # shadows requested so far (the scheduler counts those it sheds)

    def choose(self, rows: int) -> BoolArray:
        """Which of `rows` early answers to shadow; each with chance `self.fraction`."""
        return self.draw(rows)[0]

    def draw(self, rows: int) -> tuple[BoolArray, float]:
        """`choose`, and the fraction it used: each picked row's chance of being observed."""
        with self._lock:
            fraction = self.fraction
            if rows <= 0 or fraction <= 0.0:
                return np.zeros(max(rows, 0), dtype=np.bool_), fraction
            picked = np.asarray(self._rng.random(rows) < fraction)
            self.chosen += int(picked.sum())
            return picked, fraction

    def update(self, alarm: bool) -> float:
        """After a controller step: maximum on alarm, else decay towards the minimum."""
        with self._lock:
            self.fraction = self.high if alarm else max(self.low, self.fraction * DECAY)
            return self.fraction

    def reset(self) -> None:
        """Back to the maximum, as after a load."""
        with self._lock:
            self.fraction = self.high
