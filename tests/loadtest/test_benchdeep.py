"""The deep-exit scenario's pieces against real servers on the tiny model, no timing asserted.

The scrapes must account for every row the server ran (stage 0 sees every sample; each
later stage sees exactly the previous stage's survivors), a mode without batching must run
one row per segment run, and the section must print only numbers its json holds.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from loadtest.batchscrape import Batches, between, bucket_labels, scrape
from loadtest.benchdeep import (
    Climb,
    Ladder,
    Workload,
    deep_json,
    deep_section,
    fold_workload,
    mode_step,
)
from loadtest.benchdoc import GEN_BEGIN, GEN_END
from loadtest.benchsteps import Load, url_of
from loadtest.client import encode
from loadtest.doccheck import stray_numbers
from loadtest.generators import answers
from models.manifest import load_manifest
from models.paths import (
    BENCH_DEEP_MODEL,
    DEFAULT_MODEL,
    bundled_bench_repository,
    bundled_model_dir,
)
from tests.conftest import TINY_MODEL
from tests.service.conftest import LiveServerFactory

STATIC = {"EXITSERVE_FIDELITY": '{"enabled": false}'}  # no shadow rows in the counts
LADDER = Ladder(rates=(20.0, 40.0), hist_rate=20.0, seconds=1.0)
WARMUP = 20  # requests benchsteps.poisson sends before each timed run; scraped with it


def survivors_add_up(b: Batches) -> None:
    """Every sample ran stage 0; stage k+1 ran what stage k did not answer."""
    assert b.rows[0] == b.samples
    for k in range(len(b.rows) - 1):
        assert b.rows[k + 1] == b.rows[k] - b.exits[k], (k, b)
    for counts, runs, rows in zip(b.counts, b.runs, b.rows, strict=True):
        assert sum(counts) == runs <= rows


def test_scrapes_count_batches_from_a_fresh_server(
    live_server: LiveServerFactory, mnist_samples
) -> None:
    """Sent one at a time: three single samples are three runs of 1 at stage 0, a request
    of 32 one run of 32; the first scrape, before any traffic, has no batch series yet."""
    x, y = mnist_samples
    reqs = [encode(x[i : i + 1], y[i : i + 1], "binary") for i in range(3)]
    reqs.append(encode(x[3:35], y[3:35], "binary"))
    with live_server(env=STATIC) as srv:
        before = scrape(srv.metrics_url, TINY_MODEL)
        replies = answers(url_of(srv, TINY_MODEL), reqs)
        after = scrape(srv.metrics_url, TINY_MODEL)
        exits = srv.exit_counts(TINY_MODEL)
    assert [r.status for r in replies] == [200] * 4
    assert before.runs == {}
    assert sum(before.exits.values()) == 0  # exit counters start at zero, histograms absent
    b = between(before, after)
    assert b.samples == 35
    assert b.exits == exits
    survivors_add_up(b)
    labels = bucket_labels(b.edges)
    assert labels[:6] == ["1", "2", "3–4", "5–8", "9–16", "17–32"]
    assert labels[-1].startswith(">")
    assert b.runs[0] == 4
    assert b.counts[0][labels.index("1")] == 3
    assert b.counts[0][labels.index("17–32")] == 1
    assert 1 <= b.rows_per_sample() <= len(b.rows)


@pytest.fixture(scope="module")
def deep_doc(tiny_repository: Path, mnist_samples, tmp_path_factory) -> tuple[dict, dict]:
    """One round of every mode's ladder on the tiny model; (climbs, json)."""
    x, y = mnist_samples
    load = Load(x[:64], y[:64], tmp_path_factory.mktemp("deep"))
    strict = {"threshold": 0.999}  # most samples go past the first exit
    w = Workload("tiny, threshold 0.999", tiny_repository, TINY_MODEL, strict, load)
    climbs: dict[str, list[Climb]] = {m: [] for m in ("stage", "naive", "none")}
    for mode, sink in climbs.items():
        mode_step(w, mode, LADDER, sink)()
    folded = fold_workload(w.name, w.model, w.params, climbs)
    return climbs, {"derived": {"deep": deep_json(LADDER, 1, [folded])}}


