"""OpenAPI pieces shared by the routes: documented error responses and request bodies."""

from __future__ import annotations

from typing import Any

from service.protocol.schema import ErrorResponse

_ERROR_TEXT = {
    400: "malformed request; the message names the field",
    401: "missing or invalid bearer token",
    403: "the repository API is off: the server has no admin token",
    404: "unknown model or version",
    413: "request body over max_body_bytes",
    415: "unsupported Content-Encoding",
    429: "queue full: retry after Retry-After seconds",
    500: "a segment run failed, or an internal error (no details leak)",
    503: "not ready: starting, draining for shutdown, or model not loaded; see Retry-After",
    504: "the request waited longer than request_timeout_s",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for the given status codes, each an ErrorResponse."""
    return {c: {"model": ErrorResponse, "description": _ERROR_TEXT[c]} for c in codes}


LOOKUP_ERRORS = errors(400, 404)
INFER_ERRORS = errors(400, 404, 413, 415, 429, 500, 503, 504)

HEADER_LENGTH_PARAM = {
    "name": "Inference-Header-Content-Length",
    "in": "header",
    "required": False,
    "schema": {"type": "integer", "minimum": 1},
    "description": "binary tensor extension: byte length of the JSON header that starts the "
    "body; the raw tensor bytes follow it",
}


def json_body(schema_name: str, binary: bool = False) -> dict[str, Any]:
    """`openapi_extra` documenting a body the route parses itself (no pydantic walk)."""
    content: dict[str, Any] = {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}
    }
    extra: dict[str, Any] = {"requestBody": {"required": True, "content": content}}
    if binary:
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
        extra["parameters"] = [HEADER_LENGTH_PARAM]
    return extra
