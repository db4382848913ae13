"""Load shedding: with the stage queue full, a new request is refused at once with 429 and
Retry-After (never queued without bound, never a 5xx), and the accepted ones are answered."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import httpx
import numpy as np

from loadtest.client import encode, send
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
    args = [
        "--max-queue-samples",
        str(QUEUE_LIMIT),
        "--max-queue-delay-ms",
        "500",
        "--max-batch-size",
        "256",
        "--device",
        "cpu",
    ]
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


def test_open_loop_at_several_times_capacity_sheds_cleanly(
    live_server: LiveServerFactory, reference: Reference, mnist_samples
) -> None:
    """A Poisson burst far past capacity: only 200/429/503, and every 200 is right."""
    x = np.ascontiguousarray(mnist_samples[0][:128])
    want = reference.expect(x).label
    batch, n_requests, rate = 16, 400, 400.0  # 6400 samples/s offered for one second
    args = ["--max-queue-samples", "64", "--device", "cpu"]
    statuses: list[int] = []
    wrong = 0

    async def burst(url: str) -> None:
        nonlocal wrong
        rng = np.random.default_rng(0)
        async with aiohttp.ClientSession() as session:

            async def one(i: int, delay: float) -> None:
                nonlocal wrong
                await asyncio.sleep(delay)
                lo = (i * batch) % len(x)
                req = encode(x[lo : lo + batch], want[lo : lo + batch], "json")
                reply = await send(session, url, req, timeout_s=30.0)
                statuses.append(reply.status)
                wrong += reply.status == 200 and reply.labels != want[lo : lo + batch].tolist()

            delays = np.cumsum(rng.exponential(1.0 / rate, n_requests))
            await asyncio.gather(*(one(i, d) for i, d in enumerate(delays)))

    with live_server(args=args) as server:
        asyncio.run(burst(f"{server.url}/v2/models/{MODEL}/infer"))
        assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200
    counts = {s: statuses.count(s) for s in set(statuses)}
    assert len(statuses) == n_requests
    assert set(counts) <= {200, 429, 503}, counts
    assert counts.get(429, 0) > 0, f"never overloaded: {counts}"
    assert counts.get(200, 0) > 0, counts
    assert wrong == 0
