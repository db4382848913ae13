"""The protocol codec on its own: decoding checks name the field, encodings round-trip."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from models.manifest import Manifest
from service.errors import BadRequest, PayloadTooLarge
from service.protocol.json_body import JSON_ENVELOPE_BYTES
from service.protocol.outputs import OUTPUT_NAMES, OutputRequest
from service.protocol.v1 import decode_predict, encode_predict
from service.protocol.v2_decode import HEADER_LENGTH, decode_infer
from service.protocol.v2_encode import encode_infer
from service.types import InferenceResult


def _segment(k: int, last: bool) -> dict[str, Any]:
    shape = [1, 4, 4] if k == 0 else [8]
    return {
        "index": k,
        "file": f"segment_{k}.onnx",
        "input": {"name": "input" if k == 0 else "h", "shape": shape},
        "hidden_output": None if last else {"name": "h", "shape": [8]},
        "logits_output": "logits",
        "probs_output": "probs",
        "macs": 10,
        "cumulative_fraction": (k + 1) / 2,
        "thresholds": {"confidence": 0.9},
    }


MANIFEST = Manifest.model_validate(
    {
        "name": "m",
        "version": "3",
        "architecture": "test",
        "labels": ["a", "b", "c"],
        "input": {"name": "input", "shape": [1, 4, 4]},
        "segments": [_segment(0, False), _segment(1, True)],
    }
)
X = np.random.default_rng(0).random((2, 1, 4, 4), dtype=np.float32)


def _json(x: np.ndarray = X, **extra: Any) -> bytes:
    tensor = {
        "name": "input",
        "shape": list(x.shape),
        "datatype": "FP32",
        "data": x.ravel().tolist(),
    }
    return orjson.dumps({"inputs": [tensor], **extra})


def _with_data(data: list[Any], datatype: str = "FP32") -> bytes:
    tensor = {"name": "input", "shape": [1, 1, 4, 4], "datatype": datatype, "data": data}
    return orjson.dumps({"inputs": [tensor]})


def _underscored(digits: str) -> str:
    """The same number as Python's int() reads '1_234'."""
    return digits[:1] + "_" + digits[1:]


def _binary(x: np.ndarray = X, datatype: str = "FP32", **extra: Any) -> tuple[bytes, str]:
    raw = x.tobytes()
    tensor = {
        "name": "input",
        "shape": list(x.shape),
        "datatype": datatype,
        "parameters": {"binary_data_size": len(raw)},
    }
    head = orjson.dumps({"inputs": [tensor], **extra})
    return head + raw, str(len(head))


def test_json_and_binary_decode_to_the_same_samples() -> None:
    from_json = decode_infer(_json(), None, MANIFEST, 8).request
    body, length = _binary()
    from_binary = decode_infer(body, length, MANIFEST, 8).request
    np.testing.assert_array_equal(from_json.data, X)
    np.testing.assert_array_equal(from_binary.data, X)
    assert (from_json.model, from_json.version) == ("m", "3")


@pytest.mark.parametrize("datatype", ["FP64", "FP16", "UINT8", "INT32", "INT64"])
def test_numeric_datatypes_are_cast_to_fp32(datatype: str) -> None:
    from service.protocol.datatypes import NUMERIC

    x = (X * 100).round().astype(NUMERIC[datatype])
    body, length = _binary(x, datatype)
    np.testing.assert_array_equal(
        decode_infer(body, length, MANIFEST, 8).request.data, x.astype(np.float32)
    )


def test_nested_json_data_and_parameters() -> None:
    tensor = {"name": "input", "shape": [2, 1, 4, 4], "datatype": "FP32", "data": X.tolist()}
    params = {"full_depth": True, "threshold": 0.5, "policy": "margin", "max_exit": 1}
    body = orjson.dumps({"id": "r1", "inputs": [tensor], "parameters": params})
    decoded = decode_infer(body, None, MANIFEST, 8)
    np.testing.assert_array_equal(decoded.request.data, X)
    policy = decoded.request.policy
    assert (policy.full_depth, policy.threshold, policy.policy, policy.max_exit) == (
        True,
        0.5,
        "margin",
        1,
    )
    assert decoded.request_id == "r1"


def test_outputs_subset_order_and_binary_flags() -> None:
    outputs = [{"name": "exit_index"}, {"name": "label", "parameters": {"binary_data": True}}]
    decoded = decode_infer(_json(outputs=outputs), None, MANIFEST, 8)
    assert decoded.outputs == (OutputRequest("exit_index", False), OutputRequest("label", True))
    everything = decode_infer(_json(parameters={"binary_data_output": True}), None, MANIFEST, 8)
    assert [o.name for o in everything.outputs] == list(OUTPUT_NAMES)
    assert all(o.binary for o in everything.outputs)


