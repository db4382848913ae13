"""The runtime: the bound path's row graphs, thread-pool options, provider choice."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

from models.manifest import load_manifest
from service.device_rows import MAX_CONCAT_ARITY, Hidden
from service.runtime import ModelRuntime
from service.sessions import ProviderError, cuda_available, session_options
from service.settings import Settings
from tests.service.engine.conftest import Reference


@pytest.fixture
def bound(make_settings: Callable[..., Settings], tiny_repository: Path) -> ModelRuntime:
    folder = tiny_repository / "tiny" / "1"
    return ModelRuntime(load_manifest(folder), folder, make_settings(io_binding="on"))


def test_bound_path_keeps_hidden_states_in_ortvalues(
    bound: ModelRuntime, reference: Reference
) -> None:
    out = bound.run(0, reference.x[:6])
    assert isinstance(out.hidden, ort.OrtValue)
    np.testing.assert_allclose(out.probs, reference.probs[0][:6], atol=1e-5)
    host = out.hidden.numpy()
    rows = np.array([5, 0, 3], dtype=np.int64)
    taken = bound.take(out.hidden, rows)
    assert isinstance(taken, ort.OrtValue)
    np.testing.assert_array_equal(taken.numpy(), host[rows])
    parts = [bound.take(out.hidden, np.array([i % 6], dtype=np.int64)) for i in range(19)]
    assert len(parts) > MAX_CONCAT_ARITY  # merged in rounds
    merged = bound.concat(parts)
    assert isinstance(merged, ort.OrtValue)
    np.testing.assert_array_equal(merged.numpy(), host[[i % 6 for i in range(19)]])
    nxt = bound.run(1, bound.concat([out.hidden, taken]))
    assert nxt.probs.shape == (9, 10)
    np.testing.assert_allclose(nxt.probs[:6], reference.probs[1][:6], atol=1e-5)


def test_select_gathers_and_merges_parts_in_rounds_where_they_live(
    bound: ModelRuntime, reference: Reference
) -> None:
    out = bound.run(0, reference.x[:6])
    assert isinstance(out.hidden, ort.OrtValue)
    host = out.hidden.numpy()
    rng = np.random.default_rng(3)
    parts: list[tuple[Hidden, npt.NDArray[np.int64] | None]] = []
    expected = []
    for i in range(2 * MAX_CONCAT_ARITY + 3):  # merged in rounds
        rows = None if i % 4 == 0 else rng.integers(0, 6, 1 + i % 3).astype(np.int64)
        x: Hidden = host if i % 5 == 1 else out.hidden  # host parts are moved over
        parts.append((x, rows))
        expected.append(host if rows is None else host[rows])
    merged = bound.select(parts)
    assert isinstance(merged, ort.OrtValue)
    np.testing.assert_array_equal(merged.numpy(), np.concatenate(expected))
    assert bound.select([(out.hidden, None)]) is out.hidden  # nothing to do


def test_per_session_pools_do_not_spin(make_settings: Callable[..., Settings]) -> None:
    opts = session_options(make_settings(intra_op_threads=2))
    assert opts.intra_op_num_threads == 2
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    spinning = session_options(make_settings(allow_spinning=True))
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_global_thread_pool_serves_the_same_answers(tiny_repository: Path) -> None:
    """In a fresh process: the global pool is process-wide and can be set only once."""
    code = f"""
import numpy as np
from pathlib import Path
from models.manifest import load_manifest
from service.runtime import ModelRuntime
from service.settings import Settings
folder = Path({str(tiny_repository / "tiny" / "1")!r})
x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
answers = []
for pool in ("global", "per_session", "global"):
    s = Settings(model_repository=folder.parent.parent, device="cpu", thread_pool=pool)
    rt = ModelRuntime(load_manifest(folder), folder, s)
    answers.append(rt.run(0, x).probs)
assert all(np.allclose(a, answers[0], atol=1e-6) for a in answers)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.cpu_only
@pytest.mark.skipif(cuda_available(), reason="this host has CUDA")
def test_device_cuda_without_cuda_is_a_clear_error(
    make_settings: Callable[..., Settings], tiny_repository: Path
) -> None:
    folder = tiny_repository / "tiny" / "1"
    with pytest.raises(ProviderError, match="device=cuda"):
        ModelRuntime(load_manifest(folder), folder, make_settings(device="cuda"))
