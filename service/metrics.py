"""Every Prometheus metric the server exports, recorded into a registry passed in.

Labels stay bounded: model/version only for models that are loaded (the data plane resolves
names before recording; `forget` removes a version's series when it is unloaded),
exit/segment/stage indices, endpoint route names and status codes. The v2 `/stats` endpoint
reads the same series back, plus a small per-version `TritonTotals` for the two things
Triton reports that have no series here (see `TritonTotals`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics import MetricWrapperBase

from service.fidelity_metrics import FidelityMetrics
from service.tally import Tally, counter, histogram

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


@dataclass
class TritonTotals:
    """What Triton's statistics need beyond the exported series, for one model version.

    `phases` are the request-credited seconds of (compute_input, compute_infer,
    compute_output): like Triton, every request whose rows are in a batch is credited
    that batch's whole phase times, so a request's credit sums over the batches (at every
    stage) that carried its rows. `sizes` maps a segment run's batch size to [runs, input
    s, infer s, output s] in machine time: per-size series would break the label budget.
    Written per batch on the event loop, never per request or per sample.
    """

    phases: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    sizes: dict[int, list[float]] = field(default_factory=dict)


class Metrics(FidelityMetrics):
    """The server's metric families; one instance per app, never module globals."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.triton: dict[tuple[str, str], TritonTotals] = {}
        self.tally = tally = Tally()
        mv = ["model", "version"]
        self.requests = counter(
            tally,
            "exitserve_requests",
            "Requests answered, by endpoint and status code",
            ["model", "endpoint", "code"],
            registry,
        )
        self.request_latency = histogram(
            tally,
            "exitserve_request_duration_seconds",
            "End-to-end request latency in the server",
            ["model", "endpoint"],
            LATENCY_BUCKETS,
            registry,
        )
        self.inference_latency = histogram(
            tally,
            "exitserve_inference_duration_seconds",
            "Inference requests from admission at stage 0 to their answer, by status code",
            [*mv, "code"],
            LATENCY_BUCKETS,
            registry,
        )
        self.samples = counter(
            tally,
            "exitserve_samples",
            "Samples answered, by the exit that answered them",
            [*mv, "exit"],
            registry,
        )
        self.segment_latency = histogram(
            tally,
            "exitserve_segment_compute_seconds",
            "Time one segment run takes (a whole batch)",
            [*mv, "segment"],
            LATENCY_BUCKETS,
            registry,
        )
        self.queue_wait = histogram(
            tally,
            "exitserve_queue_wait_seconds",
            "Time a request's rows wait in a stage queue for their batch (once per batch)",
            [*mv, "stage"],
            LATENCY_BUCKETS,
            registry,
        )
        self.batch_size = histogram(
            tally,
            "exitserve_batch_size",
            "Samples per segment run",
            [*mv, "stage"],
            BATCH_BUCKETS,
            registry,
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
        self.compute_used = counter(
            tally,
            "exitserve_compute_used_macs",
            "MACs of the segments that actually ran, per sample",
            mv,
            registry,
        )
        self.compute_full = counter(
            tally,
            "exitserve_compute_full_macs",
            "MACs the same samples would cost at full depth",
            mv,
            registry,
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
        self._fidelity_families(registry, [*mv, "exit"])

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

    def forget(self, model: str, versions: Iterable[str]) -> None:
        """Remove every series of unloaded versions, so version churn cannot grow /metrics.

        `exitserve_model_ready` stays (at 0): the not-ready alert takes the max over a
        model's versions, and a model whose last version was unloaded must still read 0.
        Call after the versions' pipelines are closed: nothing records into them after.
        """
        gone = set(versions)
        for family in vars(self).values():
            if not isinstance(family, MetricWrapperBase) or family is self.model_ready:
                continue
            names = list(family._labelnames)
            if names[:2] != ["model", "version"]:
                continue
            stale = {
                tuple(s.labels[n] for n in names)
                for metric in family.collect()
                for s in metric.samples
                if s.labels.get("model") == model and s.labels.get("version") in gone
            }
            for key in stale:
                family.remove(*key)
        # Dropping a cached child of another family too only costs it one `labels` call.
        self._children = {
            key: c
            for key, c in self._children.items()
            if not (key[1][:1] == (model,) and key[1][1:2] and key[1][1] in gone)
        }
        for version in gone:
            self.triton.pop((model, version), None)

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
        tally = self.tally
        tally.inc(self.child(self.samples, model, version, str(exit_index)), count)
        tally.inc(self.child(self.compute_used, model, version), used_macs * count)
        tally.inc(self.child(self.compute_full, model, version), full_macs * count)

    def record_batch(
        self,
        model: str,
        version: str,
        stage: int,
        size: int,
        seconds: float,
        waits: Sequence[float],
        input_s: float = 0.0,
        output_s: float = 0.0,
    ) -> None:
        """One segment run: its size, its phase times and how long its requests queued.

        `waits` holds one wait per request in the batch; `seconds` is the segment run,
        `input_s` the batch's assembly before it and `output_s` the exit decisions, answers
        and survivor gather after it.
        """
        s, tally = str(stage), self.tally
        tally.observe(self.child(self.batch_size, model, version, s), size)
        tally.observe(self.child(self.segment_latency, model, version, s), seconds)
        tally.observe_many(self.child(self.queue_wait, model, version, s), waits)
        totals = self.triton.get((model, version))
        if totals is None:
            totals = self.triton[(model, version)] = TritonTotals()
        requests, phases = len(waits), totals.phases
        phases[0] += input_s * requests
        phases[1] += seconds * requests
        phases[2] += output_s * requests
        row = totals.sizes.get(size)
        if row is None:
            row = totals.sizes[size] = [0, 0.0, 0.0, 0.0]
        row[0] += 1
        row[1] += input_s
        row[2] += seconds
        row[3] += output_s

    def record_inference(self, model: str, version: str, code: int, seconds: float) -> None:
        """One inference request of a loaded version answered (200) or failed (its status)."""
        self.tally.observe(self.child(self.inference_latency, model, version, str(code)), seconds)

    def record_request(self, model: str, endpoint: str, code: int, seconds: float) -> None:
        self.tally.inc(self.child(self.requests, model, endpoint, str(code)))
        self.tally.observe(self.child(self.request_latency, model, endpoint), seconds)

    def watch_gauge(self, metric: Gauge, read: Callable[[], float], *labels: str) -> None:
        """The series reads `read()` at scrape time: for a value the server keeps anyway,
        so nothing is written on each change (`forget` still removes it)."""
        self.child(metric, *labels).set_function(read)

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: `labels` costs microseconds on every call,
        several times per request on the hot path. `forget` drops the children it removes."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def value(self, name: str, labels: dict[str, str]) -> float:
        """A sample's current value, 0 where the series does not exist yet."""
        return self.registry.get_sample_value(name, labels) or 0.0
