"""Large refused bodies and aborted uploads: the server's resident memory before and after.

The bodies are refused only after they were decoded (a wrong shape), the costly case, and
sent one after another, then all at once. RSS is the server process's VmRSS (what an OOM
killer looks at), read once the last answer is in.
"""

from __future__ import annotations

import http.client
import socket
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import orjson
from prometheus_client.parser import text_string_to_metric_families

from loadtest.abuse import Row, Target, check
from loadtest.client import HEADER_LENGTH
from loadtest.soak import rss_mb

ABORT_WAIT_S = 30.0  # bound on waiting for the server to count the aborted uploads
SETTLE_S = 2.0  # RSS is read again after this long idle: what stays, not what is in use
Body = tuple[bytes, dict[str, str]]


def json_body(size: int) -> Body:
    """A v2 JSON body of about `size` bytes: one 28x28 sample declared, far more data."""
    head = b'{"inputs":[{"name":"input","shape":[1,1,28,28],"datatype":"FP32","data":['
    values = max(1, (size - len(head) - 8) // 4)
    return head + b"0.5," * (values - 1) + b"0.5]}]}", {"Content-Type": "application/json"}


def binary_body(size: int) -> Body:
    """A v2 binary body of `size` bytes whose tensor is far longer than its shape."""
    tensor = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32"}
    data = size - 256
    head = orjson.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": data}}]})
    headers = {HEADER_LENGTH: str(len(head)), "Content-Type": "application/octet-stream"}
    return head + bytes(data), headers


def post(target: Target, body: Body) -> int:
    """POST `body` to the model's v2 infer endpoint on a new connection: the status."""
    conn = http.client.HTTPConnection(target.host, target.port, timeout=300)
    try:
        conn.request("POST", f"/v2/models/{target.options.model}/infer", body[0], body[1])
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _statuses(codes: list[int]) -> str:
    return ", ".join(f"{code}: {n}" for code, n in sorted(Counter(codes).items()))


def _rss(pid: int, before: float, *during: float) -> str:
    """RSS before, `during` (readings between rounds), now, and after SETTLE_S idle."""
    now = rss_mb(pid)
    time.sleep(SETTLE_S)
    settled = rss_mb(pid)
    path = " → ".join(f"{mb:.0f}" for mb in (before, *during, now))
    return f"{path} MB ({now - before:+.0f}); {settled:.0f} MB {SETTLE_S:g} s later"


def _rounds(target: Target, kind: str, make: Callable[[int], Body]) -> list[Row]:
    """`bodies` refused bodies one after another, then `rounds` times as many at once."""
    n, rounds, pid = target.options.bodies, target.options.rounds, target.server.process.pid
    body = make(target.options.body_mib << 20)
    rows, name, before = [], f"{kind} {target.options.body_mib} MiB, wrong shape", rss_mb(pid)
    codes = [post(target, body) for _ in range(n)]
    rows.append(Row("memory", f"{name}: {n} sequential, RSS", _rss(pid, before)))
    rows.append(Row("memory", f"{name}: {n} sequential, answers", _statuses(codes)))
    codes, between = [], []
    with ThreadPoolExecutor(n) as pool:
        for _ in range(rounds):
            between.append(rss_mb(pid))
            codes += pool.map(lambda _: post(target, body), range(n))
    concurrent = f"{name}: {rounds} × {n} concurrent"
    rows.append(Row("memory", f"{concurrent}, RSS after each round", _rss(pid, *between)))
    rows.append(Row("memory", f"{concurrent}, answers", _statuses(codes)))
    return rows


def abort_upload(target: Target, size: int) -> None:
    """Announce a `size`-byte JSON body, send half of it, hang up."""
    head = (
        f"POST /v2/models/{target.options.model}/infer HTTP/1.1\r\nHost: abuse\r\n"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    )
    with socket.create_connection((target.host, target.port)) as sock:
        sock.sendall(head.encode() + b'{"inputs": [' + b"0" * (size // 2))


def infer_codes(metrics_url: str) -> Counter[str]:
    """exitserve_requests_total of the v2 infer endpoint, by code, from the metrics port."""
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    codes: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "exitserve_requests_total" and s.labels.get("endpoint") == "infer":
                codes[s.labels["code"]] += int(s.value)
    return codes


def _aborts(target: Target) -> list[Row]:
    n, mib, pid = target.options.bodies, target.options.body_mib, target.server.process.pid
    before, counted = rss_mb(pid), infer_codes(target.server.metrics_url)
    for _ in range(n):
        abort_upload(target, mib << 20)
    deadline = time.monotonic() + ABORT_WAIT_S
    while (new := infer_codes(target.server.metrics_url) - counted).total() < n:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    name = f"{n} aborted uploads (half of {mib} MiB, then hang up)"
    answers = ", ".join(f"{code}: {k}" for code, k in sorted(new.items())) or "none counted"
    return [
        Row("memory", f"{name}, RSS", _rss(pid, before)),
        Row("memory", f"{name}, counted in exitserve_requests_total", answers),
    ]


@check("memory")
def memory(target: Target) -> list[Row]:
    """RSS around refused JSON and binary bodies (sequential, concurrent) and aborted uploads."""
    rows = _rounds(target, "JSON", json_body) + _rounds(target, "binary", binary_body)
    return rows + _aborts(target)
