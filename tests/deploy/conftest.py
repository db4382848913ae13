"""Fixtures for the deployment tests: every kustomization rendered once, the real app's routes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.manifests import AppRoutes, Doc, kustomizations, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Doc]]:
    """kustomization folder (relative, e.g. deploy/k8s/overlays/gpu) -> its rendered documents."""
    return {str(k): render(k) for k in kustomizations()}


@pytest.fixture(scope="session")
def routes(tmp_path_factory: pytest.TempPathFactory) -> AppRoutes:
    # An empty folder is enough: routes exist before any model loads.
    return AppRoutes(Path(tmp_path_factory.mktemp("empty-repository")))
