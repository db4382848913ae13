"""`exitserve serve` settings: every setting has a flag, flags beat `EXITSERVE_*` variables
(nested batching merges), and bad settings end the command with exit 2 and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from service.serve_cmd import serve
from service.settings import Settings
from service.settings_flags import NO_FLAG, flag_name, settings_values


def test_every_setting_has_a_flag() -> None:
    flags = {opt for p in serve.params if isinstance(p, click.Option) for opt in p.opts}
    for name in Settings.model_fields:
        if name not in NO_FLAG:
            assert flag_name(name) in flags, name
    assert {"--port", "--max-batch-size", "--max-queue-delay-ms", "--model-repository"} <= flags
    assert not any("token" in f for f in flags), "the admin token must not be a flag"


def test_flags_override_environment_and_batching_merges(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EXITSERVE_BATCHING", '{"max_queue_delay_ms": 7, "max_batch_size": 3}')
    monkeypatch.setenv("EXITSERVE_HTTP_PORT", "9001")
    monkeypatch.setenv("EXITSERVE_HOST", "0.0.0.0")
    flags = {"http_port": 9100, "max_batch_size": 64, "model_repository": tmp_path, "host": None}
    settings = Settings(**settings_values(flags))
    assert settings.http_port == 9100
    assert settings.host == "0.0.0.0"
    assert settings.batching.max_batch_size == 64
    assert settings.batching.max_queue_delay_ms == 7


def test_per_stage_batch_sizes_come_as_a_comma_separated_flag(tmp_path: Path) -> None:
    option = next(p for p in serve.params if "--max-batch-sizes" in p.opts)
    sizes = option.type_cast_value(click.Context(serve), "64, 16")
    settings = Settings(**settings_values({"max_batch_sizes": sizes, "model_repository": tmp_path}))
    assert settings.batching.max_batch_sizes == [64, 16]
    assert [settings.batching.max_batch_at(k) for k in range(3)] == [64, 16, 32]
    with pytest.raises(click.BadParameter, match="comma-separated list of integers"):
        option.type_cast_value(click.Context(serve), "64,lots")


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--port", "70000"], {}, "--port / EXITSERVE_HTTP_PORT"),
        (["--metrics-port", "8000", "--port", "8000"], {}, "metrics_port must differ"),
        (["--max-batch-size", "0"], {}, "--max-batch-size"),
        (["--max-batch-sizes", "64,0"], {}, "--max-batch-sizes"),
        ([], {"EXITSERVE_MAX_BODY_BYTES": "lots"}, "EXITSERVE_MAX_BODY_BYTES"),
        (["--model-repository", "/does/not/exist"], {}, "is not a folder"),
    ],
    ids=[
        "port range",
        "same ports",
        "batch size",
        "stage batch size",
        "env not a number",
        "no repository",
    ],
)
def test_bad_settings_exit_2_with_a_clear_message(
    args: list[str], env: dict[str, str], says: str, tmp_path: Path
) -> None:
    repo = [] if "--model-repository" in args else ["--model-repository", str(tmp_path)]
    done = _serve(*repo, *args, env=env)
    assert done.returncode == 2, done.stderr
    assert "invalid settings" in done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
