"""Open-loop and closed-loop load against a v2 endpoint, bounded in time and count.

Open loop sends on a fixed or Poisson schedule regardless of replies, and measures latency
from each request's *scheduled* time, so a stalled server cannot hide its queueing
(coordinated omission). Closed loop keeps N requests outstanding: it finds saturation.
"""

from __future__ import annotations

import asyncio
import gc
import http.client
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
from tqdm import tqdm

from loadtest.client import EncodedRequest, Reply, parse_reply, send
from loadtest.report import Report, process_cpu_s, summarise

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


async def _warm(
    session: aiohttp.ClientSession, url: str, reqs: Sequence[EncodedRequest], bounds: Bounds
) -> None:
    for i in range(bounds.warmup_requests):
        await send(session, url, reqs[i % len(reqs)], bounds.timeout_s)


async def closed_loop(
    url: str,
    requests: Sequence[EncodedRequest],
    concurrency: int,
    bounds: Bounds,
    progress: bool = True,
) -> Report:
    """`concurrency` clients, each sending its next request as soon as the last returns."""
    replies: list[Reply] = []
    labels = []
    counter = iter(range(bounds.max_requests))
    async with aiohttp.ClientSession(connector=_connector(concurrency)) as session:
        await _warm(session, url, requests, bounds)
        cpu, start = process_cpu_s(), time.perf_counter()
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
        elapsed, cpu = time.perf_counter() - start, process_cpu_s() - cpu
    return summarise(replies, labels, elapsed, cpu)


async def open_loop(
    url: str,
    requests: Sequence[EncodedRequest],
    rate: float,
    bounds: Bounds,
    arrival: Arrival = "poisson",
    seed: int = 0,
    progress: bool = True,
) -> Report:
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

        cpu, start = process_cpu_s(), time.perf_counter()
        tasks, at = [], start
        for i in range(total):
            at += rng.expovariate(rate) if arrival == "poisson" else 1.0 / rate
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i, at)))
        await asyncio.gather(*tasks)
        bar.close()
        elapsed, cpu = time.perf_counter() - start, process_cpu_s() - cpu
    return summarise(replies, labels, elapsed, cpu)


def sequential(url: str, requests: Sequence[EncodedRequest], bounds: Bounds) -> Report:
    """One keep-alive connection, one request at a time, on the standard library's client.

    For latency at concurrency 1: http.client spends less CPU per request than an asyncio
    client, and the client's garbage collector is off while it times (as `timeit` does),
    so the figure is the server's rather than the load generator's.
    """
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port, timeout=bounds.timeout_s
    )
    replies: list[Reply] = []
    labels = []
    try:
        for i in range(bounds.warmup_requests):
            _post(conn, parts.path, requests[i % len(requests)])
        gc.disable()
        cpu, start = process_cpu_s(), time.perf_counter()
        deadline = start + bounds.duration_s
        for i in range(bounds.max_requests):
            if time.perf_counter() >= deadline:
                break
            req = requests[i % len(requests)]
            replies.append(_post(conn, parts.path, req))
            labels.append(req.labels)
        elapsed, cpu = time.perf_counter() - start, process_cpu_s() - cpu
    finally:
        gc.enable()
        conn.close()
    return summarise(replies, labels, elapsed, cpu)


def _post(conn: http.client.HTTPConnection, path: str, req: EncodedRequest) -> Reply:
    start = time.perf_counter()
    try:
        conn.request("POST", path, req.body, req.headers)
        resp = conn.getresponse()
        body = resp.read()
    except (OSError, http.client.HTTPException):
        conn.close()  # reconnects on the next request
        return Reply(0, time.perf_counter() - start)
    return parse_reply(resp.status, body, time.perf_counter() - start)


def answers(url: str, requests: Sequence[EncodedRequest], timeout_s: float = 30.0) -> list[Reply]:
    """Every request once, in order, one at a time: the answers to score and compare."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)
    try:
        return [_post(conn, parts.path, req) for req in requests]
    finally:
        conn.close()
