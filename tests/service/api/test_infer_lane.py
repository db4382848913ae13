"""The protocol's infer lane answers exactly as the app's routes would, on the wire.

Two real servers: one as served (v2 infer answered by the lane in the HTTP protocol), one
with access logs on, where every request goes through FastAPI's routes. The same raw
requests, good and bad, must get the same status, headers and body from both. Pipelined
requests on one connection are answered in order, lane and app requests mixed.
"""

from __future__ import annotations

import gzip
import http.client
import socket
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import pytest

from service.http_lane import InferLane
from tests.service.api.test_slow_clients import Answer, connect, read_answer
from tests.service.api.v2helpers import MODEL, binary_request, json_request, raw_post
from tests.service.conftest import LiveServer, LiveServerFactory

ARGS = ["--device", "cpu", "--max-body-bytes", str(1 << 20)]


@pytest.fixture(scope="module")
def servers(live_server: LiveServerFactory) -> Iterator[tuple[LiveServer, LiveServer]]:
    with live_server(args=ARGS) as lane, live_server(args=[*ARGS, "--access-log"]) as app:
        yield lane, app


def _cases(samples: np.ndarray) -> dict[str, bytes]:
    infer = f"/v2/models/{MODEL}/infer"
    binary, binary_headers = binary_request(samples[:3])
    good_json = json_request(samples[:2])
    return {
        "json": raw_post(infer, good_json),
        "versioned": raw_post(f"/v2/models/{MODEL}/versions/1/infer", good_json),
        "binary": raw_post(infer, binary, binary_headers),
        "gzip": raw_post(infer, gzip.compress(good_json), {"Content-Encoding": "gzip"}),
        "bad json": raw_post(infer, b'{"inputs": [}'),
        "wrong shape": raw_post(infer, json_request(np.zeros((1, 5), dtype=np.float32))),
        "unknown model": raw_post("/v2/models/nope/infer", good_json),
        "unknown version": raw_post(f"/v2/models/{MODEL}/versions/9/infer", good_json),
        "too large": raw_post(infer, b" " * ((1 << 20) + 1)),
        "bad encoding": raw_post(infer, good_json, {"Content-Encoding": "br"}),
        "bad name": raw_post("/v2/models/bad name!/infer", good_json),
    }


def _ask(server: LiveServer, request: bytes) -> Answer:
    with connect(server) as sock:
        sock.sendall(request)
        return read_answer(sock)


def _comparable(answer: Answer) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = sorted((k.lower(), v) for k, v in answer.headers.items() if k.lower() != "date")
    return answer.status, headers, answer.body


def test_the_lane_answers_as_the_routes_do(
    servers: tuple[LiveServer, LiveServer], samples: np.ndarray
) -> None:
    lane, app = servers
    statuses = {}
    for name, request in _cases(samples).items():
        got, want = _ask(lane, request), _ask(app, request)
        assert _comparable(got) == _comparable(want), name
        assert "date" in {k.lower() for k in got.headers}, name
        statuses[name] = got.status
    assert statuses["json"] == statuses["binary"] == statuses["gzip"] == 200
    assert statuses["bad json"] == statuses["wrong shape"] == statuses["bad name"] == 400
    assert statuses["unknown model"] == statuses["unknown version"] == 404
    assert statuses["too large"] == 413
    assert statuses["bad encoding"] == 415


def test_pipelined_requests_are_answered_in_order(
    servers: tuple[LiveServer, LiveServer], samples: np.ndarray
) -> None:
    lane, _ = servers
    cases = _cases(samples)
    order = ["json", "bad json", "binary", "unknown model", "json"]
    live = b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n\r\n"
    wire = cases["json"] + live + b"".join(cases[name] for name in order[1:])
    with connect(lane) as sock:
        sock.sendall(wire)
        wire_in = sock.makefile("rb")  # one buffer for every answer on the wire
        answers = [_next_answer(wire_in) for _ in range(len(order) + 1)]
    assert [a.status for a in answers] == [200, 200, 400, 200, 404, 200]
    assert answers[1].body == b"OK" or b"error" not in answers[1].body  # the health check
    assert "request JSON" in answers[2].error()
    assert answers[3].body == _ask(lane, cases["binary"]).body
    assert answers[5].body == answers[0].body


def test_connection_close_is_honoured(
    servers: tuple[LiveServer, LiveServer], samples: np.ndarray
) -> None:
    lane, _ = servers
    body = json_request(samples[:1])
    request = raw_post(f"/v2/models/{MODEL}/infer", body, {"Connection": "close"})
    with connect(lane) as sock:
        sock.sendall(request)
        answer = read_answer(sock)
        assert answer.status == 200
        assert answer.headers["connection"] == "close"
        sock.settimeout(10)
        assert _closed(sock)


def _next_answer(wire: BinaryIO) -> Answer:
    """The next response on a connection (every answer here has a Content-Length)."""
    status = int(wire.readline().split()[1])
    message = http.client.parse_headers(wire)  # type: ignore[arg-type]
    return Answer(status, message, wire.read(int(message["content-length"])))


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize(
    ("method", "path", "taken"),
    [
        ("POST", "/v2/models/mnist/infer", ("mnist", None)),
        ("POST", "/v2/models/mnist/versions/12/infer", ("mnist", "12")),
        ("GET", "/v2/models/mnist/infer", None),
        ("POST", "/v2/models/mnist/ready", None),
        ("POST", "/v2/models/bad name!/infer", None),
        ("POST", "/v2/models/mnist/versions/v1/infer", None),
        ("POST", "/v1/models/mnist:predict", None),
    ],
)
def test_the_lane_takes_only_v2_infer(
    method: str, path: str, taken: tuple[str, str | None] | None
) -> None:
    assert InferLane.target({"type": "http", "method": method, "path": path}) == taken
