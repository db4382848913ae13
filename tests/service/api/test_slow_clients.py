"""Slow and oversized clients against the real server (raw sockets): a header cap (431),
deadlines for the head and the body (408), a connection cap (503 + Retry-After) and
keep-alive limits. Each answer is read from the wire; none of it depends on timing except
that a deadline passes, and every wait has a generous bound.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np
import orjson
import pytest

from tests.service.api.v2helpers import MODEL, json_request
from tests.service.conftest import LiveServer, LiveServerFactory

HEADER_CAP = 8192
DEADLINE_S = 1.0
WAIT_S = 20.0  # the longest any answer may take on a busy machine; never reached when right
MAX_CONNECTIONS = 4
MAX_REQUESTS = 3
LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n"


@pytest.fixture(scope="module")
def strict(live_server: LiveServerFactory) -> Iterator[LiveServer]:
    """A server with a small header cap and one-second deadlines."""
    args = ["--max-header-bytes", str(HEADER_CAP), "--device", "cpu"]
    for flag in ("--header-timeout-s", "--body-timeout-s", "--keep-alive-timeout-s"):
        args += [flag, str(int(DEADLINE_S))]
    with live_server(args=args) as server:
        yield server


@pytest.fixture(scope="module")
def capped(live_server: LiveServerFactory) -> Iterator[LiveServer]:
    """A server that serves few connections and few requests per connection."""
    args = ["--max-connections", str(MAX_CONNECTIONS), "--device", "cpu"]
    args += ["--max-requests-per-connection", str(MAX_REQUESTS), "--keep-alive-timeout-s", "60"]
    with live_server(args=args) as server:
        yield server


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes = field(repr=False)

    def error(self) -> str:
        return str(orjson.loads(self.body)["error"])


def connect(server: LiveServer) -> socket.socket:
    url = urlsplit(server.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=WAIT_S)
    sock.settimeout(WAIT_S)
    return sock


def read_answer(sock: socket.socket) -> Answer:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return Answer(response.status, response.headers, response.read())


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed the connection; False if it stays open WAIT_S."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def ask(server: LiveServer, request: bytes) -> tuple[Answer, bool]:
    """Send `request` on a new connection: the answer, and whether the server then closed."""
    with connect(server) as sock:
        sock.sendall(request)
        answer = read_answer(sock)
        return answer, closed_by_server(sock)


def test_a_head_over_the_cap_gets_431_and_a_big_body_does_not(
    strict: LiveServer, samples: np.ndarray
) -> None:
    body = json_request(samples[:32])
    assert len(body) > 4 * HEADER_CAP  # head and body arrive in reads beyond the cap
    padding = b"X-Pad: " + b"p" * (HEADER_CAP - 512) + b"\r\n"
    request = f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: test\r\n".encode() + padding
    request += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    served, _ = ask(strict, request + body)
    assert served.status == 200, served.body[:300]

    too_long = LIVE + b"X-Big: " + b"b" * HEADER_CAP + b"\r\n\r\n"
    refused, closed = ask(strict, too_long)
    assert refused.status == 431
    assert "max_header_bytes" in refused.error()
    assert closed


def test_an_unfinished_head_gets_408_after_its_deadline(strict: LiveServer) -> None:
    refused, closed = ask(strict, LIVE + b"X-Slow: ")
    assert refused.status == 408
    assert "header_timeout_s" in refused.error()
    assert closed


def test_a_short_body_gets_408_after_its_deadline(strict: LiveServer) -> None:
    head = f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: test\r\n".encode()
    head += b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    refused, closed = ask(strict, head + b'{"inputs": [')
    assert refused.status == 408
    assert "body_timeout_s" in refused.error()
    assert closed


def test_slowloris_connections_are_all_closed_even_while_they_trickle(
    strict: LiveServer,
) -> None:
    socks = [connect(strict) for _ in range(40)]
    for sock in socks:
        sock.sendall(LIVE + b"X-Slow: ")
    open_socks, deadline = list(socks), time.monotonic() + WAIT_S
    while open_socks and time.monotonic() < deadline:
        time.sleep(0.2)  # a byte every 0.2 s: the deadline must count from the head's start
        open_socks = [s for s in open_socks if _trickle(s)]
    for sock in socks:
        sock.close()
    assert not open_socks, f"{len(open_socks)} of {len(socks)} slow connections still open"


def _trickle(sock: socket.socket) -> bool:
    """Send one more header byte; False once the server has answered or closed."""
    try:
        sock.sendall(b"s")
        sock.settimeout(0)
        sock.recv(1)
    except BlockingIOError:
        return True  # nothing to read: neither answered nor closed
    except OSError:
        return False
    return False  # the server's answer, or the end of the stream


class Streamer(threading.Thread):
    """Streams an endless-looking header; records whether the server cut it off."""

    def __init__(self, server: LiveServer, total: int) -> None:
        super().__init__(daemon=True)
        self.server, self.total = server, total
        self.started, self.sent, self.cut_off = threading.Event(), 0, False
        self.status: int | None = None

    def run(self) -> None:
        chunk = b"h" * (64 << 10)
        with connect(self.server) as sock:
            try:
                sock.sendall(LIVE + b"X-Huge: ")
                while self.sent < self.total:
                    sock.sendall(chunk)
                    self.sent += len(chunk)
                    self.started.set()
            except OSError:
                self.cut_off = True
            finally:
                self.started.set()
            self.status = _status_if_any(sock)


def _status_if_any(sock: socket.socket) -> int | None:
    try:
        return read_answer(sock).status
    except (OSError, http.client.HTTPException):
        return None  # the reset may overtake the answer


def test_a_huge_streamed_header_is_cut_off_and_others_are_served(strict: LiveServer) -> None:
    streamer = Streamer(strict, total=64 << 20)
    streamer.start()
    assert streamer.started.wait(WAIT_S)
    answer, _ = ask(strict, LIVE + b"\r\n")
    assert answer.status == 200
    streamer.join(60)
    assert streamer.cut_off, f"the server read all {streamer.sent} bytes of one header"
    assert streamer.status in (431, None)


def test_an_idle_keep_alive_connection_is_closed(strict: LiveServer) -> None:
    with connect(strict) as sock:
        sock.sendall(LIVE + b"\r\n")
        assert read_answer(sock).status == 200
        assert closed_by_server(sock)


def test_connections_beyond_the_cap_get_503_with_retry_after(capped: LiveServer) -> None:
    held = [connect(capped) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in held:  # an answer proves the connection was admitted; it stays open
            sock.sendall(LIVE + b"\r\n")
            assert read_answer(sock).status == 200
        refused, closed = ask(capped, LIVE + b"\r\n")
    finally:
        for sock in held:
            sock.close()
    assert refused.status == 503
    assert int(refused.headers["retry-after"]) >= 1
    assert "max_connections" in refused.error()
    assert closed
    assert _eventually_served(capped), "still refused after the held connections closed"


def _eventually_served(server: LiveServer) -> bool:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if ask(server, LIVE + b"Connection: close\r\n\r\n")[0].status == 200:
            return True
        time.sleep(0.05)
    return False


def test_a_connection_closes_after_max_requests(capped: LiveServer) -> None:
    with connect(capped) as sock:
        answers = []
        for _ in range(MAX_REQUESTS):
            sock.sendall(LIVE + b"\r\n")
            answers.append(read_answer(sock))
        assert all(a.status == 200 for a in answers)
        assert [a.headers.get("connection") for a in answers] == [None] * 2 + ["close"]
        assert closed_by_server(sock)
