"""`python -m loadtest.abuse`: what hostile or careless clients do to a real server.

Starts `exitserve serve` on the bundled models (its own defaults unless --server-arg says
otherwise), runs the checks and prints one markdown table for docs/reliability.md.

Checks live in CHECKS: to add one, write `def my_check(target: Target) -> list[Row]` and
decorate it with `@check("name")` (in this module, or in one imported by it). Each check
gets a fresh connection state but shares the server, so a check should leave it idle.
"""

from __future__ import annotations

import http.client
import multiprocessing
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

import click
import numpy as np

from loadtest.client import encode
from loadtest.server import LiveServer, running_server
from loadtest.soak import rss_mb
from models.paths import bundled_repository

PARTIAL_HEAD = b"GET /v2/health/live HTTP/1.1\r\nHost: abuse\r\nX-Slow: "
CHUNK = b"h" * (64 << 10)


@dataclass(frozen=True)
class Options:
    connections: int  # slowloris connections
    wait_s: float  # how long slowloris connections are given before counting
    header_mib: int  # size of the huge streamed header
    requests: int  # normal requests per latency sample
    model: str


@dataclass(frozen=True)
class Target:
    server: LiveServer
    host: str
    port: int
    options: Options


@dataclass(frozen=True)
class Row:
    check: str
    measure: str
    value: str


Check = Callable[[Target], list[Row]]
CHECKS: dict[str, Check] = {}


def check(name: str) -> Callable[[Check], Check]:
    """Register a check under `name` (the order of registration is the order of the table)."""

    def register(fn: Check) -> Check:
        CHECKS[name] = fn
        return fn

    return register


def still_open(sock: socket.socket) -> bool:
    """Whether the server has neither answered nor closed this connection."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False  # an answer, or the end of the stream


@check("slowloris")
def slowloris(target: Target) -> list[Row]:
    """N connections that never finish their head: how many survive the wait."""
    n, wait = target.options.connections, target.options.wait_s
    socks = [socket.create_connection((target.host, target.port)) for _ in range(n)]
    for sock in socks:
        sock.sendall(PARTIAL_HEAD)
    time.sleep(wait)
    gone = [s for s in socks if not still_open(s)]
    alive = n - len(gone)
    answered = sum(_first_line(s).startswith(b"HTTP/1.1 408") for s in gone)
    for sock in socks:
        sock.close()
    return [
        Row("slowloris", f"partial heads still open after {wait:g} s", f"{alive} of {n}"),
        Row("slowloris", "answered 408", f"{answered} of {n}"),
    ]


def _first_line(sock: socket.socket) -> bytes:
    sock.settimeout(0.5)
    try:
        return sock.recv(64).split(b"\r\n", 1)[0]
    except OSError:
        return b""


def stream_header(sock: socket.socket, total: int) -> tuple[int, str]:
    """Send one header of `total` bytes, unfinished: (bytes sent, what the server did)."""
    sent = 0
    try:
        sock.sendall(PARTIAL_HEAD)
        while sent < total:
            sock.sendall(CHUNK)
            sent += len(CHUNK)
    except OSError as exc:
        return sent, _first_line(sock).decode(errors="replace") or type(exc).__name__
    return sent, "nothing: it took the whole header"


@check("huge header")
def huge_header(target: Target) -> list[Row]:
    """One client streams a huge header and keeps it unfinished: answer and server memory."""
    pid, total = target.server.process.pid, target.options.header_mib << 20
    before = rss_mb(pid)
    with socket.create_connection((target.host, target.port)) as sock:
        sent, answer = stream_header(sock, total)
        after = rss_mb(pid)  # the connection is still open: what it holds now
    return [
        Row("huge header", f"{target.options.header_mib} MiB header: server answered", answer),
        Row("huge header", "bytes it could send (until closed; incl. socket buffers)", _mib(sent)),
        Row("huge header", "server RSS before / with it open", f"{before:.0f} / {after:.0f} MB"),
    ]


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _keep_streaming(host: str, port: int, total: int, cut_off: Synchronized[int]) -> None:
    """An attacker process: stream huge headers, reconnecting whenever cut off."""
    while True:
        try:
            with socket.create_connection((host, port)) as sock:
                sent, _ = stream_header(sock, total)
        except OSError:
            time.sleep(0.01)
            continue
        if sent < total:
            with cut_off.get_lock():
                cut_off.value += 1


def latencies_ms(target: Target) -> list[float]:
    """Sequential 1-sample binary inferences on one keep-alive connection."""
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    req = encode(x, np.zeros(1, dtype=np.int64), "binary", None)
    conn = http.client.HTTPConnection(target.host, target.port, timeout=120)
    path, out = f"/v2/models/{target.options.model}/infer", []
    for _ in range(target.options.requests):
        start = time.perf_counter()
        conn.request("POST", path, body=req.body, headers=req.headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"normal request answered {resp.status}")
        out.append((time.perf_counter() - start) * 1000)
    conn.close()
    return out


@check("latency under a huge header")
def latency_under_huge_header(target: Target) -> list[Row]:
    """Normal requests' latency alone, then while another process streams huge headers."""
    alone = latencies_ms(target)
    total, cut_off = target.options.header_mib << 20, multiprocessing.Value("i", 0)
    attacker = multiprocessing.Process(
        target=_keep_streaming, args=(target.host, target.port, total, cut_off), daemon=True
    )
    attacker.start()
    time.sleep(0.5)  # let it get going
    try:
        attacked = latencies_ms(target)
    finally:
        attacker.kill()
        attacker.join()
    name = "latency under a huge header"
    return [
        Row(name, "normal requests: median / p99, alone", _summary(alone)),
        Row(
            name,
            f"... while one client streams {target.options.header_mib} MiB headers",
            _summary(attacked),
        ),
        Row(name, "the streaming client's headers cut off meanwhile", str(cut_off.value)),
    ]


