"""The request middleware on its own: the last-resort 500 hides the error from the client
but logs it, and requests are counted by route name and status, never by raw path."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from service.api.middleware import CatchAll, RequestMetrics
from service.metrics import UNKNOWN, Metrics


async def _boom(request: Request) -> PlainTextResponse:
    raise RuntimeError("secret detail from /srv/models/x.onnx")


async def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _app(metrics: Metrics) -> Starlette:
    routes = [Route("/boom", _boom, name="boom"), Route("/m/{model_name}", _ok, name="model")]
    app = Starlette(routes=routes)
    app.add_middleware(CatchAll)
    app.add_middleware(RequestMetrics, metrics=metrics, serves=lambda name: name == "known")
    return app


def _get(app: Starlette, *paths: str) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [await client.get(p) for p in paths]

    return asyncio.run(run())


def test_unhandled_error_is_a_bare_500_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics(CollectorRegistry())
    with caplog.at_level(logging.ERROR, logger="service.api.middleware"):
        (response,) = _get(_app(metrics), "/boom")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}
    assert "secret" not in response.text
    assert "RuntimeError: secret detail" in caplog.text, "the traceback goes to the log"
    assert (
        metrics.value(
            "exitserve_requests_total", {"model": UNKNOWN, "endpoint": "boom", "code": "500"}
        )
        == 1
    )


def test_requests_counted_by_route_name_and_known_models_only() -> None:
    metrics = Metrics(CollectorRegistry())
    _get(_app(metrics), "/m/known", "/m/unknown-1", "/m/unknown-2", "/nowhere")

    def count(model: str, endpoint: str, code: str) -> float:
        labels = {"model": model, "endpoint": endpoint, "code": code}
        return metrics.value("exitserve_requests_total", labels)

    assert count("known", "model", "200") == 1
    assert count(UNKNOWN, "model", "200") == 2
    assert count(UNKNOWN, "unmatched", "404") == 1
