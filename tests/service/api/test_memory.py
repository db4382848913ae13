"""Refused large bodies leave nothing behind: the server's resident memory stays flat.

Each body is 16 MB and refused only after it was decoded (a wrong shape), the costly case:
a 16 MB JSON body is ~200 MB of Python lists and floats while parsed. Were any reference
(an error's traceback, a future, a cycle left for the collector) to keep it, RSS would grow
by about that much per request. The server's allocator is told to hand blocks of 1 MiB and
more back to the system when they are freed (glibc keeps them for reuse by default, a
plateau that depends on how requests interleaved): RSS then shows what is still referenced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from tests.service.api.v2helpers import HEADER, MODEL, binary_request
from tests.service.conftest import LiveServer, LiveServerFactory

BODY_BYTES = 16 << 20
VALUES = 4_000_000  # "0.5," each: a JSON body just under 16 MB
GROWTH_MB = 150  # after warm-up; one leaked JSON body alone is ~200 MB
Body = tuple[str, bytes, dict[str, str]]


def _v2_json() -> Body:
    data = b"0.5," * (VALUES - 1) + b"0.5"
    head = b'{"inputs":[{"name":"input","shape":[1,1,28,28],"datatype":"FP32","data":['
    return f"/v2/models/{MODEL}/infer", head + data + b"]}]}", {}


def _v2_binary() -> Body:
    size = BODY_BYTES - 256
    tensor = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32"}
    head = orjson.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": size}}]})
    return f"/v2/models/{MODEL}/infer", head + bytes(size), {HEADER: str(len(head))}


def _v1_json() -> Body:
    """1000 instances of 4000 numbers: a valid count, each the wrong size for the model."""
    instance = b"[" + b"0.5," * 3999 + b"0.5]"
    body = b'{"instances":[' + b",".join([instance] * 1000) + b"]}"
    return f"/v1/models/{MODEL}:predict", body, {}


# kind -> (body, sequential count, concurrent count): enough that the bodies, had they
# leaked, would pass GROWTH_MB (a binary body leaks ~16 MB: its bytes and its FP32 copy).
BODIES: dict[str, tuple[Callable[[], Body], int, int]] = {
    "v2-json": (_v2_json, 3, 4),
    "v2-binary": (_v2_binary, 12, 8),
    "v1-json": (_v1_json, 3, 4),
}


ALLOCATOR = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1048576"}


@pytest.fixture(scope="module")
def large_bodies_server(live_server: LiveServerFactory) -> Iterator[LiveServer]:
    args = ["--max-body-bytes", str(BODY_BYTES), "--max-samples-per-request", "1024"]
    with live_server(args=[*args, "--device", "cpu"], env=ALLOCATOR) as server:
        yield server


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid`, from /proc (what an OOM killer looks at)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def _refused(server: LiveServer, body: Body) -> None:
    path, content, headers = body
    with httpx.Client(base_url=server.url, timeout=120) as client:
        response = client.post(path, content=content, headers=headers)
    assert response.status_code == 400, response.text


@pytest.mark.parametrize("kind", list(BODIES))
def test_refused_large_bodies_leave_resident_memory_flat(
    large_bodies_server: LiveServer, kind: str
) -> None:
    make, sequential, concurrent = BODIES[kind]
    server, body = large_bodies_server, make()
    assert len(body[1]) <= BODY_BYTES
    pid = server.process.pid
    with ThreadPoolExecutor(concurrent) as pool:
        list(pool.map(lambda _: _refused(server, body), range(2)))  # warm-up
        baseline = rss_mb(pid)

        def check(when: str) -> None:
            grown = rss_mb(pid) - baseline
            assert grown < GROWTH_MB, f"{kind}: RSS grew {grown:.0f} MB {when}"

        for i in range(sequential):
            _refused(server, body)
            check(f"after {i + 1} sequential bodies")
        list(pool.map(lambda _: _refused(server, body), range(concurrent)))
        check(f"after {concurrent} concurrent bodies")


def test_timed_out_requests_leave_resident_memory_flat(live_server: LiveServerFactory) -> None:
    """A 504 is set on the request's future; raised from it, its traceback held the frame
    holding that future: a cycle keeping the body and the decoded samples (~10 MB here)."""
    x = np.random.default_rng(0).random((1024, 1, 28, 28)).astype(np.float64)
    body, headers = binary_request(x, "FP64", parameters={"full_depth": True})
    args = ["--max-body-bytes", str(BODY_BYTES), "--max-samples-per-request", "1024"]
    args += ["--request-timeout-s", "0.001", "--max-batch-size", "1", "--device", "cpu"]
    with (
        live_server(args=args, env=ALLOCATOR) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        path = f"/v2/models/{MODEL}/infer"
        for _ in range(2):  # warm-up
            assert client.post(path, content=body, headers=headers).status_code == 504
        baseline = rss_mb(server.process.pid)
        for i in range(30):
            response = client.post(path, content=body, headers=headers)
            assert response.status_code == 504, response.text
            grown = rss_mb(server.process.pid) - baseline
            assert grown < GROWTH_MB, f"RSS grew {grown:.0f} MB after {i + 1} timeouts"
