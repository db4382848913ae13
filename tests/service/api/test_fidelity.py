"""Fidelity control end to end (issue 11): a real server, real segments, real MNIST.

One server with a fast controller (steps every 64 samples or 0.2 s, decisions from 10
comparisons) on a copy of the tiny repository. Agreement is measured by the test itself:
each default answer against the same server's `full_depth` answer for the same image.
Each test starts from the calibrated thresholds (admin reset), so the order does not matter.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtest.drift import drift_stream
from tests.service.api.v2helpers import (
    MODEL,
    Reference,
    binary_request,
    decode_response,
    inflight,
    wait_for_inflight,
)
from tests.service.conftest import LiveServer, LiveServerFactory

TOKEN = "fidelity-test-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
FIDELITY = f"/v2/models/{MODEL}/fidelity"
REPOSITORY = f"/v2/repository/models/{MODEL}/fidelity"
BATCH = 50
# Steps every 100 samples or 0.2 s. The short streams of a test cannot average out the
# heavy weights (1/fraction) of shadows drawn at the default 2% floor, hence 10%.
FAST = {
    "--fidelity-interval-s": "0.2",
    "--fidelity-step-samples": "100",
    "--fidelity-min-shadow-fraction": "0.1",
}
FloatArray = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def repository(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("fidelity") / "repository"
    shutil.copytree(tiny_repository, copy)
    return copy


@pytest.fixture(scope="module")
def server(live_server: LiveServerFactory, repository: Path) -> Iterator[LiveServer]:
    args = ["--device", "cpu", *(item for pair in FAST.items() for item in pair)]
    env = {"EXITSERVE_ADMIN_TOKEN": TOKEN}
    with live_server(args=args, env=env, repository=repository) as running:
        yield running


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        reset = c.post(f"{REPOSITORY}/reset", headers=ADMIN)
        assert reset.status_code == 200, reset.text
        yield c


def stream(phase: str, n: int, seed: int) -> FloatArray:
    return drift_stream(n, (phase,), seed=seed).x


def serve(client: httpx.Client, x: FloatArray, **parameters: Any) -> npt.NDArray[np.int64]:
    """The server's labels for `x`, `BATCH` images per request, in order."""
    labels = []
    for lo in range(0, len(x), BATCH):
        extra = {"parameters": parameters} if parameters else {}
        body, headers = binary_request(x[lo : lo + BATCH], **extra)
        reply = client.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
        labels.append(decode_response(reply)["label"].reshape(-1))
    return np.concatenate(labels)


def snapshot(client: httpx.Client) -> dict[str, Any]:
    reply = client.get(FIDELITY)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def moved(snap: dict[str, Any]) -> list[int]:
    """Exits whose threshold is not the calibrated one (None: switched off)."""
    return [e["exit"] for e in snap["exits"] if e["threshold"] != e["calibrated"]]


def metric(server: LiveServer, name: str, **labels: str) -> float:
    text = httpx.get(f"{server.metrics_url}/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_drifted_stream_raises_thresholds_and_agreement_recovers(
    client: httpx.Client, server: LiveServer, reference: Reference
) -> None:
    """Noise (sigma 0.3) makes the early exits over-confident: with the calibrated
    thresholds their answers agree with full depth far below target (checked here on the
    bare segments); the controller raises them until the served answers agree again."""
    x = stream("noise", 2000, seed=1)
    full = serve(client, x, full_depth=True)
    static = reference.expect(x).label
    target = snapshot(client)["target"]
    assert (static == full).mean() < target - 0.05  # precondition: the drift hurts

    served = serve(client, x)
    snap = snapshot(client)
    tail = slice(-600, None)
    assert (served[tail] == full[tail]).mean() >= target
    assert moved(snap), snap
    assert snap["changes"]
    assert all(c["new"] != c["old"] for c in snap["changes"])
    logged = [line for line in server.log().splitlines() if "threshold" in line]
    assert any(
        f"fidelity {MODEL} v1 exit" in line and "evidence before: agreement" in line
        for line in logged
    ), logged[-5:]


