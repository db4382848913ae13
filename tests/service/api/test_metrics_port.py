"""The metrics port has the data port's connection limits (raw sockets, real server).

prometheus_client's own server gave every connection a thread and no deadline: half-sent
request heads stayed open for ever and a 40 KB header was read in full. Now they get 408
and 431, and scrapes go on being answered while such connections are open.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.service.conftest import LiveServer, LiveServerFactory

SLOWLORIS = 20
WAIT_S = 20.0  # the longest an answer may take on a busy machine; never reached when right
PARTIAL_HEAD = b"GET /metrics HTTP/1.1\r\nHost: test\r\nX-Slow: "


@pytest.fixture(scope="module")
def server(live_server: LiveServerFactory) -> Iterator[LiveServer]:
    args = ["--header-timeout-s", "1", "--max-header-bytes", "8192", "--device", "cpu"]
    with live_server(args=args) as served:
        yield served


def connect(server: LiveServer) -> socket.socket:
    url = urlsplit(server.metrics_url)
    sock = socket.create_connection((url.hostname, url.port), timeout=WAIT_S)
    sock.settimeout(WAIT_S)
    return sock


def answer_then_close(sock: socket.socket) -> tuple[int, bytes, bool]:
    """(status, body, whether the server then closed); raises TimeoutError if it never answers."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    try:
        closed = sock.recv(1) == b""
    except ConnectionResetError:
        closed = True
    except TimeoutError:
        closed = False
    return response.status, body, closed


def scrape(server: LiveServer) -> str:
    response = httpx.get(f"{server.metrics_url}/metrics", timeout=WAIT_S)
    assert response.status_code == 200
    return response.text


def test_slowloris_on_the_metrics_port_is_cut_off_and_scrapes_go_on(server: LiveServer) -> None:
    socks = [connect(server) for _ in range(SLOWLORIS)]
    try:
        for sock in socks:
            sock.sendall(PARTIAL_HEAD)
        assert "exitserve_model_ready" in scrape(server)  # while they hold their connections
        for sock in socks:
            status, body, closed = answer_then_close(sock)
            assert status == 408
            assert b"header_timeout_s" in body
            assert closed
    finally:
        for sock in socks:
            sock.close()
    assert "exitserve_model_ready" in scrape(server)


def test_a_head_over_the_cap_on_the_metrics_port_gets_431(server: LiveServer) -> None:
    with connect(server) as sock:
        sock.sendall(PARTIAL_HEAD + b"b" * 40_000 + b"\r\n\r\n")
        status, body, closed = answer_then_close(sock)
    assert status == 431
    assert b"max_header_bytes" in body
    assert closed
