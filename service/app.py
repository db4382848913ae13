"""The app factory: wires settings, data plane, metrics, routes, errors and middleware.

Nothing runs at import time; `create_app` builds an app and its lifespan starts the data
plane. Tests pass their own data plane or registry; `exitserve serve` passes neither.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api import infer_routes, model_routes, repository_routes, server_routes
from service.api.errors import install_error_handlers
from service.api.fast_infer import FastInfer, fast_path
from service.api.middleware import CatchAll, RequestMetrics
from service.api.openapi import install_openapi
from service.lifecycle import Lifecycle
from service.metrics import Metrics
from service.settings import Settings

if TYPE_CHECKING:
    from service.dataplane import DataPlane

DESCRIPTION = (
    "Open Inference Protocol v2 (JSON and binary tensors) and a v1 predict "
    "endpoint for multi-exit networks. See docs/api.md."
)


def create_app(
    settings: Settings,
    dataplane: DataPlane | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """An app serving `settings.model_repository`; the lifespan starts and drains it.

    Request metrics go where the data plane records: into its `.metrics` when a data plane
    is passed in, else into a Metrics on `registry` (fresh by default) that the data plane
    built here also gets. The metrics port serves that registry.
    """
    registry = registry if registry is not None else CollectorRegistry()
    metrics = getattr(dataplane, "metrics", None)
    if not isinstance(metrics, Metrics):
        metrics = Metrics(registry)
    if dataplane is None:
        from service.dataplane import DataPlane  # onnxruntime loads only when serving

        dataplane = DataPlane(settings, metrics)
    lifecycle = Lifecycle(dataplane, settings, metrics.registry)
    app = ExitServeApp(
        title="exitserve",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifecycle.lifespan,
        redoc_url=None,
    )
    app.state.settings, app.state.dataplane = settings, dataplane
    app.state.metrics, app.state.lifecycle = metrics, lifecycle
    routers = (server_routes, model_routes, infer_routes, repository_routes)
    for module in routers:
        app.include_router(module.router)
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(CatchAll)
    app.add_middleware(RequestMetrics, metrics=metrics, model_names=dataplane.model_names)
    # v2 infer: the same error and metrics layers, without FastAPI's own around them
    lane = FastInfer(app.router, api=app)
    app.fast = RequestMetrics(CatchAll(lane), metrics=metrics, model_names=dataplane.model_names)
    return app


class ExitServeApp(FastAPI):
    """FastAPI, with v2 infer requests taken before its middleware stack.

    FastAPI wraps every app middleware in its own (server errors, telemetry, body limit):
    five awaiting layers per request, most wrapping `send`, about as much as the infer
    handler itself at one sample per request. The fast lane gets the app's own error and
    metrics layers only; everything else (and lifespan) goes through FastAPI as before.
    """

    fast: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast is not None and scope["type"] == "http" and fast_path(scope) is not None:
            scope["app"] = self
            await self.fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _version() -> str:
    try:
        return version("exitserve")
    except PackageNotFoundError:
        return "0.0.0"
