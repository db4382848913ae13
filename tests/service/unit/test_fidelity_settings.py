"""Fidelity settings: nested in Settings, a flag per field, env JSON merged, per model."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from service.fidelity import FidelityConfig
from service.serve_cmd import serve
from service.settings import Settings
from service.settings_flags import settings_values


def test_every_fidelity_field_has_a_flag() -> None:
    options = [p for p in serve.params if isinstance(p, click.Option)]
    flags = {opt for p in options for opt in (*p.opts, *p.secondary_opts)}
    for name in FidelityConfig.model_fields:
        assert "--fidelity-" + name.replace("_", "-") in flags, name
    assert {"--fidelity-enabled", "--no-fidelity-enabled", "--fidelity-frozen"} <= flags


def test_flags_merge_with_the_environment_and_models_override(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EXITSERVE_FIDELITY", '{"interval_s": 3, "min_samples": 50}')
    monkeypatch.setenv("EXITSERVE_MODEL_FIDELITY", '{"mnist": {"enabled": false}}')
    flags = {"fidelity_interval_s": 0.2, "fidelity_frozen": True, "model_repository": tmp_path}
    settings = Settings(**settings_values(flags))
    assert settings.fidelity.interval_s == 0.2  # the flag wins
    assert settings.fidelity.min_samples == 50  # the environment's other fields stay
    assert settings.fidelity.frozen
    assert settings.fidelity_for("tiny") == settings.fidelity
    assert not settings.fidelity_for("mnist").enabled
    monkeypatch.delenv("EXITSERVE_FIDELITY")
    assert Settings(model_repository=tmp_path).fidelity == FidelityConfig()
    assert FidelityConfig().enabled  # on by default for every model with a calibration
