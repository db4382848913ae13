"""A client that hangs up stops costing compute: its rows leave the pipeline, 499 is logged."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from tests.service.api.v2helpers import MODEL, binary_request, wait_for_inflight
from tests.service.conftest import LiveServerFactory

SAMPLES = 1024  # at batch size 1 and full depth, seconds of work


def _sample_total(metrics_url: str, family: str, **labels: str) -> float:
    text = httpx.get(f"{metrics_url}/metrics", timeout=5).text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == family and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_a_client_that_hangs_up_gets_its_rows_dropped(live_server: LiveServerFactory) -> None:
    x = np.random.default_rng(0).random((SAMPLES, 1, 28, 28), dtype=np.float32)
    body, headers = binary_request(x, parameters={"full_depth": True})
    args = ["--max-batch-size", "1", "--max-samples-per-request", str(SAMPLES)]
    with live_server(args=args) as server:
        url = urlsplit(server.url)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = (
            f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: {url.hostname}\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n"
        ).encode() + body
        with socket.create_connection((url.hostname, url.port)) as sock:
            sock.sendall(request)
            wait_for_inflight(server.metrics_url, 1)
        deadline = time.monotonic() + 10
        while _sample_total(server.metrics_url, "exitserve_requests_total", code="499") < 1:
            assert time.monotonic() < deadline, "the hang-up was never noticed"
            time.sleep(0.05)
        answered = _sample_total(server.metrics_url, "exitserve_samples_total")
        time.sleep(1.0)  # had the rows kept running, they would be answered by now
        assert _sample_total(server.metrics_url, "exitserve_samples_total") == answered
        assert answered < SAMPLES
        assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200
