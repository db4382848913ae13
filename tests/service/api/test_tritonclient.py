"""Triton's own client library against the real server: what a Triton user would run.

Every other test speaks the project's own encoding; these use `tritonclient.http` (sync and
asyncio) for health, metadata, config, JSON and binary tensors, requested outputs, the
statistics perf_analyzer reads, and the repository API. Answers are checked against the
segments run by hand with bare onnxruntime.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from prometheus_client.parser import text_string_to_metric_families

from tests.service.api.v2helpers import MODEL, Expected, Reference
from tests.service.conftest import LiveServer, LiveServerFactory

TOKEN = "tritonclient-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OUTPUTS = ("label", "probabilities", "confidence", "exit_index")
F32 = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def served(live_server: LiveServerFactory) -> Iterator[LiveServer]:
    """Its own server: the last test unloads the model, and the statistics are counted
    from a known start."""
    args = ["--device", "cpu", "--max-samples-per-request", "64"]
    with live_server(args=args, env={"EXITSERVE_ADMIN_TOKEN": TOKEN}) as server:
        yield server


@pytest.fixture(scope="module")
def triton_client(served: LiveServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=_host(served.url), network_timeout=30.0)
    yield client
    client.close()


def _host(url: str) -> str:
    """tritonclient wants host:port, no scheme."""
    return re.sub(r"^https?://", "", url).rstrip("/")


def _inputs(x: F32, binary: bool) -> list[triton.InferInput]:
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return [tensor]


def _outputs(binary: bool, names: tuple[str, ...] = OUTPUTS) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(name, binary_data=binary) for name in names]


def _assert_matches(result: Any, want: Expected) -> None:
    np.testing.assert_array_equal(result.as_numpy("exit_index"), want.exit_index)
    np.testing.assert_array_equal(result.as_numpy("label"), want.label)
    np.testing.assert_allclose(result.as_numpy("probabilities"), want.probabilities, atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("confidence"), want.confidence, atol=1e-5)


def test_health_metadata_and_config(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert triton_client.is_model_ready(MODEL)
    assert triton_client.is_model_ready(MODEL, "1")
    assert not triton_client.is_model_ready("nope")
    server = triton_client.get_server_metadata()
    assert server["name"] == "exitserve"
    assert {"binary_tensor_data", "statistics"} <= set(server["extensions"])
    meta = triton_client.get_model_metadata(MODEL)
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert [o["name"] for o in meta["outputs"]] == list(OUTPUTS)
    config = triton_client.get_model_config(MODEL)
    assert config["max_batch_size"] == 64
    assert config["input"][0]["dims"] == [1, 28, 28]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_matches_the_reference(
    triton_client: triton.InferenceServerClient,
    reference: Reference,
    samples: F32,
    binary: bool,
) -> None:
    """JSON tensors both ways, or binary tensors both ways (binary_data on inputs and
    outputs): the same answers as the segments run by hand."""
    x = samples[:12]
    result = triton_client.infer(MODEL, _inputs(x, binary), outputs=_outputs(binary))
    _assert_matches(result, reference.expect(x))
    response = result.get_response()
    assert (response["model_name"], response["model_version"]) == (MODEL, "1")


def test_requested_outputs_only_and_a_version(
    triton_client: triton.InferenceServerClient, reference: Reference, samples: F32
) -> None:
    x = samples[12:17]
    outputs = _outputs(True, ("label", "exit_index"))
    result = triton_client.infer(
        MODEL, _inputs(x, True), model_version="1", outputs=outputs, request_id="asked-for-2"
    )
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["label", "exit_index"]
    assert response["id"] == "asked-for-2"
    assert result.as_numpy("probabilities") is None
    want = reference.expect(x)
    np.testing.assert_array_equal(result.as_numpy("label"), want.label)
    np.testing.assert_array_equal(result.as_numpy("exit_index"), want.exit_index)


def test_errors_reach_the_client_as_exceptions(
    triton_client: triton.InferenceServerClient, samples: F32
) -> None:
    wrong = np.zeros((2, 1, 27, 28), np.float32)
    with pytest.raises(triton.InferenceServerException, match="shape"):
        triton_client.infer(MODEL, _inputs(wrong, True))
    with pytest.raises(triton.InferenceServerException):
        triton_client.infer("nope", _inputs(samples[:1], True))


def test_the_asyncio_client_concurrently(
    served: LiveServer, reference: Reference, samples: F32
) -> None:
    """tritonclient.http.aio, eight requests at once, binary and JSON mixed."""

    async def main() -> list[Any]:
        client = triton_aio.InferenceServerClient(url=_host(served.url))
        try:
            assert await client.is_server_ready()
            assert (await client.get_model_metadata(MODEL))["name"] == MODEL
            calls = [
                client.infer(
                    MODEL,
                    _inputs(samples[i * 4 : i * 4 + 4], i % 2 == 0),
                    outputs=_outputs(i % 2 == 1),
                )
                for i in range(8)
            ]
            return list(await asyncio.wait_for(asyncio.gather(*calls), 60))
        finally:
            await client.close()

    for i, result in enumerate(asyncio.run(main())):
        x = samples[i * 4 : i * 4 + 4]
        _assert_matches(result, reference.expect(x))


def _stats(client: triton.InferenceServerClient) -> dict[str, Any]:
    (stats,) = client.get_inference_statistics(MODEL, "1")["model_stats"]
    assert isinstance(stats, dict)
    return stats


def _runs(stats: dict[str, Any]) -> int:
    """Segment runs over every batch size."""
    return sum(int(b["compute_infer"]["count"]) for b in stats["batch_stats"])


def _delta(after: Any, before: Any) -> Any:
    """Field-by-field difference of two statistics documents (numbers only)."""
    if isinstance(after, dict):
        return {
            k: _delta(v, before.get(k, 0) if isinstance(before, dict) else 0)
            for k, v in after.items()
        }
    if isinstance(after, (int, float)) and not isinstance(after, bool):
        return after - (before or 0)
    return after


def test_statistics_hold_together_as_perf_analyzer_requires(
    triton_client: triton.InferenceServerClient, samples: F32
) -> None:
    """perf_analyzer diffs two statistics documents and aborts unless compute_input,
    compute_infer and compute_output counts agree; Triton's counts equal the successes."""
    before = _stats(triton_client)
    sizes = [1, 4, 2, 7, 3]
    for i, n in enumerate(sizes):
        triton_client.infer(MODEL, _inputs(samples[i * 8 : i * 8 + n], True))
    after = _stats(triton_client)
    change = _delta(after, before)
    infer = change["inference_stats"]
    assert infer["success"]["count"] == len(sizes)
    assert infer["fail"]["count"] == 0
    for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert infer[phase]["count"] == len(sizes), phase  # perf_analyzer's check, and Triton's
        assert infer[phase]["ns"] > 0, phase
    # one request at a time, each within a batch: its waits and runs never overlap
    assert infer["success"]["ns"] >= infer["queue"]["ns"] + infer["compute_infer"]["ns"]
    assert change["inference_count"] == sum(sizes)
    new_runs = _runs(after) - _runs(before)
    assert change["execution_count"] == new_runs >= len(sizes)  # every stage-0 batch at least
    assert after["last_inference"] >= before["last_inference"] > 0


def _version_series(metrics_url: str) -> set[str]:
    """Names of the families with a series for MODEL version 1 on the /metrics port."""
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        family.name
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("model") == MODEL and s.labels.get("version") == "1"
    }


def test_unload_through_the_repository_api_drops_the_version_series(
    triton_client: triton.InferenceServerClient, served: LiveServer, samples: F32
) -> None:
    """After an unload only the not-ready gauge of the version is left on /metrics; a load
    brings the series back and the model answers again. Runs last: it unloads the model."""
    triton_client.infer(MODEL, _inputs(samples[:3], True))
    loaded = _version_series(served.metrics_url)
    assert {
        "exitserve_samples",
        "exitserve_batch_size",
        "exitserve_inference_duration_seconds",
    } <= loaded

    triton_client.unload_model(MODEL, headers=AUTH)
    assert not triton_client.is_model_ready(MODEL)
    assert _version_series(served.metrics_url) == {"exitserve_model_ready"}

    triton_client.load_model(MODEL, headers=AUTH)
    assert triton_client.is_model_ready(MODEL)
    triton_client.infer(MODEL, _inputs(samples[:3], True))
    assert loaded <= _version_series(served.metrics_url)
    assert _stats(triton_client)["inference_count"] == 3  # counted afresh