def leaver_agreement(
    reference: Reference, x: FloatArray, full: npt.NDArray[np.int64]
) -> list[float]:
    """Per early exit, how often the rows the calibrated thresholds send out there agree
    with full depth (ground truth, from the bare segments)."""
    expected = reference.expect(x)
    out = []
    for k in range(len(reference.manifest.segments) - 1):
        left = expected.exit_index == k
        out.append(float((expected.label[left] == full[left]).mean()) if left.any() else 1.0)
    return out


def test_clean_stream_leaves_faithful_exits_alone(
    client: httpx.Client, reference: Reference
) -> None:
    """Clean digits: an exit whose early answers agree above target keeps its calibrated
    threshold; only an exit measured below target may move (tiny's exit 1 sometimes is)."""
    x = stream("clean", 2000, seed=2)
    served = serve(client, x)
    full = serve(client, x, full_depth=True)
    snap = snapshot(client)
    truth = leaver_agreement(reference, x, full)
    assert truth[0] > snap["target"] + 0.02  # precondition: exit 0 is faithful here
    assert 0 not in moved(snap)
    assert (served == full).mean() >= snap["target"]
    for k in moved(snap):
        assert truth[k] < snap["target"], (k, truth)
    assert snap["samples_seen"] >= 2 * len(x)


def test_frozen_controller_never_moves(client: httpx.Client) -> None:
    """Frozen, the thresholds stay calibrated under noise while the estimates still show
    the disagreement; unfrozen, the same traffic moves them."""
    frozen = client.post(f"{REPOSITORY}/freeze", headers=ADMIN)
    assert frozen.status_code == 200, frozen.text
    assert frozen.json()["state"] == "frozen"
    x = stream("noise", 1000, seed=3)
    serve(client, x)
    snap = snapshot(client)
    assert snap["state"] == "frozen"
    assert moved(snap) == []
    assert snap["changes"] == frozen.json()["changes"]  # nothing logged meanwhile
    upper = [e["estimate"]["upper"] for e in snap["exits"]]
    assert min(upper) < snap["target"], snap  # the evidence says it should move

    unfrozen = client.post(f"{REPOSITORY}/unfreeze", headers=ADMIN, json={})
    assert unfrozen.status_code == 200, unfrozen.text
    for lo in range(0, len(x), 300):  # until it moves: how soon depends on the machine
        serve(client, x[lo : lo + 300])
        if moved(snapshot(client)):
            break
    assert moved(snapshot(client))


def serve_until_moved(client: httpx.Client, before: dict[str, Any]) -> None:
    """Noise, 500 images at a time, until the controller has changed a threshold (at most
    3000): how soon it reacts depends on when shadows land, i.e. on the machine's speed."""
    x = stream("noise", 3000, seed=4)
    for lo in range(0, len(x), 500):
        serve(client, x[lo : lo + 500])
        if len(snapshot(client)["changes"]) > len(before["changes"]):
            return


def test_metrics_on_the_metrics_port(client: httpx.Client, server: LiveServer) -> None:
    """The counters, gauges and state match what the controller reports. Frozen before
    they are read, so no step moves a threshold between the snapshot and the scrape."""
    before = snapshot(client)
    changes_before = metric(server, "exitserve_fidelity_threshold_changes_total")
    compared0 = metric(server, "exitserve_fidelity_compared_total", exit="0")
    agreed0 = metric(server, "exitserve_fidelity_agreed_total", exit="0")
    serve_until_moved(client, before)
    try:
        frozen = client.post(f"{REPOSITORY}/freeze", headers=ADMIN)
        assert frozen.status_code == 200, frozen.text
        check_metrics(server, before, frozen.json(), (changes_before, compared0, agreed0))
    finally:
        client.post(f"{REPOSITORY}/unfreeze", headers=ADMIN)


