"""What a scheduling mode did with the rows it was given, read from the server's /metrics.

Batch sizes per stage come from the `exitserve_batch_size` histogram, samples answered
from `exitserve_samples_total`; a measurement is the difference of two scrapes taken
around it, so warm-up traffic and earlier measurements on the same server drop out.
Rounds are pooled by summing counts, not by averaging their shares.
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

BATCH = "exitserve_batch_size"
SAMPLES = "exitserve_samples_total"


@dataclass(frozen=True)
class Scrape:
    """One model's cumulative counters at one moment, keyed by stage (or exit) index."""

    buckets: dict[int, dict[float, float]] = field(default_factory=dict)  # stage: {le: runs}
    rows: dict[int, float] = field(default_factory=dict)  # stage: rows run (_sum)
    runs: dict[int, float] = field(default_factory=dict)  # stage: segment runs (_count)
    exits: dict[int, float] = field(default_factory=dict)  # exit: samples answered


def parse(text: str, model: str) -> Scrape:
    """The batch-size histogram and exit counters of `model` in a Prometheus exposition."""
    got = Scrape()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("model") != model:
                continue
            if s.name == SAMPLES:
                k = int(s.labels["exit"])
                got.exits[k] = got.exits.get(k, 0.0) + s.value
            elif s.name == f"{BATCH}_bucket":
                le = float(s.labels["le"])  # "+Inf" parses to inf
                got.buckets.setdefault(int(s.labels["stage"]), {})[le] = s.value
            elif s.name == f"{BATCH}_sum":
                got.rows[int(s.labels["stage"])] = s.value
            elif s.name == f"{BATCH}_count":
                got.runs[int(s.labels["stage"])] = s.value
    return got


def scrape(metrics_url: str, model: str, timeout_s: float = 10.0) -> Scrape:
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=timeout_s) as resp:
        return parse(resp.read().decode(), model)


def settled(metrics_url: str, model: str, timeout_s: float = 5.0) -> Scrape:
    """A scrape once the answered-sample count holds still for a tick: a load generator that
    stops (wrk at its deadline) can leave requests the server is still answering."""
    last, deadline = scrape(metrics_url, model), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = scrape(metrics_url, model)
        if now.exits == last.exits and now.runs == last.runs:
            return now
        last = now
    return last


@dataclass(frozen=True)
class Batches:
    """Between two scrapes: per stage, segment runs per batch-size bucket, rows and runs."""

    edges: list[float]  # each bucket's largest batch size; inf last
    counts: list[list[float]]  # [stage][bucket]: segment runs (not cumulative)
    rows: list[float]  # [stage]: samples' rows run
    runs: list[float]  # [stage]: segment runs
    exits: list[float]  # [exit]: samples answered

    @property
    def samples(self) -> float:
        return sum(self.exits)

    def rows_per_sample(self) -> float:
        """Segments each answered sample went through: the depth the policy sent it to."""
        return sum(self.rows) / self.samples if self.samples else math.nan

    def runs_per_sample(self) -> float:
        """Segment runs (batches) per answered sample: 1/request without batching would
        equal rows_per_sample; merging rows into batches brings it down."""
        return sum(self.runs) / self.samples if self.samples else math.nan


def between(before: Scrape, after: Scrape) -> Batches:
    """What happened from `before` to `after` (series that appeared meanwhile start at 0)."""
    stages = range(max(after.runs, default=-1) + 1)
    edges = sorted({le for b in after.buckets.values() for le in b})
    counts = []
    for k in stages:
        now, then = after.buckets.get(k, {}), before.buckets.get(k, {})
        cumulative = [now.get(le, 0.0) - then.get(le, 0.0) for le in edges]
        counts.append([c - p for c, p in zip(cumulative, [0.0, *cumulative], strict=False)])
    return Batches(
        edges=edges,
        counts=counts,
        rows=[after.rows.get(k, 0.0) - before.rows.get(k, 0.0) for k in stages],
        runs=[after.runs.get(k, 0.0) - before.runs.get(k, 0.0) for k in stages],
        exits=_diff(before.exits, after.exits),
    )


def _diff(before: dict[int, float], after: dict[int, float]) -> list[float]:
    return [after.get(k, 0.0) - before.get(k, 0.0) for k in range(max(after, default=-1) + 1)]


def bucket_labels(edges: list[float]) -> list[str]:
    """`1`, `2`, `3–4`, `5–8`, ... `>1024`: integer batch sizes each bucket holds."""
    labels, low = [], 1
    for le in edges:
        if math.isinf(le):
            labels.append(f">{low - 1}")
            continue
        high = int(le)
        labels.append(f"{high}" if high <= low else f"{low}–{high}")
        low = high + 1
    return labels


def pooled(measured: Sequence[Batches]) -> dict[str, Any]:
    """Histograms and exits summed over rounds, as percentages, and mean batch per stage."""
    if not measured:
        return {"buckets": [], "exit_pct": [], "stages": []}
    edges = measured[0].edges
    depth = max(len(b.runs) for b in measured)
    stages = []
    for k in range(depth):
        counts = [sum(_at(b.counts, k, i) for b in measured) for i in range(len(edges))]
        runs = sum(counts)
        rows = sum(b.rows[k] for b in measured if k < len(b.rows))
        stages.append(
            {
                "stage": f"{k}",
                "runs": runs,
                "mean_batch": rows / runs if runs else None,
                "run_pct": [100 * c / runs if runs else 0.0 for c in counts],
            }
        )
    exits = [sum(b.exits[k] for b in measured if k < len(b.exits)) for k in range(depth)]
    total = sum(exits)
    return {
        "buckets": bucket_labels(edges),
        "exit_pct": [100 * e / total if total else 0.0 for e in exits],
        "stages": stages,
    }


def past_first_pct(measured: Sequence[Batches]) -> float | None:
    """Share of answered samples (percent) that went on past the first exit."""
    total = sum(b.samples for b in measured)
    first = sum(b.exits[0] for b in measured if b.exits)
    return 100 * (total - first) / total if total else None


def _at(counts: list[list[float]], k: int, i: int) -> float:
    return counts[k][i] if k < len(counts) and i < len(counts[k]) else 0.0
