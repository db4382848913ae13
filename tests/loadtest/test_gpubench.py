"""The GPU section's bookkeeping: it survives CPU-only bench runs and reads the real overlay."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest import gpubench
from service.settings import Settings


def test_overlay_settings_are_valid_server_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = gpubench.overlay_env()
    assert env["EXITSERVE_DEVICE"] == "cuda"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.device == "cuda"
    assert settings.batching.max_batch_size >= 64


def test_a_section_replaces_the_last_one_and_is_kept_by_a_run_without_gpu(tmp_path: Path) -> None:
    doc = "# Benchmarks\n\n## 5. Sweep\n\nrows\n"
    first = gpubench.splice(doc, [gpubench.BEGIN, "## GPU", "old figures", gpubench.END])
    second = gpubench.splice(first, [gpubench.BEGIN, "## GPU", "new figures", gpubench.END])
    assert second.count(gpubench.BEGIN) == 1
    assert "new figures" in second
    assert "old figures" not in second
    assert second.startswith(doc.rstrip("\n"))
    path = tmp_path / "benchmarks.md"
    path.write_text(second)
    kept = gpubench.kept_section(path)
    assert kept is not None
    assert "new figures" in kept[0]
    assert gpubench.splice(second, kept) == second
    path.write_text(doc)
    assert gpubench.kept_section(path) is None
