"""The app factory: wires settings, data plane, metrics, routes, errors and middleware.

Nothing runs at import time; `create_app` builds an app and its lifespan starts the data
plane. Tests pass their own data plane or registry; `exitserve serve` passes neither.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from service.api import infer_routes, model_routes, repository_routes, server_routes
from service.api.errors import install_error_handlers
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
    app = FastAPI(
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
    app.add_middleware(RequestMetrics, metrics=metrics, serves=dataplane.serves)
    return app


def _version() -> str:
    try:
        return version("exitserve")
    except PackageNotFoundError:
        return "0.0.0"
