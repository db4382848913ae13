"""Reading a request body within `max_body_bytes`: refused with 413 before it is all read.

Content-Length is checked up front; a chunked body is counted as it streams in. Triton
clients may compress requests (Content-Encoding gzip or deflate); the limit then also
bounds the decompressed size, so a small bomb cannot grow into a large allocation.
A client that hangs up before its body is complete is ClientGone (499), not a server error.
"""

from __future__ import annotations

import zlib

from starlette.datastructures import Headers
from starlette.types import Receive

from service.errors import BadRequest, ClientGone, PayloadTooLarge, UnsupportedMediaType

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def read_body(headers: Headers, receive: Receive, max_bytes: int) -> bytes:
    """The (decompressed) body, or 413/415/400 naming the limit or header at fault.

    Read from ASGI `receive`, which a Starlette request and the protocol's infer lane
    (service/http_lane.py) both have.
    """
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in _WBITS and encoding != "identity":
        raise UnsupportedMediaType("Content-Encoding: only gzip, deflate or identity")
    declared = headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(_too_large(max_bytes))
    body = await _read_all(receive, max_bytes)
    return body if encoding == "identity" else _decompress(body, encoding, max_bytes)


def body_in_hand(body: bytes, max_bytes: int) -> bytes:
    """`read_body`'s limit for an uncompressed body already read whole (the infer lane)."""
    if len(body) > max_bytes:
        raise PayloadTooLarge(_too_large(max_bytes))
    return body


async def _read_all(receive: Receive, max_bytes: int) -> bytes:
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise ClientGone("the client closed the connection before sending the whole body")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(_too_large(max_bytes))
        chunks.append(chunk)
        more = bool(message.get("more_body", False))
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _decompress(body: bytes, encoding: str, max_bytes: int) -> bytes:
    inflater = zlib.decompressobj(_WBITS[encoding])
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error:
        raise BadRequest(f"Content-Encoding: the body is not valid {encoding} data") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise PayloadTooLarge(_too_large(max_bytes) + " (after decompression)")
    if not inflater.eof:
        raise BadRequest(f"Content-Encoding: the {encoding} data ends early")
    return out


def _too_large(max_bytes: int) -> str:
    return f"request body is larger than the {max_bytes} bytes allowed (max_body_bytes)"
