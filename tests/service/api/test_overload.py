"""Load shedding: with the stage queue full, a new request is refused at once with 429 and
Retry-After (never queued without bound, never a 5xx), and the accepted ones are answered."""

from __future__ import annotations

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

QUEUE_LIMIT = 4


def test_full_queue_sheds_with_429_and_retry_after(
    live_server: LiveServerFactory, reference: Reference, samples: np.ndarray
) -> None:
    args = ["--max-queue-samples", str(QUEUE_LIMIT), "--max-queue-delay-ms", "500",
            "--max-batch-size", "256", "--device", "cpu"]  # fmt: skip
    with live_server(args=args) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        infer = f"/v2/models/{MODEL}/infer"

        def send(i: int) -> httpx.Response:
            body, headers = binary_request(samples[i : i + 1])
            return c.post(infer, content=body, headers=headers)

        with ThreadPoolExecutor(QUEUE_LIMIT) as pool:
            accepted = [pool.submit(send, i) for i in range(QUEUE_LIMIT)]
            wait_for_inflight(server.metrics_url, QUEUE_LIMIT)
            shed = send(QUEUE_LIMIT)
            answers = [f.result(timeout=30) for f in accepted]

        assert shed.status_code == 429, shed.text
        assert int(shed.headers["retry-after"]) >= 1
        assert "overloaded" in shed.json()["error"]
        for i, response in enumerate(answers):
            want = reference.expect(samples[i : i + 1])
            assert decode_response(response)["label"].tolist() == want.label.tolist()
        assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200
