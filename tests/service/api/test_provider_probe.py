"""Starting with --device auto says once, in one INFO line, which execution provider runs
the models and why, and onnxruntime prints no error of its own while the server finds out
(on a CPU-only host it used to print a red "Failed to load library ...cuda..." each start)."""

from __future__ import annotations

import re

from tests.service.conftest import LiveServerFactory

ANNOUNCEMENT = re.compile(
    r" INFO service\.sessions: onnxruntime execution provider: (\w+) \((.+)\)$"
)


def test_device_auto_start_is_quiet_and_names_the_provider(live_server: LiveServerFactory) -> None:
    with live_server(args=["--device", "auto"]) as server:
        log = server.log()
    lines = log.splitlines()
    assert not [line for line in lines if "E:onnxruntime" in line], log
    announced = [m for m in map(ANNOUNCEMENT.search, lines) if m]
    assert len(announced) == 1, log
    provider, why = announced[0].groups()
    assert provider in ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert why.startswith("device=auto")
    if provider == "CPUExecutionProvider":  # the fallback is explained, not warned about
        assert "CUDA" in why
        assert not [line for line in lines if "W:onnxruntime" in line], log
