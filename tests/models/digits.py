"""Real small data for the build-pipeline tests: scikit-learn's bundled 8×8 digits.

1,797 real handwritten digits, shipped inside scikit-learn (no download), so a test can
build a digits-sized model in seconds. scikit-learn is in the `dev` extra: a missing
install fails the import here rather than skipping.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner, Result
from sklearn.datasets import load_digits

from service.cli import main

# a 3-exit residual net small enough to train 8×8 digits in a few seconds on one thread
TINY = [
    *("--arch-option", "width=8", "--arch-option", "depth=(1, 1, 1)"),
    *("--percentiles", "0.3,0.65,1", "--threads", "1", "--no-progress"),
]


def digits_arrays() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """x (1797, 8, 8) floats in [0, 1] and y the digit, as a user would save them."""
    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


@pytest.fixture(scope="session", name="digits_npz")
def digits_npz_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits as a user's `.npz` with arrays `x` and `y`."""
    x, y = digits_arrays()
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    np.savez(path, x=x, y=y)
    return path


def invoke(*args: str) -> Result:
    """Run `exitserve ARGS` as a user would, exceptions turned into exit codes."""
    return CliRunner().invoke(main, list(args))


def error_line(result: Result) -> str:
    """The single `Error:` line of a failed command; no traceback allowed."""
    assert "Traceback" not in result.output, result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def leftovers(out: Path) -> list[str]:
    """Everything under a repository folder, relative to it (hidden folders included)."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*")) if out.exists() else []
