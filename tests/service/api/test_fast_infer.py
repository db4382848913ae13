"""The infer fast lane takes exactly the two v2 infer paths; everything else reaches FastAPI."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from service.api.fast_infer import FastInfer
from service.api.middleware import send_error


def _lane() -> tuple[FastInfer, list[str]]:
    reached: list[str] = []

    async def router(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(f"{scope['method']} {scope['path']}")
        await send_error(send, 404, "router")

    api = FastAPI()
    api.state.dataplane = SimpleNamespace(ready=False)  # the lane answers 503 by itself
    return FastInfer(router, api=api), reached


def _send(app: FastInfer, *requests: tuple[str, str]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [await client.request(m, p, content=b"{}") for m, p in requests]

    return asyncio.run(run())


def test_v2_infer_posts_are_answered_by_the_lane() -> None:
    lane, reached = _lane()
    answers = _send(
        lane, ("POST", "/v2/models/mnist/infer"), ("POST", "/v2/models/mnist/versions/12/infer")
    )
    assert reached == []
    assert [r.status_code for r in answers] == [503, 503]
    assert all("Retry-After" in r.headers for r in answers)
    assert answers[0].json() == {"error": "server is not ready: starting, or draining for shutdown"}


def test_other_methods_paths_and_names_go_to_the_router() -> None:
    lane, reached = _lane()
    requests = [
        ("GET", "/v2/models/mnist/infer"),
        ("POST", "/v2/models/mnist/ready"),
        ("POST", "/v2/models/bad name!/infer"),  # FastAPI answers 400 for the pattern
        ("POST", "/v2/models/mnist/versions/v1/infer"),
        ("POST", "/v1/models/mnist:predict"),
    ]
    assert [r.status_code for r in _send(lane, *requests)] == [404] * len(requests)
    assert reached == [f"{m} {p}" for m, p in requests]
