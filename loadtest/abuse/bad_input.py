"""A corpus of bad requests, one per kind of mistake: the status codes the server answered.

Representative of tests/service/api/test_bad_input.py (which checks each answer and its
message on the test model and limits); here they go to the bundled model under the
server's own settings, and what is counted is the answers' status codes.
"""

from __future__ import annotations

import http.client
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import orjson

from loadtest.abuse import Row, Target, check
from loadtest.client import HEADER_LENGTH, encode

ONE = np.full((1, 1, 28, 28), 0.5, np.float32)
OVERSIZE_SENT = 64 << 10  # of an announced oversize body, what is sent before the answer


@dataclass(frozen=True)
class Bad:
    name: str
    body: bytes
    path: str = "infer"  # "infer", "v1", or a path of its own
    headers: dict[str, str] = field(default_factory=dict)
    announce: int = 0  # a Content-Length larger than the body sent (0: the body's length)


def _tensor(request: dict[str, object] | None = None, **changes: object) -> bytes:
    tensor = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.5] * 784}
    return orjson.dumps({"inputs": [{**tensor, **changes}], **(request or {})})


def _binary(x: np.ndarray = ONE) -> tuple[bytes, dict[str, str]]:
    req = encode(x, np.zeros(len(x), np.int64), "binary")
    return req.body, req.headers


def corpus() -> list[Bad]:
    good, headers = _binary()
    nan, nan_headers = _binary(np.full_like(ONE, np.nan))
    length = headers[HEADER_LENGTH]
    return [
        Bad("malformed JSON", b'{"inputs": ['),
        Bad("empty body", b""),
        Bad("wrong shape", _tensor(shape=[1, 28, 28])),
        Bad("data shorter than its shape", _tensor(data=[0.5] * 783)),
        Bad("strings as numbers", _tensor(data=["0.5"] * 784)),
        Bad("booleans as numbers", _tensor(data=[True] * 784)),
        Bad("null in data", _tensor(data=[None] * 784)),
        Bad("NaN literal", _tensor().replace(b"0.5,", b"NaN,", 1)),
        Bad("INT64 2**63", _tensor(datatype="INT64", data=[2**63] + [0] * 783)),
        Bad("unknown datatype", _tensor(datatype="FLOAT")),
        Bad("unknown parameter", _tensor({"parameters": {"turbo": True}})),
        Bad("NaN in binary data", nan, headers=nan_headers),
        Bad("binary header length not a number", good, headers={**headers, HEADER_LENGTH: "x"}),
        Bad("binary header length 1_234", good, headers={**headers, HEADER_LENGTH: "1_234"}),
        Bad("binary header length +N", good, headers={**headers, HEADER_LENGTH: "+" + length}),
        Bad("binary header length past the body", good, headers={**headers, HEADER_LENGTH: "9999"}),
        Bad("binary tail shorter than declared", good[:-8], headers=headers),
        Bad("oversize body (1 TiB announced, 64 KiB sent)", b"0" * OVERSIZE_SENT, announce=1 << 40),
        Bad("unsupported Content-Encoding", _tensor(), headers={"Content-Encoding": "br"}),
        Bad("gzip that is not gzip", _tensor(), headers={"Content-Encoding": "gzip"}),
        Bad("unknown model", _tensor(), path="/v2/models/nope/infer"),
        Bad("unknown version", _tensor(), path="version 9"),
        Bad("invalid model name", _tensor(), path="/v2/models/-x/infer"),
        Bad("v1: instances missing", b'{"rows": []}', path="v1"),
        Bad("v1: strings as numbers", orjson.dumps({"instances": [["0.5"] * 784]}), path="v1"),
    ]


def _path(bad: Bad, model: str) -> str:
    named = {
        "infer": f"/v2/models/{model}/infer",
        "v1": f"/v1/models/{model}:predict",
        "version 9": f"/v2/models/{model}/versions/9/infer",
    }
    return named.get(bad.path, bad.path)


def send(target: Target, bad: Bad) -> int:
    """Send one bad request on a new connection: the status it got."""
    conn = http.client.HTTPConnection(target.host, target.port, timeout=60)
    try:
        conn.putrequest("POST", _path(bad, target.options.model))
        for name, value in {"Content-Type": "application/json", **bad.headers}.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(bad.announce or len(bad.body)))
        conn.endheaders(bad.body)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@check("bad input")
def bad_input(target: Target) -> list[Row]:
    """Every request of the corpus once: which status codes came back, for which cases."""
    cases = corpus()
    by_code: dict[int, list[str]] = defaultdict(list)
    for bad in cases:
        by_code[send(target, bad)].append(bad.name)
    server_errors = sum(len(names) for code, names in by_code.items() if code >= 500)
    rows = [
        Row("bad input", f"answered {code} ({len(names)} of {len(cases)})", "; ".join(names))
        for code, names in sorted(by_code.items())
    ]
    return [*rows, Row("bad input", "5xx answers", f"{server_errors} of {len(cases)}")]
