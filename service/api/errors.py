"""Error responses: every failure the client sees is `{"error": "..."}` with its status.

ExitServeError carries status and headers; FastAPI/Starlette's own errors (unknown route,
wrong method, path validation) are mapped here too, so no handler is copy-pasted.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from service.api.context import json_response
from service.errors import ExitServeError

_MESSAGES = {404: "no such endpoint", 405: "method not allowed on this endpoint"}


def error_response(
    status_code: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    return json_response({"error": message}, status_code, headers)


def exitserve_response(exc: ExitServeError) -> Response:
    return error_response(exc.status_code, exc.message, exc.headers)


async def _exitserve(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ExitServeError)
    return exitserve_response(exc)


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = _MESSAGES.get(exc.status_code, str(exc.detail))
    if exc.status_code in _MESSAGES:
        message = f"{message}: {request.method} {request.url.path[:200]}"
    return error_response(exc.status_code, message, dict(exc.headers or {}))


async def _validation(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error_response(400, f"{where}: {first.get('msg', 'invalid')}")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ExitServeError, _exitserve)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
