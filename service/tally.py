"""Counter and histogram updates summed in plain dicts, folded into prometheus at read time.

A prometheus_client `inc` or `observe` takes a lock and several Python calls (1-2 µs); at
one sample per request the server made about 14 of them per request. The hot families
record here instead (a dict add, a bisect) and `flush` writes the sums into their series
whenever the registry is read: every family made by `counter`/`histogram` below flushes
before it is collected, so /metrics, `get_sample_value` and the v2 statistics never see
a stale value. The exported names, labels and values are exactly prometheus_client's.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import Metric


class Tally:
    """Pending sums per series child; written on the event loop, flushed by any reader."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a scrape may run on another thread (tests do)
        self._counts: dict[Any, float] = {}
        self._hists: dict[Any, list[float]] = {}  # child -> per-bucket counts, then the sum

    def inc(self, child: Any, amount: float = 1.0) -> None:
        """`child.inc(amount)`, deferred (a Counter child)."""
        with self._lock:
            self._counts[child] = self._counts.get(child, 0.0) + amount

    def observe(self, child: Any, value: float) -> None:
        """`child.observe(value)`, deferred (a Histogram child)."""
        self.observe_many(child, (value,))

    def observe_many(self, child: Any, values: Iterable[float]) -> None:
        """`child.observe(v)` for each value, deferred: one lock for all of them."""
        bounds = child._upper_bounds
        with self._lock:
            row = self._hists.get(child)
            if row is None:
                row = self._hists[child] = [0.0] * (len(bounds) + 1)
            for v in values:
                row[bisect_left(bounds, v)] += 1  # as observe: the first bucket with v <= bound
                row[-1] += v

    def flush(self) -> None:
        """Write the pending sums into their series (prometheus_client's own values)."""
        with self._lock:
            counts, self._counts = self._counts, {}
            hists, self._hists = self._hists, {}
        for child, amount in counts.items():
            child.inc(amount)
        for child, row in hists.items():
            _add_to_histogram(child, row)


def _add_to_histogram(child: Any, row: Sequence[float]) -> None:
    """What `observe` would have left after the observations summed in `row`.

    Histogram has no public bulk update; its per-bucket values and sum are the same
    `inc`-able values `observe` increments (tests/service/unit/test_tally.py compares the
    exposition with prometheus_client's own observe, so a change there cannot go unseen).
    """
    child._sum.inc(row[-1])
    for i, count in enumerate(row[:-1]):
        if count:
            child._buckets[i].inc(count)


class TalliedCounter(Counter):
    """A Counter that folds in its tally before it is collected."""

    tally: Tally | None = None

    def collect(self) -> Iterable[Metric]:
        if self.tally is not None:
            self.tally.flush()
        return super().collect()


class TalliedHistogram(Histogram):
    """A Histogram that folds in its tally before it is collected."""

    tally: Tally | None = None

    def collect(self) -> Iterable[Metric]:
        if self.tally is not None:
            self.tally.flush()
        return super().collect()


def counter(
    tally: Tally, name: str, doc: str, labels: Sequence[str], registry: CollectorRegistry
) -> TalliedCounter:
    family = TalliedCounter(name, doc, labels, registry=registry)
    family.tally = tally
    return family


def histogram(
    tally: Tally,
    name: str,
    doc: str,
    labels: Sequence[str],
    buckets: Sequence[float],
    registry: CollectorRegistry,
) -> TalliedHistogram:
    family = TalliedHistogram(name, doc, labels, buckets=buckets, registry=registry)
    family.tally = tally
    return family
