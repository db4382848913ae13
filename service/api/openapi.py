"""The OpenAPI document, with the protocol models the routes parse by hand added to it.

Infer bodies are decoded by the fast codec, not by FastAPI, so their schemas are only
referenced from `openapi_extra`; this puts the referenced models into `components`.
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
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)  # fmt: skip
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in COMPONENTS:
                body = model.model_json_schema(ref_template=REF)
                schemas.update(body.pop("$defs", {}))
                schemas[model.__name__] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
