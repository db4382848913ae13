"""One real server for the API tests (per session), an HTTP client, the reference model
and real MNIST digits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from tests.service.api.v2helpers import BODY_LIMIT, MAX_SAMPLES, MODEL, Reference, load_reference
from tests.service.conftest import LiveServer, LiveServerFactory


@pytest.fixture(scope="session")
def reference(tiny_repository: Path) -> Reference:
    return load_reference(tiny_repository / MODEL / "1")


@pytest.fixture(scope="session")
def server(live_server: LiveServerFactory) -> Iterator[LiveServer]:
    args = [
        "--max-body-bytes",
        str(BODY_LIMIT),
        "--max-samples-per-request",
        str(MAX_SAMPLES),
        "--device",
        "cpu",
    ]
    with live_server(args=args) as running:
        yield running


@pytest.fixture(scope="session")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        yield c


@pytest.fixture(scope="session")
def samples(mnist_samples: tuple[np.ndarray, np.ndarray]) -> npt.NDArray[np.float32]:
    """48 real test digits, float32 (N, 1, 28, 28)."""
    x, _ = mnist_samples
    return np.ascontiguousarray(x[:48], dtype=np.float32)
