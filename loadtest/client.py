"""A minimal Open Inference Protocol v2 client for load generation (JSON or binary tensors).

The request bodies are encoded once per sample up front, so the generator spends its CPU
on sending, not on serialising.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import numpy as np
import numpy.typing as npt
import orjson

Encoding = Literal["json", "binary"]
HEADER_LENGTH = "Inference-Header-Content-Length"
OUTPUTS = ("label", "exit_index")


@dataclass(frozen=True)
class EncodedRequest:
    """A ready-to-send body with its headers, and the labels of its samples."""

    body: bytes
    headers: dict[str, str]
    labels: npt.NDArray[np.int64]


@dataclass
class Reply:
    """What one request came back with."""

    status: int
    latency_s: float
    labels: list[int] = field(default_factory=list)
    exits: list[int] = field(default_factory=list)


def encode(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    encoding: Encoding,
    parameters: dict[str, Any] | None = None,
) -> EncodedRequest:
    """Encode a batch of samples as one v2 infer request."""
    tensor: dict[str, Any] = {"name": "input", "datatype": "FP32", "shape": list(x.shape)}
    outputs = [{"name": n, "parameters": {"binary_data": False}} for n in OUTPUTS]
    header: dict[str, Any] = {"inputs": [tensor], "outputs": outputs}
    if parameters:
        header["parameters"] = parameters
    if encoding == "json":
        tensor["data"] = x.reshape(-1).tolist()
        return EncodedRequest(orjson.dumps(header), {"Content-Type": "application/json"}, y)
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    tensor["parameters"] = {"binary_data_size": len(raw)}
    head = orjson.dumps(header)
    headers = {HEADER_LENGTH: str(len(head)), "Content-Type": "application/octet-stream"}
    return EncodedRequest(head + raw, headers, y)


def encode_text(
    texts: list[str], labels: npt.NDArray[np.int64], parameters: dict[str, Any] | None = None
) -> EncodedRequest:
    """One v2 request of BYTES texts (binary extension: 4-byte little-endian length, then
    the UTF-8 bytes, per element), for a text model."""
    raw = b"".join(len(b).to_bytes(4, "little") + b for b in (t.encode() for t in texts))
    tensor: dict[str, Any] = {"name": "text", "datatype": "BYTES", "shape": [len(texts)]}
    tensor["parameters"] = {"binary_data_size": len(raw)}
    outputs = [{"name": n, "parameters": {"binary_data": False}} for n in OUTPUTS]
    header: dict[str, Any] = {"inputs": [tensor], "outputs": outputs}
    if parameters:
        header["parameters"] = parameters
    head = orjson.dumps(header)
    headers = {HEADER_LENGTH: str(len(head)), "Content-Type": "application/octet-stream"}
    return EncodedRequest(head + raw, headers, labels)


def parse_reply(status: int, body: bytes, latency_s: float) -> Reply:
    """Pull labels and exits out of a JSON v2 response; errors keep only their status."""
    if status != 200:
        return Reply(status, latency_s)
    outputs = {o["name"]: o["data"] for o in orjson.loads(body)["outputs"]}
    return Reply(status, latency_s, list(outputs["label"]), list(outputs["exit_index"]))


async def send(
    session: aiohttp.ClientSession, url: str, request: EncodedRequest, timeout_s: float
) -> Reply:
    """POST one request; a transport failure is reported as status 0, never raised."""
    start = time.perf_counter()
    try:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with session.post(
            url, data=request.body, headers=request.headers, timeout=timeout
        ) as resp:
            body = await resp.read()
            return parse_reply(resp.status, body, time.perf_counter() - start)
    except (aiohttp.ClientError, TimeoutError):
        return Reply(0, time.perf_counter() - start)
