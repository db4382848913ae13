"""Every dashboard query and every rule, run by a real Prometheus scraping a real exitserve.

One Prometheus (Debian's 2.42, loopback, scrape and rule interval 1 s, config and rules
from deploy/prometheus/) scrapes one `exitserve serve` with the tiny model. Traffic:
warm-up requests that force one sample out at each exit (so every exit's and stage's
series exist before the main traffic and `rate()` sees all of it), then a few hundred
samples under the calibrated policy, plus a 400 and a 404 in both phases so that their
series change inside the window too. The checks then read what an operator would see.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import yaml

from loadtest.server import free_port, running_server
from models.manifest import Manifest, load_manifest
from service.fidelity import default_target
from tests.observability.promql import (
    PROMETHEUS_CONFIG,
    RULES,
    SYNTHETIC,
    TARGET_LABELS,
    dashboard_targets,
    exported_series,
    label_names,
    label_values,
    load_dashboard,
    load_rules,
    metric_names,
    signals,
    substitute,
)

PROMETHEUS = shutil.which("prometheus")
MODEL = "tiny"
# Stands in for Grafana's $__rate_interval: the test's whole history fits in it.
RATE_WINDOW = "1m"
REQUESTS, SAMPLES_PER_REQUEST = 8, 40  # images are reused when mnist_samples has fewer
SERVER_ARGS = ("--device", "cpu", "--intra-op-threads", "1", "--log-level", "warning")
# Series that only appear with their first event; a healthy server has none.
EVENT_ONLY = frozenset({"exitserve_batch_failures_total"})
# Alerts that must stay quiet while the server is healthy and lightly loaded (the latency
# burn alerts may fire on a loaded CI machine, so they are not listed).
QUIET_WHEN_HEALTHY = (
    "ExitserveDown",
    "ExitserveModelNotReady",
    "ExitserveHighErrorRate",
    "ExitserveLoadShedding",
    "ExitserveExitDistributionDrift",
    "ExitserveBatchFailures",
    "ExitserveFidelityBelowTarget",
)
# Shares from rate() differ from exact counts by Prometheus' extrapolation at the edges.
RATE_TOLERANCE = 0.05
TIMEOUT_S = 60.0

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.slow,
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (Debian: prometheus)"),
]


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float


class PromQLError(AssertionError):
    """Prometheus refused a query."""


class Prometheus:
    """The HTTP API of one Prometheus, queried at one fixed evaluation time."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10.0)
        self.at = 0.0

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        params = {"query": expr, "time": f"{self.at if at is None else at:.3f}"}
        body = self.http.get("/api/v1/query", params=params).json()
        if body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType')}: {body.get('error')}\n  in: {expr}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [Sample({}, float(data["result"][1]))]
        assert data["resultType"] == "vector", (data["resultType"], expr)
        return [Sample(r["metric"], float(r["value"][1])) for r in data["result"]]

    def now(self, expr: str) -> list[Sample]:
        return self.query(expr, time.time())


@dataclass
class Traffic:
    """What the server answered, from the responses themselves."""

    exits: Counter[int] = field(default_factory=Counter)  # every answered sample
    main_exits: Counter[int] = field(default_factory=Counter)  # calibrated-policy traffic
    ok_requests: int = 0


@dataclass
class Stack:
    prom: Prometheus
    instance: str
    manifest: Manifest
    traffic: Traffic
    variables: dict[str, str]
    series: dict[str, set[str]]  # exported sample name -> label names
    recorded: set[str]


# --- processes ---------------------------------------------------------------------------


