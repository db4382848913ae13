"""Serve a drifting stream through a real server, in order, and keep every sample's answer.

The fidelity benchmark needs, per sample of the stream, what the server answered (label,
exit) and when, plus the server's shadow counters at each phase boundary. Closed loop: a
fixed number of requests is always outstanding, each taking the next rows of the stream,
so the stream arrives in order and as fast as the server answers (saturation).
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
from prometheus_client.parser import text_string_to_metric_families

from loadtest.client import encode, send

SHADOWS, SHED = "exitserve_shadow_samples", "exitserve_shadow_shed"
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Answers:
    """The server's answer to every row of the stream, and when it came back."""

    label: npt.NDArray[np.int64]
    exit: npt.NDArray[np.int32]
    done_s: npt.NDArray[np.float64]  # seconds since the stream started
    errors: int  # requests that did not come back 200


@dataclass(frozen=True)
class Shadows:
    """The shadow counters of one model, per exit, at one moment."""

    run: tuple[float, ...]
    shed: float


def shadow_counters(metrics_url: str, model: str, exits: int) -> Shadows:
    """Shadow samples run (per exit they left early at) and shed so far, from /metrics."""
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    run, shed = [0.0] * exits, 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("model") != model or not s.name.endswith("_total"):
                continue
            if family.name == SHADOWS:
                run[int(s.labels["exit"])] += s.value
            elif family.name == SHED:
                shed += s.value
    return Shadows(tuple(run), shed)


def serve_stream(
    url: str,
    x: npt.NDArray[np.float32],
    per_request: int,
    concurrency: int,
    parameters: dict[str, Any] | None = None,
) -> Answers:
    """Send `x` in order, `per_request` rows per request, `concurrency` outstanding."""
    return asyncio.run(_serve(url, x, per_request, concurrency, parameters))


async def _serve(
    url: str,
    x: npt.NDArray[np.float32],
    per: int,
    concurrency: int,
    parameters: dict[str, Any] | None,
) -> Answers:
    n = len(x)
    label, exits = np.full(n, -1, np.int64), np.full(n, -1, np.int32)
    done = np.full(n, np.nan)
    dummy = np.zeros(per, np.int64)
    starts = iter(range(0, n, per))
    errors = 0
    t0 = time.perf_counter()

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        for i in starts:
            rows = slice(i, min(i + per, n))
            request = encode(x[rows], dummy[: rows.stop - i], "binary", parameters)
            reply = await send(session, url, request, TIMEOUT_S)
            done[rows] = time.perf_counter() - t0
            if reply.status != 200:
                errors += 1
                continue
            label[rows], exits[rows] = reply.labels, reply.exits

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return Answers(label, exits, done, errors)


def serve_phases(
    url: str,
    metrics_url: str,
    model: str,
    x: npt.NDArray[np.float32],
    bounds: Sequence[int],
    exits: int,
    per_request: int = 4,
    concurrency: int = 16,
) -> tuple[Answers, list[Shadows]]:
    """The stream phase by phase (boundaries `bounds`, the last one = len(x)), with the
    shadow counters read before the first phase and after each one.

    Between phases the load pauses for the few milliseconds a scrape takes, so each
    phase's shadow count is its own; the controller still sees one stream.
    """
    parts, counters = [], [shadow_counters(metrics_url, model, exits)]
    for start, stop in zip([0, *bounds[:-1]], bounds, strict=True):
        parts.append(serve_stream(url, x[start:stop], per_request, concurrency))
        counters.append(shadow_counters(metrics_url, model, exits))
    return _joined(parts), counters


def _joined(parts: list[Answers]) -> Answers:
    """One stream's answers from its phases, times continued across them."""
    offset, times = 0.0, []
    for p in parts:
        times.append(p.done_s + offset)
        offset += float(np.nanmax(p.done_s)) if len(p.done_s) else 0.0
    return Answers(
        np.concatenate([p.label for p in parts]),
        np.concatenate([p.exit for p in parts]),
        np.concatenate(times),
        sum(p.errors for p in parts),
    )
