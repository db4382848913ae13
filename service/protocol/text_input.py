"""A text model's input: one UTF-8 string per sample, v2 datatype BYTES.

JSON sends the strings in `data`; the binary extension sends each element as a 4-byte
little-endian length followed by its bytes, elements back to back. Either way the server
gets a list of texts (bytes from the binary tail, str from JSON) and the model version's
tokeniser checks each one (UTF-8, empty, too long) and names the element it refuses.
"""

from __future__ import annotations

from typing import Any

from models.manifest import TextInput
from service.errors import BadRequest
from service.protocol.json_body import JSON_BYTES_PER_VALUE, show
from service.text import BYTES_PER_TOKEN

Texts = list[bytes] | list[str]
PREFIX = 4  # bytes of each element's length in the binary form


def json_values_per_sample(spec: TextInput) -> int:
    """A text's JSON size in the units of the JSON budget (escapes can double a string)."""
    return 2 * spec.max_length * BYTES_PER_TOKEN // JSON_BYTES_PER_VALUE + 1


def check_text_shape(raw: object, spec: TextInput, field: str, max_samples: int) -> int:
    """The number of texts: shape [n] (or [n, 1], as some clients send), 1 <= n <= max."""
    if not isinstance(raw, list) or not all(type(d) is int for d in raw):
        raise BadRequest(f"{field}: must be a list of integers")
    if len(raw) not in (1, 2) or raw[1:] not in ([], [1]):
        raise BadRequest(
            f"{field}: expected [batch] (one string per sample) for input "
            f"{spec.input_name!r}, got {show(raw)}"
        )
    if not 1 <= raw[0] <= max_samples:
        raise BadRequest(f"{field}: batch must be between 1 and {max_samples}, got {raw[0]}")
    return int(raw[0])


def check_text_datatype(datatype: object, field: str) -> None:
    if datatype != "BYTES":
        raise BadRequest(f"{field}.datatype: this model takes text as BYTES, got {show(datatype)}")


def texts_from_json(data: object, count: int, field: str) -> list[str]:
    """`count` strings, flat or one per row ([["a"], ["b"]])."""
    if not isinstance(data, list):
        raise BadRequest(f"{field}.data: must be a list of {count} strings")
    flat = [row[0] if isinstance(row, list) and len(row) == 1 else row for row in data]
    bad = next((i for i, item in enumerate(flat) if not isinstance(item, str)), None)
    if bad is not None:
        raise BadRequest(f"{field}.data[{bad}]: must be a string, got {show(flat[bad])}")
    if len(flat) != count:
        raise BadRequest(f"{field}.data: {len(flat)} strings for shape's batch of {count}")
    return flat


def texts_from_binary(raw: memoryview, count: int, field: str) -> list[bytes]:
    """`count` length-prefixed elements that fill `raw` exactly."""
    texts: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if len(raw) - offset < PREFIX:
            raise BadRequest(f"{field}: element {len(texts)} has a truncated length prefix")
        length = int.from_bytes(raw[offset : offset + PREFIX], "little")
        offset += PREFIX
        if length > len(raw) - offset:
            raise BadRequest(
                f"{field}: element {len(texts)} declares {length} bytes, "
                f"only {len(raw) - offset} follow"
            )
        texts.append(bytes(raw[offset : offset + length]))
        offset += length
    if len(texts) != count:
        raise BadRequest(f"{field}: {len(texts)} BYTES elements for shape's batch of {count}")
    return texts


def texts_from_instances(instances: list[Any]) -> list[str]:
    """v1: each instance is the text itself."""
    bad = next((i for i, item in enumerate(instances) if not isinstance(item, str)), None)
    if bad is not None:
        raise BadRequest(f"instances[{bad}]: must be a string, got {show(instances[bad])}")
    return instances