def check_metrics(
    server: LiveServer,
    before: dict[str, Any],
    snap: dict[str, Any],
    start: tuple[float, float, float],
) -> None:
    changes_before, compared0, agreed0 = start
    mv = {"model": MODEL, "version": "1"}
    for e in snap["exits"]:
        k = str(e["exit"])
        run = metric(server, "exitserve_shadow_samples_total", exit=k, **mv)
        compared = metric(server, "exitserve_fidelity_compared_total", exit=k, **mv)
        agreed = metric(server, "exitserve_fidelity_agreed_total", exit=k, **mv)
        assert 0 <= agreed <= compared <= run  # the last shadows may still be on their way
        gauge = metric(server, "exitserve_fidelity_threshold", exit=k, **mv)
        assert gauge == (float("inf") if e["threshold"] is None else e["threshold"])
    compared = metric(server, "exitserve_fidelity_compared_total", exit="0", **mv) - compared0
    assert compared > 0
    agreed = metric(server, "exitserve_fidelity_agreed_total", exit="0", **mv) - agreed0
    assert agreed / compared < snap["target"]  # the noise the controller reacted to
    assert metric(server, "exitserve_fidelity_state", state=snap["state"], **mv) == 1
    assert metric(server, "exitserve_fidelity_state", **mv) == 1  # one state at a time
    assert metric(server, "exitserve_fidelity_target", **mv) == snap["target"]
    new = [c for c in snap["changes"] if c not in before["changes"]]
    assert new, snap
    assert metric(server, "exitserve_fidelity_threshold_changes_total") - changes_before == len(new)


def test_admin_actions_need_the_token_and_name_a_version(
    client: httpx.Client, server: LiveServer
) -> None:
    assert client.post(f"{REPOSITORY}/freeze").status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.post(f"{REPOSITORY}/reset", headers=wrong).status_code == 401
    one = {"parameters": {"version": "1"}}
    frozen = client.post(f"{REPOSITORY}/freeze", headers=ADMIN, json=one)
    assert frozen.status_code == 200, frozen.text
    assert frozen.json()["version"] == "1"
    assert client.get(f"/v2/models/{MODEL}/versions/1/fidelity").json()["state"] == "frozen"
    missing = client.post(
        f"{REPOSITORY}/reset", headers=ADMIN, json={"parameters": {"version": "7"}}
    )
    assert missing.status_code == 404
    assert "version '7'" in missing.json()["error"]
    bad = client.post(f"{REPOSITORY}/reset", headers=ADMIN, json={"parameters": {"path": "/x"}})
    assert bad.status_code == 400
    assert "parameters.path" in bad.json()["error"]
    assert client.get("/v2/models/nothere/fidelity").status_code == 404
    reset = client.post(f"{REPOSITORY}/reset", headers=ADMIN)
    assert reset.json()["state"] == "frozen"  # a reset keeps the operator's freeze
    assert client.post(f"{REPOSITORY}/unfreeze", headers=ADMIN).json()["state"] != "frozen"
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/v2/models/{model_name}/fidelity",
        f"{REPOSITORY.replace(MODEL, '{model_name}')}/reset",
    } <= set(paths)


def test_unload_forgets_the_fidelity_series(client: httpx.Client, server: LiveServer) -> None:
    series = "exitserve_fidelity_threshold"
    assert metric(server, series, model=MODEL, version="1") != 0
    unload = client.post(f"/v2/repository/models/{MODEL}/unload", headers=ADMIN)
    assert unload.status_code == 200, unload.text
    text = httpx.get(f"{server.metrics_url}/metrics", timeout=5).text
    left = [
        s.name
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(("exitserve_fidelity", "exitserve_shadow"))
    ]
    assert left == []
    load = client.post(f"/v2/repository/models/{MODEL}/load", headers=ADMIN)
    assert load.status_code == 200, load.text
    assert snapshot(client)["state"] == "warming"
    assert metric(server, "exitserve_fidelity_state", state="warming", model=MODEL) == 1


