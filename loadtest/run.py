"""`python -m loadtest.run`: drive a running exitserve with real MNIST test samples.

Loopback only: the URL's host must be a loopback address, so a typo cannot aim a load
test at someone else's machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from typing import Any
from urllib.parse import urlsplit

import click
import numpy as np

from loadtest.client import EncodedRequest, Encoding, encode
from loadtest.generators import Bounds, closed_loop, open_loop
from loadtest.report import Report
from models.data import load_mnist


def check_loopback(url: str) -> None:
    """Refuse any target that does not resolve to a loopback address."""
    host = urlsplit(url).hostname or ""
    addrs = {info[4][0] for info in socket.getaddrinfo(host, None)}
    if not addrs or not all(ipaddress.ip_address(a).is_loopback for a in addrs):
        raise click.BadParameter(f"{host!r} is not a loopback address", param_hint="--url")


def build_requests(
    batch: int, encoding: Encoding, parameters: dict[str, Any] | None, limit: int = 10_000
) -> list[EncodedRequest]:
    """Encode MNIST test samples `batch` at a time, once, before the run starts."""
    test = load_mnist("t10k")
    n = min(limit, len(test)) // batch * batch
    x, y = test.x[:n], test.y[:n]
    return [
        encode(x[i : i + batch], y[i : i + batch], encoding, parameters) for i in range(0, n, batch)
    ]


def run_load(
    url: str,
    requests: list[EncodedRequest],
    *,
    mode: str,
    concurrency: int,
    rate: float,
    bounds: Bounds,
    progress: bool = True,
) -> Report:
    """One bounded run in the given mode."""
    check_loopback(url)
    if mode == "closed":
        return asyncio.run(closed_loop(url, requests, concurrency, bounds, progress))
    return asyncio.run(open_loop(url, requests, rate, bounds, progress=progress))


@click.command()
@click.option("--url", default="http://127.0.0.1:8000/v2/models/mnist/infer", show_default=True)
@click.option("--mode", type=click.Choice(["open", "closed"]), default="closed", show_default=True)
@click.option("--concurrency", default=8, show_default=True, help="closed loop: clients")
@click.option("--rate", default=100.0, show_default=True, help="open loop: requests/s")
@click.option("--duration", default=10.0, show_default=True, help="seconds")
@click.option("--max-requests", default=100_000, show_default=True)
@click.option("--batch", default=1, show_default=True, help="samples per request")
@click.option("--encoding", type=click.Choice(["json", "binary"]), default="binary")
@click.option("--parameters", default="", help='JSON, e.g. {"full_depth": true}')
@click.option("--json-out", is_flag=True, help="print the report as JSON")
def main(
    url: str,
    mode: str,
    concurrency: int,
    rate: float,
    duration: float,
    max_requests: int,
    batch: int,
    encoding: Encoding,
    parameters: str,
    json_out: bool,
) -> None:
    """Send real MNIST test samples to exitserve and report latency, throughput and exits."""
    params = json.loads(parameters) if parameters else None
    requests = build_requests(batch, encoding, params)
    bounds = Bounds(duration_s=duration, max_requests=max_requests, warmup_requests=10)
    report = run_load(url, requests, mode=mode, concurrency=concurrency, rate=rate, bounds=bounds)
    click.echo(json.dumps(report.as_dict(), indent=2) if json_out else report.line())
    if report.ok == 0:
        raise SystemExit(1)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
