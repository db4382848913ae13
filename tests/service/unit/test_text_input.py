"""BYTES inputs: JSON strings and the binary extension's length-prefixed elements."""

from __future__ import annotations

import struct

import pytest

from models.manifest import TextInput
from service.errors import BadRequest
from service.protocol.text_input import (
    check_text_shape,
    texts_from_binary,
    texts_from_instances,
    texts_from_json,
)

SPEC = TextInput(tokenizer_file="tokenizer.json", max_length=64)


def prefixed(*items: bytes) -> memoryview:
    return memoryview(b"".join(struct.pack("<I", len(i)) + i for i in items))


def test_binary_elements_round_trip_including_empty_and_utf8() -> None:
    items = (b"good film", b"", "très bien".encode())
    assert texts_from_binary(prefixed(*items), 3, "inputs[0]") == list(items)


@pytest.mark.parametrize(
    ("raw", "count", "message"),
    [
        (prefixed(b"a")[:3], 1, "truncated length prefix"),
        (memoryview(struct.pack("<I", 10) + b"abc"), 1, "declares 10 bytes, only 3 follow"),
        (prefixed(b"a", b"b"), 1, "2 BYTES elements for shape's batch of 1"),
    ],
)
def test_binary_errors_name_the_element(raw: memoryview, count: int, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        texts_from_binary(raw, count, "inputs[0]")


def test_json_strings_flat_or_one_per_row() -> None:
    assert texts_from_json(["a", "b"], 2, "inputs[0]") == ["a", "b"]
    assert texts_from_json([["a"], ["b"]], 2, "inputs[0]") == ["a", "b"]
    with pytest.raises(BadRequest, match=r"inputs\[0\].data\[1\]: must be a string, got 3"):
        texts_from_json(["a", 3], 2, "inputs[0]")
    with pytest.raises(BadRequest, match="1 strings for shape's batch of 2"):
        texts_from_json(["a"], 2, "inputs[0]")


def test_shapes_and_instances() -> None:
    assert check_text_shape([3], SPEC, "inputs[0].shape", 8) == 3
    assert check_text_shape([3, 1], SPEC, "inputs[0].shape", 8) == 3
    for bad in ([3, 64], [], [0], [9], ["3"]):
        with pytest.raises(BadRequest, match=r"inputs\[0\].shape"):
            check_text_shape(bad, SPEC, "inputs[0].shape", 8)
    assert texts_from_instances(["x", "y"]) == ["x", "y"]
    with pytest.raises(BadRequest, match=r"instances\[1\]: must be a string"):
        texts_from_instances(["x", [1.0]])
