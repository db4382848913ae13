"""Smoke runs of the load generators and the in-process limit against the real tiny model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
import numpy as np
import pytest

from loadtest import inprocess
from loadtest.client import HEADER_LENGTH, encode
from loadtest.generators import Bounds, answers, closed_loop, open_loop, sequential
from loadtest.run import check_loopback
from loadtest.wrk import run_wrk, write_bodies
from tests.service.conftest import LiveServerFactory


@pytest.fixture(scope="module")
def requests(mnist_samples):
    x, y = mnist_samples
    return [
        encode(x[i : i + 2], y[i : i + 2], enc)
        for i, enc in zip(range(0, 64, 2), ["json", "binary"] * 16, strict=True)
    ]


def test_every_generator_counts_every_request_and_reports_exits(
    live_server: LiveServerFactory, requests, tmp_path: Path
) -> None:
    """The quick mode of every generator: Python ones by count, wrk for a second."""
    bounds = Bounds(duration_s=20.0, max_requests=40, timeout_s=10.0)
    binary = [r for r in requests if HEADER_LENGTH in r.headers]
    with live_server() as server:
        url = f"{server.url}/v2/models/tiny/infer"
        closed = asyncio.run(closed_loop(url, requests, 4, bounds, progress=False))
        opened = asyncio.run(open_loop(url, requests, 50.0, bounds, progress=False))
        one_by_one = sequential(url, requests, bounds)
        compiled = run_wrk(url, write_bodies(binary, tmp_path), 4, 1.0)
        replies = answers(url, requests[:4])
    for report in (closed, opened, one_by_one):
        assert report.requests == report.ok == 40, report
        assert report.errors == {}
        assert sum(report.exit_distribution) == pytest.approx(1.0)
        assert report.accuracy > 0.5  # a trained model, not chance (0.1)
        assert 0 < report.p50_ms <= report.p99_ms <= report.max_ms
        assert 0 < report.client_cpu <= 1
    assert compiled.requests == compiled.ok > 0
    assert compiled.errors == {}
    assert [len(r.labels) for r in replies] == [2, 2, 2, 2]  # in order, every sample answered


def test_refused_requests_count_as_errors(live_server: LiveServerFactory, requests) -> None:
    bounds = Bounds(duration_s=5.0, max_requests=5, timeout_s=5.0)
    with live_server() as server:
        url = f"{server.url}/v2/models/no-such-model/infer"
        report = asyncio.run(open_loop(url, requests, 20.0, bounds, progress=False))
        one_by_one = sequential(url, requests, bounds)
    assert report.ok == one_by_one.ok == 0
    assert report.errors == one_by_one.errors == {"404": 5}


def test_only_loopback_targets_are_accepted() -> None:
    check_loopback("http://127.0.0.1:8000/v2")
    check_loopback("http://localhost:8000/v2")
    with pytest.raises(click.BadParameter, match="not a loopback"):
        check_loopback("http://10.1.2.3:8000/v2")


def test_in_process_chain_matches_its_own_full_depth(tiny_model_dir: Path, mnist_samples) -> None:
    x, _ = mnist_samples
    chain = inprocess.load_chain(tiny_model_dir, threads=1)
    _labels, exits = inprocess.early_exit(chain, x, threshold=2.0)  # nobody leaves early
    assert (exits == chain.manifest.num_exits - 1).all()
    _, probs = chain.run_segment(0, x)
    assert probs.shape == (len(x), len(chain.manifest.labels))
    oracle, policy = inprocess.oracle_fraction(chain, x)
    assert 0 < oracle <= 1
    assert 0 < policy <= 1
    assert np.isfinite(inprocess.single_latency_ms(chain, x, repeats=5))
