"""SIGTERM with requests in flight: readiness goes false at once, new requests get 503 with
Retry-After, every accepted request is answered correctly, then the process exits 0."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from tests.service.api.v2helpers import (
    MODEL,
    Reference,
    binary_request,
    decode_response,
    wait_for_inflight,
)
from tests.service.conftest import LiveServerFactory

IN_FLIGHT = 8
# Every sample waits this long at each stage for its batch to fill: a window to signal in.
QUEUE_DELAY_MS = 500


def test_sigterm_drains_in_flight_requests_then_exits_0(
    live_server: LiveServerFactory, reference: Reference, samples: np.ndarray
) -> None:
    args = [
        "--max-queue-delay-ms",
        str(QUEUE_DELAY_MS),
        "--max-batch-size",
        "256",
        "--drain-timeout-s",
        "20",
        "--device",
        "cpu",
    ]
    with live_server(args=args) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        infer = f"/v2/models/{MODEL}/infer"

        def send(i: int) -> httpx.Response:
            body, headers = binary_request(samples[i : i + 1], parameters={"full_depth": True})
            return c.post(infer, content=body, headers=headers)

        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            futures = [pool.submit(send, i) for i in range(IN_FLIGHT)]
            wait_for_inflight(server.metrics_url, IN_FLIGHT)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.3)  # the drain starts on uvicorn's next tick (every 0.1 s)
            ready = httpx.get(f"{server.url}/v2/health/ready", timeout=5)
            body, headers = binary_request(samples[:1])
            refused = httpx.post(f"{server.url}{infer}", content=body, headers=headers, timeout=5)
            answers = [f.result(timeout=30) for f in futures]

        assert ready.status_code == 503
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        for i, response in enumerate(answers):
            got = decode_response(response)
            want = reference.expect(samples[i : i + 1], full_depth=True)
            np.testing.assert_array_equal(got["label"], want.label)
            assert got["exit_index"].tolist() == [reference.manifest.num_exits - 1]
        assert server.process.wait(timeout=30) == 0, server.log()
        assert "Traceback" not in server.log()
