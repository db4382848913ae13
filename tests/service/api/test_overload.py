"""Load shedding: with the stage queue full, or too many bytes in flight, a new request is
refused at once with 429 and Retry-After (never queued without bound, never a 5xx), and
the accepted ones are answered.

Overload here does not depend on the machine's speed. Each server holds its first batch
for HOLD_MS: its queue limit is below its batch size, so a batch can never fill and runs
only when its oldest request has waited the full max_queue_delay_ms. Whatever a faster CPU
does, nothing leaves the queue during that window, so a request arriving in it finds the
queue (or the byte budget) as full as the test made it. The only work that must fit in
the window is the client's own few loopback requests (milliseconds), so a machine 10x
slower still has a wide margin, and one 10x faster only widens it.
"""

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
HOLD_MS = 1000  # max_queue_delay_ms's ceiling: how long a batch that cannot fill waits
BATCH = 256  # above every queue limit used here: a batch never fills, it waits HOLD_MS
INFER = f"/v2/models/{MODEL}/infer"


def holding(*extra: str) -> list[str]:
    """Server flags under which the first batch waits HOLD_MS, whatever the CPU's speed."""
    batching = ["--max-queue-delay-ms", str(HOLD_MS), "--max-batch-size", str(BATCH)]
    return [*batching, "--device", "cpu", *extra]


def post(client: httpx.Client, x: np.ndarray) -> httpx.Response:
    body, headers = binary_request(x)
    return client.post(INFER, content=body, headers=headers)


def test_full_queue_sheds_with_429_and_retry_after(
    live_server: LiveServerFactory, reference: Reference, samples: np.ndarray
) -> None:
    """One request fills stage 0's queue; the next, sent while it waits, is shed."""
    args = holding("--max-queue-samples", str(QUEUE_LIMIT))
    with live_server(args=args) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        first = samples[:QUEUE_LIMIT]
        with ThreadPoolExecutor(1) as pool:
            accepted = pool.submit(post, c, first)
            wait_for_inflight(server.metrics_url, 1)
            shed = post(c, samples[QUEUE_LIMIT : QUEUE_LIMIT + 1])
            answer = accepted.result(timeout=30)

        assert shed.status_code == 429, shed.text
        assert int(shed.headers["retry-after"]) >= 1
        assert "overloaded" in shed.json()["error"]
        assert "samples queued" in shed.json()["error"]
        want = reference.expect(first).label.tolist()
        assert decode_response(answer)["label"].tolist() == want
        assert post(c, samples[QUEUE_LIMIT : QUEUE_LIMIT + 1]).status_code == 200  # room again
        assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200


def test_bytes_in_flight_are_bounded_not_just_rows(
    live_server: LiveServerFactory, reference: Reference, samples: np.ndarray
) -> None:
    """With room for thousands of queued rows, the byte budget still sheds: a row is
    charged its input plus the model's largest hidden state, so two rows fit and a third
    does not. A request that could never fit is a 413, not a 429 to retry forever."""
    manifest = reference.manifest
    per_row = 4 * (
        int(np.prod(manifest.input.shape))
        + max(int(np.prod(s.hidden_output.shape)) for s in manifest.segments if s.hidden_output)
    )
    budget = 2 * per_row + per_row // 2  # the answer rows (~60 B) fit in the half row spare
    args = holding("--max-inflight-bytes", str(budget), "--max-queue-samples", "4096")
    with live_server(args=args) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        too_big = post(c, samples[:3])
        assert too_big.status_code == 413, too_big.text
        assert "max_inflight_bytes" in too_big.json()["error"]

        with ThreadPoolExecutor(1) as pool:
            accepted = pool.submit(post, c, samples[:2])
            wait_for_inflight(server.metrics_url, 1)
            shed = post(c, samples[2:3])
            answer = accepted.result(timeout=30)

        assert shed.status_code == 429, shed.text
        assert int(shed.headers["retry-after"]) >= 1
        assert "bytes in flight" in shed.json()["error"]
        want = reference.expect(samples[:2]).label.tolist()
        assert decode_response(answer)["label"].tolist() == want
        again = post(c, samples[2:3])  # the first request's bytes were given back
        assert again.status_code == 200, again.text
        third = reference.expect(samples[2:3]).label.tolist()
        assert decode_response(again)["label"].tolist() == third


def test_open_loop_at_several_times_capacity_sheds_cleanly(
    live_server: LiveServerFactory, reference: Reference, mnist_samples
) -> None:
    """A Poisson burst far past capacity: only 200/429/503, and every 200 is right.

    Capacity is set by the configuration, not the CPU: at most 64 samples (4 requests)
    are admitted per HOLD_MS window, while the burst offers 6400 samples in about a
    second, so requests 5 and on of each window are shed on any machine.
    """
    x = np.ascontiguousarray(mnist_samples[0][:128])
    want = reference.expect(x).label
    batch, n_requests, rate = 16, 400, 400.0  # 6400 samples/s offered for one second
    args = holding("--max-queue-samples", "64")
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
        asyncio.run(burst(f"{server.url}{INFER}"))
        assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200
    counts = {s: statuses.count(s) for s in set(statuses)}
    assert len(statuses) == n_requests
    assert set(counts) <= {200, 429, 503}, counts
    assert counts.get(429, 0) > 0, f"never overloaded: {counts}"
    assert counts.get(200, 0) > 0, counts
    assert wrong == 0
