"""The GPU section's bookkeeping and its ceilings, exercised on the CPU provider.

No GPU here: the device chain runs with I/O binding on the CPU provider (the same code
path, device "cpu"), and the section's markdown is rendered from made-up json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from loadtest import devicechain, gpubench, inprocess, servingloop
from loadtest.benchdoc import GEN_BEGIN
from loadtest.benchsteps import Load
from loadtest.doccheck import stray_numbers
from service.settings import Settings

OLD_SECTION = [
    gpubench.BEGIN,
    "## GPU",
    "",
    "Measured 2026-11-26 05:20 UTC on an old card: 23061 samples/s.",
    gpubench.END,
]


def test_overlay_settings_are_valid_server_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = gpubench.overlay_env()
    assert env["EXITSERVE_DEVICE"] == "cuda"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.device == "cuda"
    assert settings.batching.max_batch_size >= 64
    assert settings.batching.batches_in_flight >= 2  # the variant below then differs


def test_the_one_in_flight_variant_changes_only_that_setting() -> None:
    env = gpubench.overlay_env()
    single = gpubench.one_in_flight(env)
    got, overlay = (json.loads(e["EXITSERVE_BATCHING"]) for e in (single, env))
    assert got == {**overlay, "batches_in_flight": 1}
    assert {k: v for k, v in single.items() if k != "EXITSERVE_BATCHING"} == {
        k: v for k, v in env.items() if k != "EXITSERVE_BATCHING"
    }


def test_a_section_from_before_the_rework_is_kept_but_marked(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text(gpubench.splice("# Benchmarks\n", OLD_SECTION))
    block, gpu_json = gpubench.resolve(gpubench.Section(None, None), path)
    assert gpu_json is None
    assert "From an earlier run (2026-11-26), before the benchmark was reworked" in block
    assert "23061" in block  # kept as it was
    assert GEN_BEGIN not in block  # and outside the part checked against the json
    assert gpubench.mark_earlier(block) == block  # marked once


def test_a_generated_section_round_trips_with_its_json(tmp_path: Path) -> None:
    spread = {"median": 2.5, "min": 2.0, "max": 3.0, "rounds": [2.0, 2.5, 3.0]}
    level = {"load": "64/request", "mode": "early exit", "server": spread, "loop": spread}
    level.update(device=spread, server_vs_loop=spread, loop_vs_device=spread)
    gpu = {
        "run": {
            "started": "2031-01-01 00:00 UTC",
            "card": "Card 7",
            "rounds": 3,
            "device_batch": 256,
        },
        "batching": '{"max_batch_size": 256}',
        "levels": [level],
        "rows": [],
        "accuracy": {"images": 3968, "early_exit": 0.98, "full_depth": 0.99, "agreement": 0.97},
    }
    gpu["run"].update(seconds=3.0, command="python -m loadtest.bench --gpu-only")
    path = tmp_path / "benchmarks.md"
    path.write_text(gpubench.splice("# Benchmarks\n", gpubench.render(gpu)))
    path.with_suffix(".json").write_text(json.dumps({"gpu": gpu}))
    block, kept = gpubench.resolve(gpubench.Section(None, None), path)
    assert kept == gpu
    assert stray_numbers(block, {"gpu": gpu}) == []
    assert stray_numbers(block.replace("3968", "3969"), {"gpu": gpu}) == ["3969"]


def test_the_bound_chain_computes_what_the_plain_chain_does(
    tiny_model_dir: Path, mnist_samples
) -> None:
    x, _ = mnist_samples
    chain = devicechain.load(tiny_model_dir, devicechain.CPU)
    depth = len(chain.sessions)
    bindings = devicechain.bind(chain, x, [64] * depth, devicechain.CPU)
    devicechain.run_queued(chain, bindings, ort.RunOptions())
    hidden = x[:64]
    for k in range(depth):
        nxt, probs = chain.run_segment(k, hidden)
        hidden = nxt if nxt is not None else hidden
    np.testing.assert_allclose(devicechain.last_probs(bindings), probs, rtol=1e-5, atol=1e-6)


def test_the_device_ceiling_runs_fewer_rows_deeper_when_samples_exit(
    tiny_model_dir: Path, mnist_samples
) -> None:
    x, _ = mnist_samples
    chain = devicechain.load(tiny_model_dir, devicechain.CPU)
    rows = devicechain.survivors(chain, x, 64)
    _, exits = inprocess.early_exit(chain, x)
    assert rows[0] == 64
    assert rows == sorted(rows, reverse=True)
    assert rows[1] == max(1, round(64 * float((exits >= 1).mean())))
    assert devicechain.ceiling(chain, x, rows, devicechain.CPU, 0.05) > 0


def test_the_serving_loop_ceiling_runs_the_data_plane_in_its_own_process(
    tiny_repository: Path,
) -> None:
    got = servingloop.measure(tiny_repository, "tiny", {"EXITSERVE_DEVICE": "cpu"}, 8, 2, 0.5, 64)
    assert got["provider"] == "CPUExecutionProvider"
    assert got["samples_per_s"] > 0
    assert 0 < got["cpu"] <= 1


def test_the_whole_section_measures_and_renders_on_the_cpu_provider(
    tiny_repository: Path, mnist_samples, tmp_path: Path
) -> None:
    """The GPU section's code end to end, with the CPU provider standing in for CUDA."""
    x, y = mnist_samples
    env = {"EXITSERVE_DEVICE": "cpu", "EXITSERVE_BATCHING": '{"max_batch_size": 64}'}
    where = gpubench.Where(tiny_repository, "tiny", env, devicechain.CPU)
    run = {"started": "2031-01-01 00:00 UTC", "mode": "quick", "seconds": 0.3, "rounds": 1}
    run.update(command="pytest", card="the CPU provider")
    section = gpubench.measure_on(where, Load(x, y, tmp_path), run)
    assert section.lines is not None
    assert section.json is not None
    levels = section.json["levels"]
    assert [(lv["load"], lv["mode"]) for lv in levels[:2]] == [
        ("256/request", "early exit"),
        ("256/request", "full depth"),
    ]
    for lv in levels:
        assert lv["server"]["median"] > 0
        assert lv["loop"]["median"] > 0
        assert lv["device"]["median"] > 0
    assert section.json["accuracy"]["agreement"] > 0.9
    overlap = section.json["in_flight"]
    assert [(lv["load"], lv["mode"]) for lv in overlap] == [
        (f"{per}/request", mode) for per in (256, 64) for mode in ("early exit", "full depth")
    ]
    assert all(lv["ratio"]["median"] > 0 for lv in overlap)
    assert "one batch in flight" in "\n".join(section.lines)
    assert stray_numbers("\n".join(section.lines), {"gpu": section.json}) == []
