"""Encoding a v2 infer response: JSON tensors, or a JSON header followed by raw bytes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.protocol.datatypes import OUTPUT_DATATYPES
from service.protocol.outputs import OutputRequest
from service.protocol.v2_decode import HEADER_LENGTH
from service.types import InferenceResult

JSON = "application/json"
BINARY = "application/octet-stream"


@dataclass(frozen=True)
class EncodedResponse:
    """A response body with its media type and extra headers."""

    body: bytes
    media_type: str
    headers: dict[str, str]


def encode_infer(
    result: InferenceResult, outputs: tuple[OutputRequest, ...], request_id: str | None
) -> EncodedResponse:
    """The requested outputs in the requested order; binary ones go after the JSON header."""
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for out in outputs:
        arr = np.ascontiguousarray(getattr(result, out.name))
        entry: dict[str, Any] = {
            "name": out.name,
            "datatype": OUTPUT_DATATYPES[arr.dtype],
            "shape": list(arr.shape),
        }
        if out.binary:
            raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = arr.reshape(-1)
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": result.model, "model_version": result.version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = entries
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return EncodedResponse(head, JSON, {})
    return EncodedResponse(head + b"".join(chunks), BINARY, {HEADER_LENGTH: str(len(head))})
