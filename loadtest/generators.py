"""Open-loop and closed-loop load against a v2 endpoint, bounded in time and count.

Open loop sends on a fixed or Poisson schedule regardless of replies, and measures latency
from each request's *scheduled* time, so a stalled server cannot hide its queueing
(coordinated omission). Closed loop keeps N requests outstanding: it finds saturation.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import aiohttp
from tqdm import tqdm

from loadtest.client import EncodedRequest, Reply, send
from loadtest.report import Report, summarise

Arrival = Literal["fixed", "poisson"]


@dataclass(frozen=True)
class Bounds:
    """Every run stops by itself: after `duration_s` or `max_requests`, whichever is first."""

    duration_s: float = 10.0
    max_requests: int = 100_000
    timeout_s: float = 10.0
    warmup_requests: int = 0


def _connector(limit: int) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(limit=limit, force_close=False)


async def _warm(session: aiohttp.ClientSession, url: str, reqs: Sequence[EncodedRequest],
                bounds: Bounds) -> None:  # fmt: skip
    for i in range(bounds.warmup_requests):
        await send(session, url, reqs[i % len(reqs)], bounds.timeout_s)


async def closed_loop(
    url: str, requests: Sequence[EncodedRequest], concurrency: int, bounds: Bounds,
    progress: bool = True,
) -> Report:  # fmt: skip
    """`concurrency` clients, each sending its next request as soon as the last returns."""
    replies: list[Reply] = []
    labels = []
    counter = iter(range(bounds.max_requests))
    async with aiohttp.ClientSession(connector=_connector(concurrency)) as session:
        await _warm(session, url, requests, bounds)
        start = time.perf_counter()
        deadline = start + bounds.duration_s
        bar = tqdm(total=bounds.max_requests, disable=not progress, unit="req", leave=False)

        async def client() -> None:
            for i in counter:
                if time.perf_counter() >= deadline:
                    return
                req = requests[i % len(requests)]
                replies.append(await send(session, url, req, bounds.timeout_s))
                labels.append(req.labels)
                bar.update()

        await asyncio.gather(*(client() for _ in range(concurrency)))
        bar.close()
        elapsed = time.perf_counter() - start
    return summarise(replies, labels, elapsed)


async def open_loop(
    url: str, requests: Sequence[EncodedRequest], rate: float, bounds: Bounds,
    arrival: Arrival = "poisson", seed: int = 0, progress: bool = True,
) -> Report:  # fmt: skip
    """Requests at `rate` per second (fixed spacing or Poisson), latency from schedule."""
    rng = random.Random(seed)
    total = min(bounds.max_requests, max(1, int(rate * bounds.duration_s)))
    replies: list[Reply] = []
    labels = []
    async with aiohttp.ClientSession(connector=_connector(0)) as session:
        await _warm(session, url, requests, bounds)
        bar = tqdm(total=total, disable=not progress, unit="req", leave=False)

        async def one(i: int, scheduled: float) -> None:
            req = requests[i % len(requests)]
            reply = await send(session, url, req, bounds.timeout_s)
            reply.latency_s = time.perf_counter() - scheduled  # includes time spent late
            replies.append(reply)
            labels.append(req.labels)
            bar.update()

        start = time.perf_counter()
        tasks, at = [], start
        for i in range(total):
            at += rng.expovariate(rate) if arrival == "poisson" else 1.0 / rate
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i, at)))
        await asyncio.gather(*tasks)
        bar.close()
        elapsed = time.perf_counter() - start
    return summarise(replies, labels, elapsed)
