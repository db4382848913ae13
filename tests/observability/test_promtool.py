"""`promtool` accepts the scrape config and rules, and the alert unit tests pass."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.observability.promql import PROMETHEUS_CONFIG, RULES, RULES_TEST

PROMTOOL = shutil.which("promtool")

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: prometheus)"),
]


def _promtool(*args: str) -> str:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    return out


def test_check_config() -> None:
    assert "SUCCESS" in _promtool("check", "config", str(PROMETHEUS_CONFIG))


def test_check_rules() -> None:
    assert "SUCCESS" in _promtool("check", "rules", str(RULES))


def test_alert_unit_tests() -> None:
    assert "SUCCESS" in _promtool("test", "rules", str(RULES_TEST))
