"""Slow and oversized clients: slowloris, a huge streamed header, and the latency of normal
requests while someone streams huge headers."""

from __future__ import annotations

import http.client
import multiprocessing
import socket
import statistics
import time
import urllib.request
from collections.abc import Callable
from multiprocessing.sharedctypes import Synchronized

import numpy as np

from loadtest.abuse import Row, Target, check
from loadtest.client import encode
from loadtest.soak import rss_mb

PARTIAL_HEAD = b"GET /v2/health/live HTTP/1.1\r\nHost: abuse\r\nX-Slow: "
CHUNK = b"h" * (64 << 10)


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


def hold_partial_heads(
    host: str, port: int, n: int, wait_s: float, meanwhile: Callable[[], None] = lambda: None
) -> tuple[int, int]:
    """Open `n` connections that never finish their head, run `meanwhile`, wait `wait_s`:
    (how many are still open, how many were answered 408)."""
    socks = [socket.create_connection((host, port)) for _ in range(n)]
    for sock in socks:
        sock.sendall(PARTIAL_HEAD)
    meanwhile()
    time.sleep(wait_s)
    gone = [s for s in socks if not still_open(s)]
    answered = sum(_first_line(s).startswith(b"HTTP/1.1 408") for s in gone)
    for sock in socks:
        sock.close()
    return n - len(gone), answered


@check("slowloris")
def slowloris(target: Target) -> list[Row]:
    """N connections that never finish their head: how many survive the wait."""
    n, wait = target.options.connections, target.options.wait_s
    alive, answered = hold_partial_heads(target.host, target.port, n, wait)
    return [
        Row("slowloris", f"partial heads still open after {wait:g} s", f"{alive} of {n}"),
        Row("slowloris", "answered 408", f"{answered} of {n}"),
    ]


@check("slowloris on the metrics port")
def slowloris_metrics(target: Target) -> list[Row]:
    """The same on the metrics port, with a scrape while the connections are held."""
    n, wait, url = target.options.connections, target.options.wait_s, target.server.metrics_url
    scraped: list[str] = []

    def scrape() -> None:
        try:
            with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
                scraped.append(str(response.status))
        except OSError as exc:
            scraped.append(type(exc).__name__)

    port = int(url.rsplit(":", 1)[1])
    alive, answered = hold_partial_heads(target.host, port, n, wait, scrape)
    name = "slowloris on the metrics port"
    return [
        Row(name, f"partial heads still open after {wait:g} s", f"{alive} of {n}"),
        Row(name, "answered 408", f"{answered} of {n}"),
        Row(name, "a scrape while they were open", scraped[0]),
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
