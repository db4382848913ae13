"""Errors that carry their HTTP status; one handler in the HTTP layer maps them to responses.

Messages are written for the client: they name the field and the problem and never carry
a traceback or a filesystem path.
"""

from __future__ import annotations

import orjson


def error_body(message: str) -> bytes:
    """The body of every error response: `{"error": message}`."""
    return orjson.dumps({"error": message})


class ExitServeError(Exception):
    """Base class: `status_code` and optional headers travel with the message."""

    status_code = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ExitServeError):
    status_code = 400


class Unauthorized(ExitServeError):
    status_code = 401

    def __init__(self, message: str = "missing or invalid bearer token") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class NotFound(ExitServeError):
    status_code = 404


class PayloadTooLarge(ExitServeError):
    status_code = 413


class UnsupportedMediaType(ExitServeError):
    status_code = 415


class Overloaded(ExitServeError):
    """Load shedding: the queue is full; the client should come back later."""

    status_code = 429

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class NotReady(ExitServeError):
    """Starting, draining for shutdown, or the model is not loaded yet."""

    status_code = 503

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class RequestTimeout(ExitServeError):
    status_code = 504


class InferenceFailed(ExitServeError):
    """A segment run raised; every request in that batch gets this, the server carries on."""

    status_code = 500


class ClientGone(ExitServeError):
    """The client hung up before its answer was ready; 499 as nginx logs it, read by nobody."""

    status_code = 499
