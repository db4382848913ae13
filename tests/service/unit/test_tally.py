"""Tallied series export exactly what prometheus_client's own inc/observe would.

The tally writes histogram buckets through prometheus_client's internals (it has no bulk
observe); comparing the exposition with a plainly observed twin catches any change there.
Counts are equal exactly; a histogram's sum to rounding, as the tally adds up its values
before it adds them to the series.
"""

from __future__ import annotations

import math
import random
import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from service.metrics import LATENCY_BUCKETS
from service.tally import Tally, counter, histogram


def exposition(registry: CollectorRegistry) -> dict[str, float]:
    """The text format's samples, but the `_created` timestamps (they differ between twins)."""
    lines = generate_latest(registry).decode().splitlines()
    samples = (line.rsplit(" ", 1) for line in lines if not line.startswith("#"))
    return {key: float(value) for key, value in samples if "_created" not in key}


def assert_same(mine: CollectorRegistry, theirs: CollectorRegistry) -> None:
    """Every sample equal; a `_sum` to rounding (the tally adds a batch's values first)."""
    got, want = exposition(mine), exposition(theirs)
    assert got.keys() == want.keys()
    for key, value in want.items():
        if "_sum" in key:
            assert math.isclose(got[key], value, rel_tol=1e-12), key
        else:
            assert got[key] == value, key


Families = tuple[Counter, Histogram, Counter, Histogram]


def twins() -> tuple[Tally, CollectorRegistry, CollectorRegistry, Families]:
    """A tallied counter and histogram, and their plainly updated twins."""
    tally, mine, theirs = Tally(), CollectorRegistry(), CollectorRegistry()
    families = (
        counter(tally, "c", "a counter", ["k"], mine),
        histogram(tally, "h", "a histogram", ["k"], LATENCY_BUCKETS, mine),
        Counter("c", "a counter", ["k"], registry=theirs),
        Histogram("h", "a histogram", ["k"], buckets=LATENCY_BUCKETS, registry=theirs),
    )
    return tally, mine, theirs, families


def test_random_observations_export_the_same_text() -> None:
    tally, mine, theirs, (c, h, c2, h2) = twins()
    rng = random.Random(7)
    for _ in range(2000):
        key = rng.choice("ab")
        value = rng.choice([0.0, 0.0001, 0.001, 30.0, 99.0, rng.expovariate(50)])  # edges too
        tally.observe(h.labels(key), value)
        h2.labels(key).observe(value)
        amount = rng.choice([1, 3, 0.5])
        tally.inc(c.labels(key), amount)
        c2.labels(key).inc(amount)
        if rng.random() < 0.01:  # reads in between fold in what came so far
            assert_same(mine, theirs)
    waits = [rng.expovariate(100) for _ in range(50)]
    tally.observe_many(h.labels("a"), waits)
    for w in waits:
        h2.labels("a").observe(w)
    assert_same(mine, theirs)


def test_every_way_of_reading_flushes_first() -> None:
    tally, mine, _, (c, h, _c2, _h2) = twins()
    tally.inc(c.labels("a"), 2)
    assert mine.get_sample_value("c_total", {"k": "a"}) == 2
    tally.observe(h.labels("a"), 0.003)
    restricted = mine.restricted_registry(["h_count"])  # /metrics?name[]=...
    assert [s.value for m in restricted.collect() for s in m.samples] == [1.0]
    tally.inc(c.labels("a"), 1)
    assert [s.value for m in c.collect() for s in m.samples if s.name == "c_total"] == [3.0]


def test_a_reader_on_another_thread_loses_nothing() -> None:
    tally, mine, _, (c, _h, _c2, _h2) = twins()
    child = c.labels("a")
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            mine.get_sample_value("c_total", {"k": "a"})

    reader = threading.Thread(target=scrape)
    reader.start()
    try:
        for _ in range(20000):
            tally.inc(child)
    finally:
        stop.set()
        reader.join()
    assert mine.get_sample_value("c_total", {"k": "a"}) == 20000
