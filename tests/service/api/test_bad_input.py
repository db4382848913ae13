"""A corpus of bad requests against a real server: each gets its documented 4xx with a
message naming the field, never a 500, and the server keeps answering good requests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import numpy as np
import orjson
import pytest

from service.protocol.json_body import JSON_BYTES_PER_VALUE, JSON_ENVELOPE_BYTES
from tests.service.api.v2helpers import (
    BODY_LIMIT,
    HEADER,
    MAX_SAMPLES,
    MODEL,
    binary_request,
    decode_response,
    json_request,
)

INFER = f"/v2/models/{MODEL}/infer"
ONE = np.full((1, 1, 28, 28), 0.5, np.float32)


@dataclass(frozen=True)
class Bad:
    """One malformed request and what the server must say about it."""

    name: str
    body: bytes
    status: int
    names: str  # a fragment the error message must contain
    path: str = INFER
    headers: dict[str, str] = field(default_factory=dict)


def _binary(x: np.ndarray = ONE) -> tuple[bytes, dict[str, str]]:
    return binary_request(x)


def _tensor(**changes: object) -> bytes:
    tensor = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.5] * 784}
    return orjson.dumps({"inputs": [{**tensor, **changes}]})


_BIN, _BIN_HEADERS = _binary()
_NAN_BIN = _binary(np.full((1, 1, 28, 28), np.nan, np.float32))
_INF_BIN = _binary(np.full((1, 1, 28, 28), np.inf, np.float32))
_SHORT = _binary(np.zeros((2, 1, 28, 28), np.float32))
_V1 = f"/v1/models/{MODEL}:predict"
# What MAX_SAMPLES samples can take as JSON (service.protocol.json_body): a longer body,
# though within BODY_LIMIT, is refused before it is parsed.
_JSON_BUDGET = JSON_ENVELOPE_BYTES + MAX_SAMPLES * 784 * JSON_BYTES_PER_VALUE
_TOO_LONG = _tensor(data=[0.5] * (_JSON_BUDGET // 4))
assert _JSON_BUDGET < len(_TOO_LONG) < BODY_LIMIT
_LENGTH_1_234 = _BIN_HEADERS[HEADER][:1] + "_" + _BIN_HEADERS[HEADER][1:]  # int() reads it

CORPUS = [
    Bad("malformed JSON", b'{"inputs": [', 400, "not valid JSON"),
    Bad("JSON array body", b"[]", 400, "JSON object"),
    Bad("empty body", b"", 400, "not valid JSON"),
    Bad("no inputs", b"{}", 400, "inputs"),
    Bad("two inputs", orjson.dumps({"inputs": [{}, {}]}), 400, "inputs"),
    Bad("wrong input name", _tensor(name="image"), 400, "inputs[0].name"),
    Bad("wrong shape", _tensor(shape=[1, 28, 28]), 400, "inputs[0].shape"),
    Bad("zero batch", _tensor(shape=[0, 1, 28, 28], data=[]), 400, "inputs[0].shape"),
    Bad("too many samples", _tensor(shape=[MAX_SAMPLES + 1, 1, 28, 28]), 400, "inputs[0].shape"),
    Bad("shape as string", _tensor(shape="1x1x28x28"), 400, "inputs[0].shape"),
    Bad("data shorter than shape", _tensor(data=[0.5] * 783), 400, "inputs[0].data"),
    Bad("data not numbers", _tensor(data=["a"] * 784), 400, "inputs[0].data"),
    Bad("null in data", _tensor(data=[None] * 784), 400, "inputs[0].data"),
    Bad("NaN literal", _tensor().replace(b"0.5,", b"NaN,", 1), 400, "not valid JSON"),
    Bad("infinite number", _tensor().replace(b"0.5,", b"1e999,", 1), 400, "not valid JSON"),
    Bad("BYTES datatype", _tensor(datatype="BYTES"), 400, "inputs[0].datatype"),
    Bad("BOOL datatype", _tensor(datatype="BOOL"), 400, "inputs[0].datatype"),
    Bad("unknown datatype", _tensor(datatype="FLOAT"), 400, "inputs[0].datatype"),
    Bad(
        "threshold not a number",
        json_request(ONE, parameters={"threshold": "x"}),
        400,
        "parameters.threshold",
    ),
    Bad(
        "threshold out of range",
        json_request(ONE, parameters={"threshold": 7.5, "policy": "confidence"}),
        400,
        "parameters.threshold",
    ),
    Bad(
        "unknown policy", json_request(ONE, parameters={"policy": "fast"}), 400, "parameters.policy"
    ),
    Bad(
        "max_exit too deep",
        json_request(ONE, parameters={"max_exit": 99}),
        400,
        "parameters.max_exit",
    ),
    Bad(
        "full_depth not a bool",
        json_request(ONE, parameters={"full_depth": "yes"}),
        400,
        "parameters.full_depth",
    ),
    Bad(
        "unknown parameter", json_request(ONE, parameters={"turbo": True}), 400, "parameters.turbo"
    ),
    Bad("parameters not an object", json_request(ONE, parameters=[1]), 400, "parameters"),
    Bad("unknown output", json_request(ONE, outputs=[{"name": "logits"}]), 400, "outputs[0].name"),
    Bad("id not a string", json_request(ONE, id=5), 400, "id"),
    Bad("NaN in binary data", _NAN_BIN[0], 400, "NaN", headers=_NAN_BIN[1]),
    Bad("infinity in binary data", _INF_BIN[0], 400, "NaN", headers=_INF_BIN[1]),
    Bad("binary header length not a number", _BIN, 400, HEADER, headers={HEADER: "many"}),
    Bad("binary header length past the body", _BIN, 400, HEADER, headers={HEADER: "99999"}),
    Bad("binary header length cuts the JSON", _BIN, 400, "not valid JSON", headers={HEADER: "20"}),
    Bad("binary data missing its header", _BIN, 400, "not valid JSON"),
    Bad("binary tail longer than declared", _BIN + b"\0" * 8, 400, HEADER, headers=_BIN_HEADERS),
    Bad(
        "binary tail shorter than declared",
        _BIN[:-8],
        400,
        "binary_data_size",
        headers=_BIN_HEADERS,
    ),
    Bad(
        "binary size wrong for the shape",
        _SHORT[0].replace(b"[2,1,28,28]", b"[1,1,28,28]"),
        400,
        "inputs[0].parameters.binary_data_size",
        headers=_SHORT[1],
    ),
    Bad("body over the limit", b"[" + b"0.5," * (BODY_LIMIT // 4) + b"0]", 413, "max_body_bytes"),
    Bad("JSON longer than any valid request", _TOO_LONG, 413, "max_samples_per_request"),
    Bad(
        "v1 JSON longer than any valid request",
        b'{"instances": [[' + b"0.5," * (_JSON_BUDGET // 4) + b"0.5]]}",
        413,
        "max_samples_per_request",
        path=f"/v1/models/{MODEL}:predict",
    ),
    Bad("data as number strings", _tensor(data=["0.5"] * 784), 400, "inputs[0].data"),
    Bad("data as booleans", _tensor(data=[True] * 784), 400, "inputs[0].data"),
    Bad("a boolean among the data", _tensor(data=[0.5] * 783 + [False]), 400, "true/false"),
    Bad("INT64 2**63", _tensor(datatype="INT64", data=[2**63] + [0] * 783), 400, "int64 range"),
    Bad("UINT8 256", _tensor(datatype="UINT8", data=[256] + [0] * 783), 400, "uint8 range"),
    Bad(
        "v1 number strings", orjson.dumps({"instances": [["0.5"] * 784]}), 400, "numbers", path=_V1
    ),
    Bad("binary header length 1_234", _BIN, 400, HEADER, headers={HEADER: _LENGTH_1_234}),
    Bad("binary header length +N", _BIN, 400, HEADER, headers={HEADER: "+" + _BIN_HEADERS[HEADER]}),
    Bad("unknown model", json_request(ONE), 404, "nope", path="/v2/models/nope/infer"),
    Bad(
        "unknown version", json_request(ONE), 404, "9", path=f"/v2/models/{MODEL}/versions/9/infer"
    ),
    Bad("invalid model name", json_request(ONE), 400, "model_name", path="/v2/models/-x/infer"),
    Bad(
        "invalid version",
        json_request(ONE),
        400,
        "model_version",
        path=f"/v2/models/{MODEL}/versions/v1/infer",
    ),
    Bad(
        "unsupported encoding",
        json_request(ONE),
        415,
        "Content-Encoding",
        headers={"Content-Encoding": "br"},
    ),
    Bad(
        "gzip that is not gzip",
        json_request(ONE),
        400,
        "gzip",
        headers={"Content-Encoding": "gzip"},
    ),
    Bad(
        "v1 instances missing",
        b'{"rows": []}',
        400,
        "instances",
        path=f"/v1/models/{MODEL}:predict",
    ),
    Bad(
        "v1 instance wrong shape",
        b'{"instances": [[1, 2, 3]]}',
        400,
        "instances",
        path=f"/v1/models/{MODEL}:predict",
    ),
    Bad("v1 unknown model", b'{"instances": [[0]]}', 404, "nope", path="/v1/models/nope:predict"),
]


@pytest.mark.parametrize("bad", CORPUS, ids=[b.name for b in CORPUS])
def test_bad_request_gets_its_4xx(client: httpx.Client, bad: Bad) -> None:
    response = client.post(bad.path, content=bad.body, headers=bad.headers)
    assert response.status_code == bad.status, response.text
    assert response.headers["content-type"] == "application/json"
    message = response.json()["error"]
    assert bad.names in message, message
    assert "Traceback" not in message
    assert "/tmp" not in message
    assert "site-packages" not in message


def test_chunked_body_over_the_limit_is_413(client: httpx.Client) -> None:
    """No Content-Length to check up front: the limit applies while the body streams in."""

    def chunks() -> Iterator[bytes]:
        for _ in range(BODY_LIMIT // (64 << 10) + 2):
            yield b" " * (64 << 10)

    response = client.post(INFER, content=chunks())
    assert response.status_code == 413
    assert "max_body_bytes" in response.json()["error"]


def test_server_is_healthy_after_the_corpus(client: httpx.Client) -> None:
    for bad in CORPUS:  # the whole corpus again, back to back, then a good request
        client.post(bad.path, content=bad.body, headers=bad.headers)
    assert client.get("/v2/health/ready").status_code == 200
    body, headers = _binary()
    assert len(decode_response(client.post(INFER, content=body, headers=headers))["label"]) == 1