def wait_for(what: str, probe: Any, timeout_s: float = TIMEOUT_S, proc: Any = None) -> Any:
    """Poll `probe()` until it returns something truthy; fail with `what` after the timeout."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode}")
        try:
            result = probe()
            if result:
                return result
        except (httpx.HTTPError, PromQLError) as exc:
            last = exc
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what} (last error: {last})")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def prometheus_config(workdir: Path, target: str) -> Path:
    """deploy/prometheus/prometheus.yml with 1 s intervals and this test's target."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES)]
    (job,) = config["scrape_configs"]
    job["scrape_timeout"] = "1s"
    job["static_configs"][0]["targets"] = [target]
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_prometheus(workdir: Path, target: str) -> tuple[subprocess.Popen[bytes], str]:
    assert PROMETHEUS is not None
    port = free_port()
    with (workdir / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={prometheus_config(workdir, target)}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return proc, f"http://127.0.0.1:{port}"


# --- traffic -----------------------------------------------------------------------------


def infer(
    client: httpx.Client, x: npt.NDArray[np.float32], parameters: dict[str, Any] | None = None
) -> httpx.Response:
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": list(x.shape),
                "data": x.reshape(-1).tolist(),
            }
        ]
    }
    if parameters:
        body["parameters"] = parameters
    return client.post(f"/v2/models/{MODEL}/infer", content=json.dumps(body))


def exit_indices(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    (out,) = [o for o in response.json()["outputs"] if o["name"] == "exit_index"]
    return [int(v) for v in out["data"]]


def send_errors(client: httpx.Client) -> None:
    """A 400 (wrong shape) and a 404 (unknown model): the error panels need data too."""
    bad = client.post(
        f"/v2/models/{MODEL}/infer",
        json={
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [0, 0, 0]}]
        },
    )
    assert 400 <= bad.status_code < 500, bad.text
    missing = client.post("/v2/models/no-such-model/infer", json={"inputs": []})
    assert missing.status_code == 404, missing.text


