"""The CUDA path: hidden states stay on the device and answers match the CPU."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from models.manifest import load_manifest
from service.runtime import ModelRuntime
from service.sessions import cuda_available
from service.settings import Settings
from service.types import InferenceInput, PolicyOverride
from tests.service.engine.conftest import Reference, run, started

# onnxruntime's CUDA provider runs convolutions in TF32 by default (10-bit mantissa); on an
# H100 the tiny model's probabilities then differ from the CPU's by up to ~3e-4 at full depth.
CUDA_ATOL = 2e-3

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not cuda_available(), reason="needs a CUDA device"),
]


def test_cuda_runtime_keeps_hidden_rows_on_the_device(
    make_settings: Callable[..., Settings], tiny_repository: Path, reference: Reference
) -> None:
    folder = tiny_repository / "tiny" / "1"
    runtime = ModelRuntime(load_manifest(folder), folder, make_settings(device="cuda"))
    assert runtime.bound
    out = runtime.run(0, reference.x[:8])
    assert isinstance(out.hidden, ort.OrtValue)
    assert out.hidden.device_name().lower() == "cuda"
    rows = np.array([7, 1, 4], dtype=np.int64)
    taken = runtime.take(out.hidden, rows)
    merged = runtime.concat([taken, out.hidden])
    assert isinstance(merged, ort.OrtValue)
    assert merged.device_name().lower() == "cuda"
    np.testing.assert_allclose(merged.numpy()[:3], out.hidden.numpy()[rows], atol=0)
    deeper = runtime.run(1, merged)
    np.testing.assert_allclose(deeper.probs[3:], reference.probs[1][:8], atol=CUDA_ATOL)


def test_cuda_data_plane_matches_the_cpu_reference(
    make_settings: Callable[..., Settings], reference: Reference
) -> None:
    async def test() -> None:
        async with started(make_settings(device="cuda")) as plane:
            chunks = [reference.x[i : i + 5] for i in range(0, len(reference.x), 5)]
            for override in (PolicyOverride(), PolicyOverride(full_depth=True)):
                results = await asyncio.gather(
                    *(plane.infer(InferenceInput("tiny", None, c, override)) for c in chunks)
                )
                exits = np.concatenate([r.exit_index for r in results])
                probs = np.concatenate([r.probabilities for r in results])
                answered = np.stack([reference.probs[e][i] for i, e in enumerate(exits)])
                np.testing.assert_allclose(probs, answered, atol=CUDA_ATOL)
            assert (exits == 2).all()

    run(test)