def test_switched_off_by_a_setting_runs_no_shadows(
    live_server: LiveServerFactory, repository: Path, samples: FloatArray
) -> None:
    """`model_fidelity` switches one model off: calibrated thresholds, no shadow work."""
    env = {"EXITSERVE_MODEL_FIDELITY": f'{{"{MODEL}": {{"enabled": false}}}}'}
    with (
        live_server(args=["--device", "cpu"], env=env, repository=repository) as off,
        httpx.Client(base_url=off.url, timeout=30.0) as c,
    ):
        serve(c, samples)
        snap = snapshot(c)
        assert snap["state"] == "off", snap
        assert snap["shadow_fraction"] == 0
        assert moved(snap) == []
        assert metric(off, "exitserve_shadow_samples_total") == 0
        assert metric(off, "exitserve_fidelity_compared_total") == 0


HOLD_MS = 1000  # as in test_overload: a batch that cannot fill waits this long
QUEUE = 40


def post(client: httpx.Client, x: FloatArray) -> httpx.Response:
    body, headers = binary_request(x)
    return client.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)


def test_overload_sheds_shadows_before_refusing_a_request(
    live_server: LiveServerFactory, repository: Path, reference: Reference, samples: FloatArray
) -> None:
    """Deterministic as test_overload.py: batches (256) never fill, so each stage holds
    its rows HOLD_MS. Every early answer is shadowed (fraction 1). Request A's ten early
    answers wait at stage 1 as shadows; request B (25 rows, above half of the 40-row
    queue) makes them give way at once, counted as shed and never run; request C, which
    no longer fits, is refused, and by then no shadow is left to shed."""
    args = ["--device", "cpu", "--max-queue-delay-ms", str(HOLD_MS), "--max-batch-size", "256"]
    args += ["--max-queue-samples", str(QUEUE)]
    args += ["--fidelity-min-shadow-fraction", "1", "--fidelity-max-shadow-fraction", "1"]
    early = samples[reference.expect(samples).exit_index == 0][:10]
    assert len(early) == 10  # precondition: clean digits leave at exit 0
    mv = {"model": MODEL, "version": "1"}
    with (
        live_server(args=args, repository=repository) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as c,
    ):
        assert post(c, early).status_code == 200
        assert metric(server, "exitserve_shadow_samples_total", **mv) == 10
        assert inflight(server.metrics_url) == 0  # shadows are not requests
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(post, c, samples[:25])
            wait_for_inflight(server.metrics_url, 1)
            shed = metric(server, "exitserve_shadow_shed_total", exit="0", **mv)
            refused = post(c, samples[25:41])
            compared = metric(server, "exitserve_fidelity_compared_total", **mv)
            answer = held.result(timeout=30)
    assert shed == 10
    assert refused.status_code == 429, refused.text
    assert compared == 0  # no shadow ran before the refusal: all ten were shed first
    assert answer.status_code == 200


def test_every_comparison_matches_the_bare_segments(
    live_server: LiveServerFactory, repository: Path, reference: Reference
) -> None:
    """Every early answer shadowed (fraction 1, frozen so the thresholds stay): per exit,
    the server's compared/agreed counters equal what the bare segments say about the same
    images, exactly, on the I/O-binding path (hidden states as OrtValues) as well."""
    args = ["--device", "cpu", "--io-binding", "on", "--fidelity-frozen"]
    args += ["--fidelity-min-shadow-fraction", "1", "--fidelity-max-shadow-fraction", "1"]
    x = stream("noise", 600, seed=5)
    expected, full = reference.expect(x), reference.expect(x, full_depth=True).label
    mv = {"model": MODEL, "version": "1"}
    with (
        live_server(args=args, repository=repository) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as c,
    ):
        served = serve(c, x)
        early = int((expected.exit_index < 2).sum())
        deadline = time.monotonic() + 30  # the last shadows finish after their answers
        while metric(server, "exitserve_fidelity_compared_total", **mv) < early:
            assert time.monotonic() < deadline, "shadows never finished"
            time.sleep(0.05)
        for k in (0, 1):
            left = expected.exit_index == k
            got = metric(server, "exitserve_fidelity_compared_total", exit=str(k), **mv)
            agreed = metric(server, "exitserve_fidelity_agreed_total", exit=str(k), **mv)
            assert got == left.sum()
            assert agreed == (expected.label[left] == full[left]).sum()
    assert (served == expected.label).all()  # shadows changed no answer