def test_every_mode_climbs_and_its_batches_add_up(deep_doc) -> None:
    climbs, _ = deep_doc
    for mode, (climb,) in climbs.items():
        assert [p["rate"] for p in climb.points][:1] == [LADDER.hist_rate], mode
        assert set(climb.by_rate) == {p["rate"] for p in climb.points}
        b = climb.batches
        assert b is not None
        assert b.samples == WARMUP + LADDER.hist_rate * LADDER.seconds
        survivors_add_up(b)
        if mode == "none":  # one request, one row, one run: nothing merged
            assert b.runs == b.rows
            assert b.runs_per_sample() == b.rows_per_sample()


def test_the_section_prints_only_numbers_of_its_json(deep_doc) -> None:
    _, doc = deep_doc
    lines = deep_section(doc)
    text = "\n".join(lines)
    assert lines[0] == "## Where stage batching matters (deep exits)"
    assert "### tiny, threshold 0.999" in text
    for name in ("stage batching", "naive early exit", "no batching"):
        assert sum(line.startswith(f"| {name} |") for line in lines) >= 2, name
    assert stray_numbers(f"{GEN_BEGIN}\n{text}\n{GEN_END}", doc) == []
    tampered = f"{GEN_BEGIN}\n{text}\n| stage batching | 12345.678 |\n{GEN_END}"
    assert stray_numbers(tampered, doc) == ["12345.678"]


def test_the_words_follow_every_rounds_ratio(deep_doc) -> None:
    _, doc = deep_doc
    doc = copy.deepcopy(doc)
    modes = doc["derived"]["deep"]["workloads"][0]["modes"]
    modes["naive"]["stage_over_this"] = {"median": 1.5, "min": 1.2, "max": 1.8, "rounds": []}
    modes["none"]["stage_over_this"] = {"median": 1.05, "min": 0.9, "max": 1.1, "rounds": []}
    text = "\n".join(deep_section(doc))
    assert (
        "answered more than naive early exit (1.50 (1.20–1.80)×) and about as much as no " in text
    )
    assert "about as much as no batching (1.05 (0.90–1.10)×)" in text
    modes["none"]["stage_over_this"] = {"median": 0.8, "min": 0.7, "max": 0.9, "rounds": []}
    modes["stage"]["max_rate"] = {"median": 40.0, "min": 40.0, "max": 40.0, "rounds": [40.0]}
    assert "| stage batching | ≥ 40 |" in "\n".join(deep_section(doc))  # the ladder's top
    assert "and less than no batching" in "\n".join(deep_section(doc))
    modes["none"]["stage_over_this"] = {"median": 0.97, "min": 0.96, "max": 0.98, "rounds": []}
    assert "and about as much as no batching" in "\n".join(deep_section(doc))  # drift only
    assert "Not measured" in "\n".join(deep_section({"derived": {}}))


def test_the_bench_model_is_valid_and_goes_deeper_than_mnist() -> None:
    """The scenario's premise, from the committed calibration reports: fashion's calibrated
    thresholds keep more test images past the first exit than mnist's do."""
    fashion = load_manifest(bundled_bench_repository() / BENCH_DEEP_MODEL / "1")
    mnist = load_manifest(bundled_model_dir(DEFAULT_MODEL))
    assert (fashion.name, fashion.num_exits) == (BENCH_DEEP_MODEL, mnist.num_exits)
    assert fashion.calibration is not None
    assert mnist.calibration is not None
    deep = fashion.calibration.test["exit_distribution"]
    shallow = mnist.calibration.test["exit_distribution"]
    assert isinstance(deep, list)
    assert isinstance(shallow, list)
    assert deep[0] < shallow[0]
