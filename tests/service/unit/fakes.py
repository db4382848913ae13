"""A numpy stand-in for ModelRuntime whose rows say where they should exit.

Row layout: column 0 is the exit the row is meant to leave at, column 1 its label, column 2
a caller-chosen tag (e.g. request and row number). At its planned exit a row is confident
(0.9 on its label); elsewhere its probabilities are uniform. Every batch is recorded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from service.runtime import Hidden, SegmentOutput

CLASSES = 4


def rows(
    planned: Sequence[int] | npt.NDArray[np.int64],
    labels: Sequence[int] | npt.NDArray[np.int64],
    tag: float = 0.0,
) -> npt.NDArray[np.float32]:
    """A request payload: one row per (planned exit, label)."""
    tags = tag + np.arange(len(planned)) / 1000.0
    return np.stack([planned, labels, tags], axis=1).astype(np.float32)


class FakeRunner:
    """Deterministic segments; `fail(k, x)` -> True makes that run raise."""

    def __init__(
        self,
        segments: int = 3,
        delay_s: Callable[[int], float] = lambda k: 0.0,
        fail: Callable[[int, npt.NDArray[Any]], bool] = lambda k, x: False,
    ) -> None:
        self.segments = segments
        self.delay_s = delay_s
        self.fail = fail
        self.batches: list[tuple[int, npt.NDArray[np.float32]]] = []  # (stage, rows run)
        self._lock = threading.Lock()

    def run(self, k: int, x: Hidden) -> SegmentOutput:
        assert isinstance(x, np.ndarray)
        with self._lock:
            self.batches.append((k, x.copy()))
        time.sleep(self.delay_s(k))
        if self.fail(k, x):
            raise RuntimeError("injected segment failure")
        probs = np.full((len(x), CLASSES), 1.0 / CLASSES, dtype=np.float32)
        here = x[:, 0].astype(int) == k
        probs[here] = 0.1 / (CLASSES - 1)
        probs[here, x[here, 1].astype(int)] = 0.9
        last = k == self.segments - 1
        return SegmentOutput(probs=probs, hidden=None if last else x.copy())

    def take(self, x: Hidden, rows: npt.NDArray[np.int64]) -> Hidden:
        assert isinstance(x, np.ndarray)
        return x[rows]

    def select(self, parts: Sequence[tuple[Hidden, npt.NDArray[np.int64] | None]]) -> Hidden:
        return np.concatenate([np.asarray(x if r is None else x[r]) for x, r in parts])

    def tags_run(self, stage: int) -> set[float]:
        """Every tag that some batch of `stage` ran."""
        return {round(float(t), 3) for k, x in self.batches if k == stage for t in x[:, 2]}