def _summary(ms: list[float]) -> str:
    p99 = float(np.percentile(ms, 99))
    return f"{statistics.median(ms):.1f} / {p99:.1f} ms (n={len(ms)})"


def render(rows: list[Row], server_args: tuple[str, ...]) -> str:
    setup = " ".join(server_args) or "defaults"
    lines = [
        f"`python -m loadtest.abuse` (server settings: {setup}; bundled models, loopback)",
        "",
        "| check | measure | value |",
        "|---|---|---|",
    ]
    lines += [f"| {r.check} | {r.measure} | {r.value} |" for r in rows]
    return "\n".join(lines)


@click.command()
@click.option("--only", multiple=True, type=click.Choice(list(CHECKS)), help="run these checks")
@click.option("--connections", default=200, show_default=True, help="slowloris connections")
@click.option(
    "--wait-s",
    default=12.0,
    show_default=True,
    help="slowloris wait before counting (header_timeout_s default 10 s + margin)",
)
@click.option("--header-mib", default=100, show_default=True, help="size of the huge header")
@click.option("--requests", default=200, show_default=True, help="normal requests per sample")
@click.option("--model", default="mnist", show_default=True)
@click.option("--server-arg", "server_args", multiple=True, help="extra `serve` flag (repeat)")
def main(
    only: tuple[str, ...],
    connections: int,
    wait_s: float,
    header_mib: int,
    requests: int,
    model: str,
    server_args: tuple[str, ...],
) -> None:
    """Run the abuse checks against a fresh server and print a markdown table."""
    options = Options(connections, wait_s, header_mib, requests, model)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        args = ["--device", "cpu", *server_args]
        with running_server(bundled_repository(), Path(tmp), args) as server:
            host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
            for name in only or list(CHECKS):
                click.echo(f"running {name} ...", err=True)
                rows += CHECKS[name](Target(server, host, port, options))
    click.echo(render(rows, tuple(args)))


if __name__ == "__main__":
    main()