def send_traffic(client: httpx.Client, x: npt.NDArray[np.float32], manifest: Manifest) -> Traffic:
    traffic = Traffic()
    n = manifest.num_exits
    # Warm-up: one sample leaves at each exit k (patience n is never met before max_exit).
    for k in range(n):
        params = {"policy": "patience", "patience": n, "max_exit": k}
        got = exit_indices(infer(client, x[k : k + 1], params))
        traffic.exits.update(got)
        traffic.ok_requests += 1
    send_errors(client)
    time.sleep(2.5)  # >= 2 scrapes: every series has a point before the main traffic
    for i in range(REQUESTS):
        rows = np.arange(n + i * SAMPLES_PER_REQUEST, n + (i + 1) * SAMPLES_PER_REQUEST)
        batch = x[rows % len(x)]
        got = exit_indices(infer(client, batch))
        traffic.exits.update(got)
        traffic.main_exits.update(got)
        traffic.ok_requests += 1
        time.sleep(0.3)  # spread over several scrapes
    # Some samples run every segment, so that every stage's histograms move in the window.
    got = exit_indices(infer(client, x[: SAMPLES_PER_REQUEST // 4], {"full_depth": True}))
    traffic.exits.update(got)
    traffic.main_exits.update(got)
    traffic.ok_requests += 1
    send_errors(client)
    return traffic


# --- the stack ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(
    tiny_repository: Path, mnist_samples: tuple[npt.NDArray[np.float32], Any]
) -> Iterator[Stack]:
    x = np.ascontiguousarray(mnist_samples[0], dtype=np.float32)
    manifest = load_manifest(tiny_repository / MODEL / "1")
    with (
        tempfile.TemporaryDirectory(prefix="exitserve-prometheus-") as tmp,
        running_server(tiny_repository, Path(tmp), SERVER_ARGS) as server,
    ):
        workdir = Path(tmp)
        instance = server.metrics_url.removeprefix("http://")
        proc, url = start_prometheus(workdir, instance)
        prom = Prometheus(url)
        try:
            wait_for(
                "Prometheus to be ready", lambda: prom.http.get("/-/ready").is_success, proc=proc
            )
            wait_for("a successful scrape", lambda: prom.now('up{job="exitserve"} == 1'))
            with httpx.Client(base_url=server.url, timeout=30.0) as client:
                traffic = send_traffic(client, x, manifest)
            total = sum(traffic.exits.values())
            wait_for(
                "Prometheus to scrape the last samples",
                lambda: [
                    s
                    for s in prom.now(f'sum(exitserve_samples_total{{model="{MODEL}"}})')
                    if s.value == total
                ],
            )
            time.sleep(2.5)  # two more scrapes and rule evaluations
            prom.at = time.time()
            yield Stack(
                prom=prom,
                instance=instance,
                manifest=manifest,
                traffic=traffic,
                variables={
                    "model": MODEL,
                    "instance": instance,
                    "__rate_interval": RATE_WINDOW,
                    "datasource": "prometheus",
                },
                series=exported_series(),
                recorded={r.name for r in load_rules() if r.kind == "record"},
            )
        except BaseException:
            sys.stderr.write(f"--- exitserve log ---\n{server.log()[-4000:]}\n")
            sys.stderr.write(
                f"--- prometheus log ---\n{(workdir / 'prometheus.log').read_text()[-4000:]}\n"
            )
            raise
        finally:
            stop(proc)
            prom.http.close()


# --- checks ------------------------------------------------------------------------------


def known_labels(stack: Stack, expr: str) -> set[str]:
    """Label names the series `expr` selects can carry."""
    labels = set(TARGET_LABELS)
    for name in metric_names(expr):
        if name in stack.series:
            labels |= stack.series[name]
        elif name in SYNTHETIC:
            labels |= {"service"}  # the target label in deploy/prometheus/prometheus.yml
        else:
            for s in stack.prom.query(f"{{__name__={json.dumps(name)}}}"):
                labels |= set(s.labels) - {"__name__"}
    return labels


def check_query(
    stack: Stack, expr: str, unit: str = "none", may_be_empty: bool = False
) -> list[Sample]:
    """Run `expr`; it must name real metrics and labels and return finite data in range."""
    unknown = metric_names(expr) - set(stack.series) - stack.recorded - SYNTHETIC
    assert not unknown, f"unknown metric(s) {sorted(unknown)} in: {expr}"
    bad_labels = label_names(expr) - known_labels(stack, expr)
    assert not bad_labels, f"label(s) {sorted(bad_labels)} not on the selected series: {expr}"
    result = stack.prom.query(expr)
    if may_be_empty:
        return result
    assert result, f"no data for: {expr}"
    for s in result:
        assert math.isfinite(s.value), f"{s.value} for {dict(s.labels)} in: {expr}"
        if unit == "percentunit":
            assert -1e-9 <= s.value <= 1 + 1e-9, f"share {s.value} outside [0, 1] in: {expr}"
        else:
            assert s.value >= 0, f"negative {s.value} in: {expr}"
    return result


def by(samples: list[Sample], label: str) -> dict[str, float]:
    out = {s.labels.get(label, ""): s.value for s in samples}
    assert len(out) == len(samples), f"{label} does not tell the series apart: {samples}"
    return out


def expected_saved(manifest: Manifest, exits: Counter[int]) -> float:
    macs = [s.macs for s in manifest.segments]
    used = sum(n * sum(macs[: k + 1]) for k, n in exits.items())
    return 1 - used / (sum(exits.values()) * sum(macs))


def main_shares(stack: Stack) -> dict[str, float]:
    total = sum(stack.traffic.main_exits.values())
    return {str(k): stack.traffic.main_exits[k] / total for k in range(stack.manifest.num_exits)}


# --- tests -------------------------------------------------------------------------------


def test_raw_counters_match_the_responses(stack: Stack) -> None:
    """Before trusting any PromQL: the scraped counters are what the server answered."""
    prom, m, traffic = stack.prom, stack.manifest, stack.traffic
    sel = f'{{model="{MODEL}"}}'
    per_exit = by(prom.query(f"sum by (exit) (exitserve_samples_total{sel})"), "exit")
    assert per_exit == {str(k): float(n) for k, n in traffic.exits.items()}
    macs = [s.macs for s in m.segments]
    (used,) = prom.query(f"sum(exitserve_compute_used_macs_total{sel})")
    (full,) = prom.query(f"sum(exitserve_compute_full_macs_total{sel})")
    assert used.value == sum(n * sum(macs[: k + 1]) for k, n in traffic.exits.items())
    assert full.value == sum(traffic.exits.values()) * sum(macs)
    (ok,) = prom.query(f'sum(exitserve_requests_total{{model="{MODEL}", code="200"}})')
    assert ok.value >= traffic.ok_requests
    runs = by(prom.query(f"sum by (stage) (exitserve_batch_size_count{sel})"), "stage")
    assert set(runs) == {str(k) for k in range(m.num_exits)}
    (samples_in,) = prom.query(f'sum(exitserve_batch_size_sum{{model="{MODEL}", stage="0"}})')
    assert samples_in.value == sum(traffic.exits.values())


def test_dashboard_variables_list_the_server(stack: Stack) -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    values = {"instance": ".*", "model": MODEL}
    for name, want in (("instance", stack.instance), ("model", MODEL)):
        selector, label = label_values(substitute(variables[name]["query"], values))
        found = by(check_query(stack, f"count by ({label}) ({selector})"), label)
        assert want in found, (name, found)


def test_every_dashboard_query_returns_sane_data(stack: Stack) -> None:
    results: dict[tuple[str, str], list[Sample]] = {}
    targets = dashboard_targets(load_dashboard())
    for t in targets:
        expr = substitute(t.expr, stack.variables)
        results[t.panel, t.ref_id] = check_query(stack, expr, t.unit)
    m, n = stack.manifest, stack.manifest.num_exits
    exits = {str(k) for k in range(n)}

    hit = by(results["Per-exit hit rate", "A"], "exit")
    assert set(hit) == exits
    assert math.isclose(sum(hit.values()), 1.0, abs_tol=1e-9)
    for k, share in main_shares(stack).items():
        assert abs(hit[k] - share) < RATE_TOLERANCE, (k, hit, main_shares(stack))

    want_saved = expected_saved(m, stack.traffic.main_exits)
    for title in ("Compute saved", "Compute saved per version"):
        (saved,) = results[title, "A"]
        assert abs(saved.value - want_saved) < RATE_TOLERANCE, (title, saved, want_saved)

    live = results["Calibrated vs live exit share", "A"]
    assert math.isclose(sum(s.value for s in live), 1.0, abs_tol=1e-9)
    calibrated = by(results["Calibrated vs live exit share", "B"], "exit")
    assert m.calibration is not None
    want = {str(k): v for k, v in enumerate(m.calibration.exit_distribution)}
    assert calibrated == pytest.approx(want)

    p50, p95, p99 = (results["End-to-end latency p50 / p95 / p99", ref][0].value for ref in "ABC")
    assert 0 < p50 <= p95 <= p99 < 30, (p50, p95, p99)
    (p99_stat,) = results["p99 latency", "A"]
    assert p99_stat.value == p99

    ready = by(results["Ready replicas per version", "A"], "version")
    assert ready == {m.version: 1.0}
    assert results["Inference requests/s", "A"][0].value > 0
    (err5,) = results["5xx share", "A"]
    assert err5.value == 0
    (err4,) = results["Error share", "B"]
    assert 0 < err4.value < 1  # the 400s

    for title, ref, label in (
        ("Segment compute latency p50 / p99", "A", "segment"),
        ("Segment compute latency p50 / p99", "B", "segment"),
        ("Queue wait p50 / p99", "B", "stage"),
        ("Batch size per stage (mean, p90)", "A", "stage"),
        ("Segment runs and failures per stage", "A", "stage"),
        ("Segment runs and failures per stage", "B", "stage"),
    ):
        assert set(by(results[title, ref], label)) == exits, (title, ref)
    for s in results["Segment compute latency p50 / p99", "A"]:
        assert s.value > 0
    for s in results["Batch size per stage (mean, p90)", "A"]:
        assert s.value >= 1
    assert all(s.value == 0 for s in results["Segment runs and failures per stage", "B"])
    # The traffic was sequential, so nothing is queued or in flight once it is over.
    assert all(s.value == 0 for s in results["Queue depth per stage", "A"])
    check_fidelity_panels(stack, results)


def check_fidelity_panels(stack: Stack, results: dict[tuple[str, str], list[Sample]]) -> None:
    """Clean digits under the default policy: the controller starts at its maximum shadow
    fraction, so exit 0's early answers are shadowed and compared; nothing is shed."""
    m = stack.manifest
    assert m.calibration is not None
    (target,) = results["Agreement with the last exit per exit", "B"]
    assert target.value == pytest.approx(default_target(m.calibration))
    agreement = by(results["Agreement with the last exit per exit", "A"], "exit")
    assert "0" in agreement
    run = by(results["Shadow samples run and shed", "A"], "exit")
    assert run["0"] > 0
    assert all(s.value == 0 for s in results["Shadow samples run and shed", "B"])
    (state,) = results["Controller state and threshold changes", "A"]  # one state at a time
    assert state.labels["state"] in {"warming", "steady", "tightened", "disabled-exit"}
    thresholds = by(results["Exit thresholds (controller)", "A"], "exit")
    assert set(thresholds) <= {str(k) for k in range(m.num_exits - 1)}


def test_every_recording_rule_is_evaluated_with_sane_values(stack: Stack) -> None:
    rules = [r for r in load_rules() if r.kind == "record"]
    tiny = f'{{model="{MODEL}"}}'
    for rule in rules:
        check_query(stack, rule.expr)  # the expression itself
        unit = "percentunit" if ":ratio" in rule.name else "none"
        sel = (
            "{"
            + ", ".join([f'model="{MODEL}"'] + [f'{k}="{v}"' for k, v in rule.labels.items()])
            + "}"
        )
        recorded = check_query(stack, rule.name + sel, unit)  # what Prometheus stored
        for s in recorded:
            if ":quantile" in rule.name:
                assert s.value > 0, (rule.name, s)
            if ":mean" in rule.name:
                assert s.value >= 1, (rule.name, s)
    prom = stack.prom
    for window in ("5m", "1h"):
        shares = by(prom.query(f"model_exit:exitserve_exit_share:ratio_rate{window}{tiny}"), "exit")
        assert set(shares) == {str(k) for k in range(stack.manifest.num_exits)}
        assert math.isclose(sum(shares.values()), 1.0, abs_tol=1e-9)
        (saved,) = prom.query(f"model:exitserve_compute_saved:ratio_rate{window}{tiny}")
        want = expected_saved(stack.manifest, stack.traffic.main_exits)
        assert abs(saved.value - want) < RATE_TOLERANCE, (window, saved, want)
    q = by(
        prom.query(f"model:exitserve_request_duration_seconds:quantile_rate5m{tiny}"), "quantile"
    )
    assert set(q) == {"0.5", "0.95", "0.99"}
    assert 0 < q["0.5"] <= q["0.95"] <= q["0.99"]


def test_every_alert_evaluates_and_its_signals_have_data(stack: Stack) -> None:
    alerts = [r for r in load_rules() if r.kind == "alert"]
    assert {a.name for a in alerts} >= set(QUIET_WHEN_HEALTHY)
    for alert in alerts:
        firing = check_query(stack, alert.expr, may_be_empty=True)
        if alert.name in QUIET_WHEN_HEALTHY:
            assert not firing, f"{alert.name} fires on a healthy server: {firing}"
        for signal_expr in signals(alert.expr):
            names = metric_names(signal_expr)
            event_only = bool(names) and names <= EVENT_ONLY
            got = check_query(stack, signal_expr, may_be_empty=event_only)
            if not event_only:
                assert got, f"{alert.name}: no data for {signal_expr}"


def test_prometheus_loaded_and_evaluated_every_rule(stack: Stack) -> None:
    groups = stack.prom.http.get("/api/v1/rules").json()["data"]["groups"]
    loaded = {(r["name"], r["type"]) for g in groups for r in g["rules"]}
    ours = {(r.name, "recording" if r.kind == "record" else "alerting") for r in load_rules()}
    assert loaded == ours
    for g in groups:
        for r in g["rules"]:
            assert r["health"] == "ok", (r["name"], r.get("lastError"))


def test_the_checks_fail_on_a_wrong_metric_or_label(stack: Stack) -> None:
    """The harness itself: a misspelt name or a wrong label must not pass."""
    (hit,) = [t for t in dashboard_targets(load_dashboard()) if t.panel == "Per-exit hit rate"]
    expr = substitute(hit.expr, stack.variables)
    for broken in (
        expr.replace("exitserve_samples_total", "exitserve_sample_total"),
        expr.replace("by (exit)", "by (stage)"),
        expr.replace(f'model="{MODEL}"', 'model="nope"'),
        "1 - sum(rate(exitserve_compute_used_macs[1m]))",  # counter without _total
    ):
        with pytest.raises(AssertionError):
            check_query(stack, broken, hit.unit)
    with pytest.raises(PromQLError):
        stack.prom.query("sum(rate(exitserve_samples_total[1m])")