BAD: list[tuple[str, bytes, str | None, str]] = [
    ("not json", b"{nope", None, "not valid JSON"),
    ("not an object", b"[1]", None, "must be a JSON object"),
    ("no inputs", b"{}", None, "inputs:"),
    ("wrong input name", _json().replace(b'"input"', b'"x"'), None, "inputs[0].name"),
    ("wrong shape", _json().replace(b"[2,1,4,4]", b"[2,4,4]"), None, "inputs[0].shape"),
    ("batch over limit", _json(np.zeros((9, 1, 4, 4), np.float32)), None, "inputs[0].shape"),
    ("too few values", _json().replace(b"[2,1,4,4]", b"[3,1,4,4]"), None, "inputs[0].data"),
    ("BYTES", _json().replace(b'"FP32"', b'"BYTES"'), None, "inputs[0].datatype"),
    ("BOOL", _json().replace(b'"FP32"', b'"BOOL"'), None, "inputs[0].datatype"),
    ("unknown datatype", _json().replace(b'"FP32"', b'"FP8"'), None, "inputs[0].datatype"),
    ("strings", _json(X[:1]).replace(b'"data":[', b'"data":["a",'), None, "inputs[0].data"),
    ("null value", _with_data([None, *X[0].ravel().tolist()[1:]]), None, "inputs[0].data"),
    ("ragged", _with_data([[0.0] * 15, [0.0]]), None, "inputs[0].data"),
    ("bad threshold", _json(parameters={"threshold": "high"}), None, "parameters.threshold"),
    ("bool threshold", _json(parameters={"threshold": True}), None, "parameters.threshold"),
    ("bad policy", _json(parameters={"policy": "vibes"}), None, "parameters.policy"),
    ("bad full_depth", _json(parameters={"full_depth": 1}), None, "parameters.full_depth"),
    ("float max_exit", _json(parameters={"max_exit": 1.5}), None, "parameters.max_exit"),
    ("unknown parameter", _json(parameters={"speed": 1}), None, "parameters.speed"),
    ("unknown output", _json(outputs=[{"name": "logits"}]), None, "outputs[0].name"),
    ("twice the same output", _json(outputs=[{"name": "label"}] * 2), None, "outputs[1].name"),
    ("header length not a number", _binary()[0], "abc", HEADER_LENGTH),
    ("header length past the end", _binary()[0], "999999", HEADER_LENGTH),
    ("header length too short", _binary()[0], "10", "not valid JSON"),
    ("binary tail too long", _binary()[0] + b"xx", _binary()[1], HEADER_LENGTH),
    (
        "binary size wrong for shape",
        _binary(np.zeros((3, 1, 4, 4), np.float32))[0].replace(b"[3,1,4,4]", b"[2,1,4,4]"),
        _binary(np.zeros((3, 1, 4, 4), np.float32))[1],
        "inputs[0].parameters.binary_data_size",
    ),
    ("binary data without header", _binary()[0], None, "not valid JSON"),
    ("number strings", _with_data(["0.5"] * 16), None, "inputs[0].data: must hold numbers"),
    ("booleans", _with_data([True] * 16), None, "found true/false"),
    ("a boolean among numbers", _with_data([0.5] * 15 + [False]), None, "found true/false"),
    ("INT64 2**63", _with_data([2**63] + [0] * 15, "INT64"), None, "outside the int64 range"),
    (
        "INT64 -2**63-1",
        _with_data([0] * 16, "INT64").replace(b"[0,", b"[-9223372036854775809,", 1),
        None,
        "outside the int64 range",
    ),
    (
        "UINT64 2**64",
        _with_data([0] * 16, "UINT64").replace(b"[0,", b"[18446744073709551616,", 1),
        None,
        "outside the uint64 range",
    ),
    ("UINT8 -1", _with_data([-1] + [0] * 15, "UINT8"), None, "outside the uint8 range"),
    ("INT8 128", _with_data([128] + [0] * 15, "INT8"), None, "outside the int8 range"),
    ("INT32 2**31 as float", _with_data([2.0**31] + [0] * 15, "INT32"), None, "int32 range"),
    ("INT16 not whole", _with_data([1.5] + [0] * 15, "INT16"), None, "whole numbers"),
    ("FP16 past its range", _with_data([7e4] + [0] * 15, "FP16"), None, "FP16 range"),
    ("header length 1_234 form", _binary()[0], _underscored(_binary()[1]), HEADER_LENGTH),
    ("header length with a sign", _binary()[0], "+" + _binary()[1], HEADER_LENGTH),
    ("header length with a space", _binary()[0], " " + _binary()[1], HEADER_LENGTH),
    ("header length in other digits", _binary()[0], "\u0661\u0662", HEADER_LENGTH),
]


