"""Every Prometheus metric the server exports, recorded into a registry passed in.

Labels stay bounded: model/version only for models that are loaded (the data plane resolves
names before recording), exit/segment/stage indices, endpoint route names and status codes.
The v2 `/stats` endpoint reads the same series back through `get_sample_value`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latencies here run from ~100 µs (one small segment on a GPU) to seconds (overload).
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
UNKNOWN = "_unknown"


class Metrics:
    """The server's metric families; one instance per app, never module globals."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        mv = ["model", "version"]
        self.requests = Counter(
            "exitserve_requests",
            "Requests answered, by endpoint and status code",
            ["model", "endpoint", "code"],
            registry=registry,
        )
        self.request_latency = Histogram(
            "exitserve_request_duration_seconds",
            "End-to-end request latency in the server",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.samples = Counter(
            "exitserve_samples",
            "Samples answered, by the exit that answered them",
            [*mv, "exit"],
            registry=registry,
        )
        self.segment_latency = Histogram(
            "exitserve_segment_compute_seconds",
            "Time one segment run takes (a whole batch)",
            [*mv, "segment"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "exitserve_queue_wait_seconds",
            "Time a sample waits in a stage queue for its batch",
            [*mv, "stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "exitserve_batch_size",
            "Samples per segment run",
            [*mv, "stage"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "exitserve_queue_depth",
            "Samples waiting in a stage queue",
            [*mv, "stage"],
            registry=registry,
        )
        self.inflight = Gauge(
            "exitserve_inflight_requests",
            "Requests accepted and not yet answered",
            ["model"],
            registry=registry,
        )
        self.compute_used = Counter(
            "exitserve_compute_used_macs",
            "MACs of the segments that actually ran, per sample",
            mv,
            registry=registry,
        )
        self.compute_full = Counter(
            "exitserve_compute_full_macs",
            "MACs the same samples would cost at full depth",
            mv,
            registry=registry,
        )
        self.batch_failures = Counter(
            "exitserve_batch_failures",
            "Segment runs that raised",
            [*mv, "stage"],
            registry=registry,
        )
        self.calibrated_share = Gauge(
            "exitserve_calibrated_exit_share",
            "Share of samples calibration expects per exit",
            [*mv, "exit"],
            registry=registry,
        )
        self.model_ready = Gauge(
            "exitserve_model_ready",
            "1 while a model version is loaded and serving",
            mv,
            registry=registry,
        )

    def model_loaded(
        self, model: str, version: str, calibrated_share: Sequence[float], exits: int = 0
    ) -> None:
        """Publish readiness and the calibrated exit distribution the drift alert compares to.

        Per-exit and per-stage series start at 0, so an exit no sample has reached yet, or
        a stage that never failed, reads 0 in PromQL instead of being absent.
        """
        self.model_ready.labels(model, version).set(1)
        for k, share in enumerate(calibrated_share):
            self.calibrated_share.labels(model, version, str(k)).set(share)
        for k in range(max(exits, len(calibrated_share))):
            self.samples.labels(model, version, str(k))
            self.batch_failures.labels(model, version, str(k))

    def model_unloaded(self, model: str, version: str) -> None:
        self.model_ready.labels(model, version).set(0)

    def record_exit(
        self,
        model: str,
        version: str,
        exit_index: int,
        used_macs: int,
        full_macs: int,
        count: int = 1,
    ) -> None:
        """`count` samples answered at `exit_index`, each after `used_macs` of segments."""
        self.child(self.samples, model, version, str(exit_index)).inc(count)
        self.child(self.compute_used, model, version).inc(used_macs * count)
        self.child(self.compute_full, model, version).inc(full_macs * count)

    def record_batch(
        self,
        model: str,
        version: str,
        stage: int,
        size: int,
        seconds: float,
        waits: Sequence[float],
    ) -> None:
        """One segment run: its size, its compute time and how long its samples queued."""
        s = str(stage)
        self.child(self.batch_size, model, version, s).observe(size)
        self.child(self.segment_latency, model, version, s).observe(seconds)
        hist = self.child(self.queue_wait, model, version, s)
        for w in waits:
            hist.observe(w)

    def record_request(self, model: str, endpoint: str, code: int, seconds: float) -> None:
        self.child(self.requests, model, endpoint, str(code)).inc()
        self.child(self.request_latency, model, endpoint).observe(seconds)

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: `labels` costs microseconds on every call,
        several times per request on the hot path. Series are never removed, so it stays valid."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def value(self, name: str, labels: dict[str, str]) -> float:
        """A sample's current value, 0 where the series does not exist yet."""
        return self.registry.get_sample_value(name, labels) or 0.0
