"""Reading request bodies as JSON objects: orjson, and messages a client can act on."""

from __future__ import annotations

from typing import Any

import orjson

from service.errors import BadRequest, PayloadTooLarge

_SHOW_MAX = 40
# Compact JSON needs at most this many bytes per number, separator included: float64's
# shortest form takes at most 24 characters ("-2.2250738585072014e-308"), then ", ".
JSON_BYTES_PER_VALUE = 32
# Everything in a request besides the numbers: id, parameters, outputs, names, shapes.
JSON_ENVELOPE_BYTES = 64 << 10


def check_json_size(size: int, sample_values: int, max_samples: int, what: str) -> None:
    """413 for JSON longer than any valid request, before it is parsed.

    A body within max_body_bytes can still carry far more numbers than
    max_samples_per_request allows, and parsed JSON takes ~12 times its size in memory.
    """
    budget = JSON_ENVELOPE_BYTES + sample_values * max_samples * JSON_BYTES_PER_VALUE
    if size > budget:
        raise PayloadTooLarge(
            f"{what} is {size} bytes, longer than any valid request: at most {max_samples} "
            f"samples (max_samples_per_request) of {sample_values} numbers, "
            f"{JSON_BYTES_PER_VALUE} bytes each, fit in {budget}; send binary tensors"
        )


def load_object(raw: bytes | memoryview, what: str = "request body") -> dict[str, Any]:
    """Parse `raw` as a JSON object; anything else is a 400 that says where it broke."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return doc


def show(value: object) -> str:
    """A client-sent value quoted in an error message, cut short so messages stay small."""
    text = repr(value)
    return text if len(text) <= _SHOW_MAX else text[: _SHOW_MAX - 3] + "..."
