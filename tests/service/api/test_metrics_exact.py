"""The series a real server exports after known traffic are exact, per exit and per stage.

The hot series are summed per batch and folded into prometheus at scrape time
(service/tally.py); these tests hold them to what the answers themselves say: every sample
counted once at the exit that answered it, every request once per stage its rows reached,
every latency once, and gauges back at 0 once everything is answered.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service.api.v2helpers import MODEL, Reference, binary_request, decode_response
from tests.service.conftest import LiveServer, LiveServerFactory

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
SIZES = (1, 3, 1, 2, 4, 1, 1, 5, 2, 1, 3, 1)  # samples per request, each < max batch size


@pytest.fixture(scope="module")
def server(live_server: LiveServerFactory) -> Iterator[LiveServer]:
    """A server of its own: no other test's traffic, no shadows (fidelity off)."""
    with live_server(args=["--device", "cpu", "--no-fidelity-enabled"]) as served:
        yield served


def scrape(server: LiveServer) -> Series:
    text = httpx.get(f"{server.metrics_url}/metrics", timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def get(series: Series, name: str, **labels: str) -> float:
    return series.get((name, frozenset(labels.items())), 0.0)


def spread(reference: Reference, x: npt.NDArray[np.float32]) -> float:
    """A confidence bar at which these samples leave at three exits or more."""
    for bar in (0.9, 0.8, 0.95, 0.7, 0.99, 0.6, 0.999):
        if len(set(reference.expect(x, "confidence", bar).exit_index.tolist())) >= 3:
            return bar
    pytest.fail("no threshold spreads these samples over three exits")


def send_one_at_a_time(
    server: LiveServer, x: npt.NDArray[np.float32], bar: float
) -> list[npt.NDArray[np.int32]]:
    """Each request alone, so each one's rows make one batch per stage they reach."""
    exits, start = [], 0
    params = {"policy": "confidence", "threshold": bar}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for n in SIZES:
            body, headers = binary_request(x[start : start + n], parameters=params)
            response = client.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
            exits.append(decode_response(response)["exit_index"])
            start += n
    return exits


def test_exits_batches_and_latencies_are_counted_exactly(
    server: LiveServer, reference: Reference, samples: npt.NDArray[np.float32]
) -> None:
    x = samples[: sum(SIZES)]
    bar = spread(reference, x)
    before = scrape(server)
    exits = send_one_at_a_time(server, x, bar)
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return get(after, name, **labels) - get(before, name, **labels)

    every = np.concatenate(exits)
    assert len(set(every.tolist())) >= 3, "the traffic must reach several exits"
    macs = [s.macs for s in reference.manifest.segments]
    mv = {"model": MODEL, "version": "1"}
    for k in range(len(macs)):
        k_ = str(k)
        assert delta("exitserve_samples_total", **mv, exit=k_) == np.sum(every == k)
        reached = sum(1 for e in exits if e.max() >= k)  # requests with rows at stage k
        assert delta("exitserve_queue_wait_seconds_count", **mv, stage=k_) == reached
        assert delta("exitserve_batch_size_count", **mv, stage=k_) == reached
        assert delta("exitserve_batch_size_sum", **mv, stage=k_) == np.sum(every >= k)
        assert delta("exitserve_segment_compute_seconds_count", **mv, segment=k_) == reached
        assert get(after, "exitserve_queue_depth", **mv, stage=k_) == 0
    used = sum(sum(macs[: e + 1]) for e in every.tolist())
    assert delta("exitserve_compute_used_macs_total", **mv) == used
    assert delta("exitserve_compute_full_macs_total", **mv) == len(every) * sum(macs)
    assert delta("exitserve_inference_duration_seconds_count", **mv, code="200") == len(SIZES)
    request = {"model": MODEL, "endpoint": "infer"}
    assert delta("exitserve_requests_total", **request, code="200") == len(SIZES)
    assert delta("exitserve_request_duration_seconds_count", **request) == len(SIZES)
    assert get(after, "exitserve_inflight_requests", model=MODEL) == 0


@pytest.mark.parametrize(
    ("family", "labels"),
    [
        ("exitserve_request_duration_seconds", {"model": MODEL, "endpoint": "infer"}),
        ("exitserve_inference_duration_seconds", {"model": MODEL, "version": "1", "code": "200"}),
        ("exitserve_queue_wait_seconds", {"model": MODEL, "version": "1", "stage": "0"}),
        ("exitserve_batch_size", {"model": MODEL, "version": "1", "stage": "0"}),
    ],
)
def test_histograms_are_whole_after_a_scrape(
    server: LiveServer,
    reference: Reference,
    samples: npt.NDArray[np.float32],
    family: str,
    labels: dict[str, str],
) -> None:
    """Buckets rise with `le`, the +Inf bucket is the count, the sum is positive."""
    send_one_at_a_time(server, samples, spread(reference, samples[: sum(SIZES)]))
    series = scrape(server)
    buckets = sorted(
        (float(dict(key)["le"]), value)
        for (name, key), value in series.items()
        if name == f"{family}_bucket" and labels.items() <= dict(key).items()
    )
    counts = [value for _, value in buckets]
    assert counts == sorted(counts)
    assert buckets[-1][0] == float("inf")
    assert counts[-1] == get(series, f"{family}_count", **labels) > 0
    assert get(series, f"{family}_sum", **labels) > 0
