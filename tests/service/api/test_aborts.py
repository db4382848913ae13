"""A client that hangs up mid-upload is a 499 (client gone), never a server error.

Aborted uploads must not page anyone: no 500 in the request metrics, no ERROR or traceback
in the log, and the server goes on answering.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service.api.v2helpers import MODEL
from tests.service.conftest import LiveServer

ABORTS = 5
PATHS = [f"/v2/models/{MODEL}/infer", f"/v1/models/{MODEL}:predict"]


def _codes(metrics_url: str, endpoint: str) -> dict[str, float]:
    """exitserve_requests_total for `endpoint`, by status code."""
    text = httpx.get(f"{metrics_url}/metrics", timeout=5).text
    codes: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "exitserve_requests_total" and s.labels.get("endpoint") == endpoint:
                codes[s.labels["code"]] = codes.get(s.labels["code"], 0) + s.value
    return codes


def _abort_upload(url: str, path: str) -> None:
    """Headers announcing 200 kB, a quarter of the body, then close the connection."""
    parts = urlsplit(url)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.hostname}\r\n"
        "Content-Type: application/json\r\nContent-Length: 200000\r\n\r\n"
    )
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(head.encode() + b'{"inputs": [' + b"0" * 50_000)


def _wait_for_total(metrics_url: str, endpoint: str, total: float) -> dict[str, float]:
    deadline = time.monotonic() + 10
    while sum((codes := _codes(metrics_url, endpoint)).values()) < total:
        assert time.monotonic() < deadline, f"the server never answered the aborts: {codes}"
        time.sleep(0.05)
    return codes


@pytest.mark.parametrize("path", PATHS)
def test_an_aborted_upload_is_499_without_a_traceback(server: LiveServer, path: str) -> None:
    endpoint = "infer" if path.endswith("/infer") else "v1_predict"
    before, log_start = _codes(server.metrics_url, endpoint), len(server.log())
    for _ in range(ABORTS):
        _abort_upload(server.url, path)
    after = _wait_for_total(server.metrics_url, endpoint, sum(before.values()) + ABORTS)
    new = {code: after[code] - before.get(code, 0) for code in after}
    assert new.get("499") == ABORTS, new
    assert new.get("500", 0) == 0, new
    log = server.log()[log_start:]
    assert "ERROR" not in log, log
    assert "Traceback" not in log, log
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200
