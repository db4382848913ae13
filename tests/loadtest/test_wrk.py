"""wrk, the benchmark's light client, against a real server on the tiny model.

wrk is a required system dependency (`make system-deps` installs it): these tests fail,
not skip, where it is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.client import encode
from loadtest.report import machine_jiffies, machine_share
from loadtest.wrk import WrkMissing, run_wrk, write_bodies, wrk_path
from tests.service.conftest import LiveServerFactory


def test_wrk_sends_every_prepared_body_and_the_server_answers_them(
    live_server: LiveServerFactory, mnist_samples, tmp_path: Path
) -> None:
    x, y = mnist_samples
    bodies = write_bodies(
        [encode(x[i : i + 2], y[i : i + 2], "binary") for i in range(0, 64, 2)], tmp_path
    )
    with live_server() as server:
        before = server.exit_counts("tiny")
        report = run_wrk(f"{server.url}/v2/models/tiny/infer", bodies, 4, 1.0)
        after = server.exit_counts("tiny")
    answered = sum(after) - sum(before)
    assert report.requests == report.ok > 0, report
    assert report.errors == {}
    assert report.samples_per_s == pytest.approx(2 * report.requests_per_s)
    # every request wrk counted was a valid 2-sample body the server ran; at most the 4
    # still in flight when wrk stopped are answered without being counted
    assert 2 * report.ok <= answered <= 2 * (report.ok + 4)
    assert 0 < report.client_cpu <= 1
    assert 0 < report.p50_ms <= report.p99_ms <= report.max_ms


def test_wrk_counts_refusals_as_errors(
    live_server: LiveServerFactory, mnist_samples, tmp_path: Path
) -> None:
    x, y = mnist_samples
    bodies = write_bodies([encode(x[:1], y[:1], "binary")], tmp_path)
    with live_server() as server:
        report = run_wrk(f"{server.url}/v2/models/no-such-model/infer", bodies, 2, 1.0)
    assert report.ok == 0
    assert report.errors["non-2xx"] == report.requests > 0


def test_json_bodies_go_out_as_json(
    live_server: LiveServerFactory, mnist_samples, tmp_path: Path
) -> None:
    x, y = mnist_samples
    bodies = write_bodies([encode(x[i : i + 1], y[i : i + 1], "json") for i in range(8)], tmp_path)
    assert bodies.index.read_text().split("\n")[0].endswith(" 0")  # no binary header length
    with live_server() as server:
        report = run_wrk(f"{server.url}/v2/models/tiny/infer", bodies, 2, 1.0)
    assert report.requests == report.ok > 0, report
    with pytest.raises(ValueError, match="at least one"):
        write_bodies([], tmp_path)


def test_a_missing_wrk_fails_and_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Path(wrk_path()).exists()  # installed here, as `make system-deps` does
    monkeypatch.setenv("PATH", "")
    with pytest.raises(WrkMissing, match="make system-deps"):
        wrk_path()


def test_machine_share_reads_the_kernel_counters() -> None:
    first = machine_jiffies()
    sum(i * i for i in range(200_000))  # some CPU, so the counters move
    share = machine_share(first, machine_jiffies())
    assert 0 <= share <= 1
