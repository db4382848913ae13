"""Engine tests: a data plane on the shared `tiny` model, and an independent reference.

The reference runs each segment with a bare onnxruntime session, outside the engine, so
parity tests compare the engine against the model itself rather than against its own code.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from prometheus_client import CollectorRegistry

from models.manifest import Manifest, load_manifest
from service.dataplane import DataPlane
from service.metrics import Metrics
from service.scheduler import BatchTrace
from service.settings import Settings

TEST_TIMEOUT_S = 30.0
Probs = npt.NDArray[np.float32]


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run an async test body with an overall bound, so a hang fails instead of blocking."""
    asyncio.run(asyncio.wait_for(test(), TEST_TIMEOUT_S))


@asynccontextmanager
async def started(settings: Settings, trace: BatchTrace | None = None) -> AsyncIterator[DataPlane]:
    plane = DataPlane(settings, Metrics(CollectorRegistry()), trace=trace)
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop()


@pytest.fixture
def make_settings(tiny_repository: Path) -> Callable[..., Settings]:
    """Settings on the tiny repository, CPU, with per-test overrides."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"model_repository": tiny_repository, "device": "cpu"}
        return Settings(**{**values, **overrides})

    return make


@dataclass(frozen=True)
class Reference:
    """Every exit's probabilities for the samples, computed segment by segment."""

    manifest: Manifest
    x: npt.NDArray[np.float32]
    probs: list[Probs]  # one (N, C) per exit

    def exits(self, rule: Callable[[int, Probs], npt.NDArray[np.bool_]]) -> npt.NDArray[np.int32]:
        """The first exit whose rule holds for each sample (the last exit always holds)."""
        out = np.full(len(self.x), len(self.probs) - 1, dtype=np.int32)
        for k in reversed(range(len(self.probs) - 1)):
            out[rule(k, self.probs[k])] = k
        return out


def reference_probs(version_dir: Path, x: npt.NDArray[np.float32]) -> list[Probs]:
    manifest = load_manifest(version_dir)
    hidden, probs = x, []
    for seg in manifest.segments:
        sess = ort.InferenceSession(str(version_dir / seg.file), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        outs = dict(zip(names, sess.run(names, {seg.input.name: hidden}), strict=True))
        probs.append(np.asarray(outs[seg.probs_output], dtype=np.float32))
        if seg.hidden_output is not None:
            hidden = outs[seg.hidden_output.name]
    return probs


@pytest.fixture(scope="session")
def reference(
    tiny_repository: Path, mnist_samples: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
) -> Reference:
    version_dir = tiny_repository / "tiny" / "1"
    x = np.ascontiguousarray(mnist_samples[0][:96], dtype=np.float32)
    return Reference(load_manifest(version_dir), x, reference_probs(version_dir, x))


def split_threshold(scores: npt.NDArray[np.float32]) -> float:
    """A threshold halfway between two neighbouring distinct scores near the median, so that
    about half the samples pass and none sits on the boundary."""
    distinct = np.unique(scores)
    assert len(distinct) >= 2, "samples must differ to split them"
    mid = len(distinct) // 2
    return float((distinct[mid - 1] + distinct[mid]) / 2)