@pytest.mark.parametrize(("body", "length", "names"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_requests_name_the_field(body: bytes, length: str | None, names: str) -> None:
    with pytest.raises(BadRequest) as err:
        decode_infer(body, length, MANIFEST, 8)
    assert names in err.value.message
    assert err.value.status_code == 400


@pytest.mark.parametrize(
    ("datatype", "value"),
    [("INT64", 2**63 - 1), ("INT64", -(2**63)), ("UINT64", 2**64 - 1), ("INT8", -128)],
)
def test_integer_datatypes_take_their_whole_range(datatype: str, value: int) -> None:
    data = decode_infer(_with_data([value] + [0] * 15, datatype), None, MANIFEST, 8).request.data
    assert data[0, 0, 0, 0] == np.float32(value)


def test_a_true_elsewhere_in_the_body_does_not_refuse_numeric_data() -> None:
    """Booleans among numbers are looked for when the text has a true/false at all."""
    decoded = decode_infer(_json(parameters={"full_depth": True}), None, MANIFEST, 8)
    np.testing.assert_array_equal(decoded.request.data, X)
    body = orjson.dumps({"instances": X.tolist(), "parameters": {"full_depth": True}})
    np.testing.assert_array_equal(decode_predict(body, MANIFEST, 8).data, X)


def test_json_longer_than_any_valid_request_is_refused_before_parsing() -> None:
    """8 samples of 16 values fit in 64 KiB + 8 * 16 * 32 bytes; this is not even JSON."""
    with pytest.raises(PayloadTooLarge) as err:
        decode_infer(b"[" * (JSON_ENVELOPE_BYTES + 8 * 16 * 32 + 1), None, MANIFEST, 8)
    assert "max_samples_per_request" in err.value.message
    with pytest.raises(PayloadTooLarge):
        decode_predict(b"[" * (JSON_ENVELOPE_BYTES + 8 * 16 * 32 + 1), MANIFEST, 8)
    with pytest.raises(BadRequest, match="not valid JSON"):  # one byte less: parsed
        decode_infer(b"[" * (JSON_ENVELOPE_BYTES + 8 * 16 * 32), None, MANIFEST, 8)


def test_non_finite_values_are_left_to_the_data_plane() -> None:
    """Checked once, in inputs.check_input, for every transport (not again here)."""
    body, length = _binary(np.full((1, 1, 4, 4), np.nan, np.float32))
    assert np.isnan(decode_infer(body, length, MANIFEST, 8).request.data).all()


def _result(n: int = 2) -> InferenceResult:
    probs = np.random.default_rng(1).random((n, 3), dtype=np.float32)
    return InferenceResult(
        "m",
        "3",
        probs.argmax(1).astype(np.int64),
        probs,
        probs.max(1),
        np.arange(n, dtype=np.int32),
    )


def test_binary_and_json_responses_carry_the_same_values() -> None:
    result = _result()
    names = [OutputRequest(n, False) for n in OUTPUT_NAMES]
    as_json = orjson.loads(encode_infer(result, tuple(names), "x").body)
    binary = encode_infer(result, tuple(OutputRequest(n, True) for n in OUTPUT_NAMES), None)
    head_len = int(binary.headers[HEADER_LENGTH])
    head = orjson.loads(binary.body[:head_len])
    offset = head_len
    for j, out in enumerate(head["outputs"]):
        size = out["parameters"]["binary_data_size"]
        dtype = {"FP32": "<f4", "INT64": "<i8", "INT32": "<i4"}[out["datatype"]]
        raw = np.frombuffer(binary.body[offset : offset + size], dtype)
        np.testing.assert_array_equal(raw, np.asarray(as_json["outputs"][j]["data"], dtype))
        offset += size
    assert offset == len(binary.body)
    assert as_json["id"] == "x"
    assert "id" not in head


def test_v1_round_trip() -> None:
    data = decode_predict(orjson.dumps({"instances": X.tolist()}), MANIFEST, 8)
    np.testing.assert_array_equal(data.data, X)
    flat = decode_predict(orjson.dumps({"instances": X.reshape(2, -1).tolist()}), MANIFEST, 8)
    np.testing.assert_array_equal(flat.data, X)
    predictions = orjson.loads(encode_predict(_result()))["predictions"]
    assert [p["exit"] for p in predictions] == [0, 1]
    assert set(predictions[0]) == {"label", "confidence", "exit", "probabilities"}
    with pytest.raises(BadRequest, match="instances"):
        decode_predict(orjson.dumps({"instances": [[1.0, 2.0]]}), MANIFEST, 8)
