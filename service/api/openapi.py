"""The OpenAPI document, true to what the server does.

Infer bodies are decoded by the fast codec, not by FastAPI, so their schemas are only
referenced from `openapi_extra`; this puts the referenced models into `components`. And
parameter errors are 400 here, not FastAPI's 422, so the 422 entries go.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.protocol.schema import COMPONENTS

REF = "#/components/schemas/{model}"


def install_openapi(app: FastAPI) -> None:
    """Replace `app.openapi` with a builder that also emits the hand-parsed body models."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            _add_components(schema)
            _drop_422(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]


def _add_components(schema: dict[str, Any]) -> None:
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in COMPONENTS:
        body = model.model_json_schema(ref_template=REF)
        schemas.update(body.pop("$defs", {}))
        schemas[model.__name__] = body


def _drop_422(schema: dict[str, Any]) -> None:
    """FastAPI documents 422 for parameter errors; this server answers those with 400."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)
