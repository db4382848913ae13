"""Reading request bodies as JSON objects: orjson, and messages a client can act on."""

from __future__ import annotations

from typing import Any

import orjson

from service.errors import BadRequest

_SHOW_MAX = 40


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
