"""Server/model metadata, Triton model config and statistics on the real model.

The statistics must hold together the way Triton's do, since Triton's tools check them
(perf_analyzer aborts unless the compute counts agree); see introspection.version_stats.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.errors import NotFound, Overloaded
from service.metrics import Metrics
from service.settings import Settings
from service.types import InferenceInput, PolicyOverride
from tests.service.engine.conftest import Reference, run, split_threshold, started


def test_metadata_config_and_stats(
    make_settings: Callable[..., Settings], reference: Reference
) -> None:
    settings = make_settings(batching={"max_batch_size": 16, "max_queue_delay_ms": 1.5})

    async def test() -> None:
        async with started(settings) as plane:
            server = plane.server_metadata()
            assert server["name"] == "exitserve"
            assert "binary_tensor_data" in server["extensions"]

            meta = plane.model_metadata("tiny")
            assert meta["platform"] == "onnxruntime_onnx"
            assert meta["versions"] == ["1"]
            assert meta["inputs"] == [
                {"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}
            ]
            assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
                "label": ("INT64", [-1]),
                "probabilities": ("FP32", [-1, 10]),
                "confidence": ("FP32", [-1]),
                "exit_index": ("INT32", [-1]),
            }
            assert meta["labels"] == [str(d) for d in range(10)]  # what `label` indexes

            config = plane.model_config("tiny", "1")
            assert json.loads(config["parameters"]["labels"]["string_value"]) == meta["labels"]
            assert config["max_batch_size"] == settings.max_samples_per_request
            assert config["input"][0]["data_type"] == "TYPE_FP32"
            assert config["input"][0]["dims"] == [1, 28, 28]
            assert config["dynamic_batching"] == {
                "max_queue_delay_microseconds": 1500,
                "preferred_batch_size": [16],
            }
            assert config["parameters"]["exits"] == {"string_value": "3"}

            await plane.infer(InferenceInput("tiny", None, reference.x[:5]))
            (stats,) = plane.model_stats("tiny")["model_stats"]
            assert (stats["name"], stats["version"]) == ("tiny", "1")
            assert stats["inference_count"] == 5
            assert stats["last_inference"] > 0
            assert_triton_consistent(stats, requests=1)
            assert plane.model_stats()["model_stats"] == [stats]
            with pytest.raises(NotFound):
                plane.model_stats("tiny", "9")
            with pytest.raises(NotFound):
                plane.model_config("nope")

    run(test)


def assert_triton_consistent(stats: dict[str, Any], requests: int) -> None:
    """What Triton guarantees and perf_analyzer relies on, for `requests` successes."""
    infer = stats["inference_stats"]
    assert infer["success"]["count"] == requests
    for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert infer[phase]["count"] == requests, phase
        assert infer[phase]["ns"] > 0, phase
    batches = stats["batch_stats"]
    assert sum(b["compute_infer"]["count"] for b in batches) == stats["execution_count"]
    for b in batches:
        counts = {b[p]["count"] for p in ("compute_input", "compute_infer", "compute_output")}
        assert len(counts) == 1, b
        assert counts.pop() >= 1, b
    # A request's success time spans its waits and segment runs, which never overlap for
    # a request that fits in one batch per stage (a larger one's rows wait for its own
    # earlier batches, so its credited times overlap: the tests keep requests that small).
    assert infer["success"]["ns"] >= infer["queue"]["ns"] + infer["compute_infer"]["ns"]


def machine_ns(stats: dict[str, Any], phase: str) -> int:
    return sum(int(b[phase]["ns"]) for b in stats["batch_stats"])


def test_sequential_requests_are_credited_their_own_batches(
    make_settings: Callable[..., Settings], reference: Reference
) -> None:
    """One request at a time: each batch carries one request, so request-credited compute
    equals the batches' own time, and inference_count / execution_count are samples / runs."""
    settings = make_settings(batching={"max_batch_size": 8, "max_queue_delay_ms": 0.5})
    sizes = [1, 3, 8, 5]  # none split over batches: see assert_triton_consistent

    async def test() -> None:
        async with started(settings) as plane:
            for i, n in enumerate(sizes):
                await plane.infer(InferenceInput("tiny", None, reference.x[i * 20 : i * 20 + n]))
            (stats,) = plane.model_stats("tiny")["model_stats"]
            assert_triton_consistent(stats, requests=len(sizes))
            assert stats["inference_count"] == sum(sizes)
            labels = {"model": "tiny", "version": "1"}
            runs = sum(
                plane.metrics.value("exitserve_batch_size_count", {**labels, "stage": str(k)})
                for k in range(3)
            )
            assert stats["execution_count"] == runs
            rows = sum(b["batch_size"] * b["compute_infer"]["count"] for b in stats["batch_stats"])
            assert rows == sum(
                plane.metrics.value("exitserve_batch_size_sum", {**labels, "stage": str(k)})
                for k in range(3)
            )
            infer = stats["inference_stats"]
            for phase in ("compute_input", "compute_infer", "compute_output"):
                # equal up to the nanosecond rounding of each batch size's sum
                assert abs(infer[phase]["ns"] - machine_ns(stats, phase)) <= len(
                    stats["batch_stats"]
                )

    run(test)


def test_a_shared_batch_is_credited_to_every_request_in_it(
    make_settings: Callable[..., Settings], reference: Reference
) -> None:
    """Eight requests queued before the stage loop runs share one stage-0 batch: each is
    credited its whole time, as Triton credits every request of an execution."""
    settings = make_settings(batching={"max_batch_size": 64, "max_queue_delay_ms": 50})

    async def test() -> None:
        async with started(settings) as plane:
            futures = [
                plane.submit(InferenceInput("tiny", None, reference.x[i : i + 1])) for i in range(8)
            ]
            await asyncio.gather(*futures)
            (stats,) = plane.model_stats("tiny")["model_stats"]
            assert_triton_consistent(stats, requests=8)
            assert stats["batch_stats"][-1]["batch_size"] == 8  # the shared stage-0 batch
            credited = stats["inference_stats"]["compute_infer"]["ns"]
            assert machine_ns(stats, "compute_infer") < credited
            slack = 8 * len(stats["batch_stats"])  # each batch size's sum rounds to ns
            assert credited <= 8 * machine_ns(stats, "compute_infer") + slack

    run(test)


def test_refused_and_answered_requests_split_into_fail_and_success(
    make_settings: Callable[..., Settings], reference: Reference
) -> None:
    """Requests refused at admission (429) count as failed inferences, like Triton's
    rejected ones; the admitted ones as successes."""
    settings = make_settings(max_queue_samples=4, batching={"max_queue_delay_ms": 50})

    async def test() -> None:
        async with started(settings) as plane:
            futures, refused = [], 0
            for i in range(6):  # all submitted before the stage loop runs: 4 rows fit
                try:
                    request = InferenceInput("tiny", None, reference.x[i : i + 1])
                    futures.append(plane.submit(request))
                except Overloaded:
                    refused += 1
            await asyncio.gather(*futures)
            (stats,) = plane.model_stats("tiny")["model_stats"]
            assert (len(futures), refused) == (4, 2)
            assert_triton_consistent(stats, requests=4)
            assert stats["inference_stats"]["fail"]["count"] == 2

    run(test)


def test_a_request_split_over_packets_waits_once_per_batch(
    make_settings: Callable[..., Settings], reference: Reference
) -> None:
    """16 rows in stage-0 batches of 4, about half surviving each: the survivors reach
    stage 1 as one packet per batch and merge there, yet the request waited once per
    stage-1 batch, not once per packet it has in that batch."""
    x = reference.x[:16]
    t = split_threshold(reference.probs[0][:16].max(axis=1))
    override = PolicyOverride(policy="confidence", threshold=t)
    survive = (reference.probs[0][:16].max(axis=1) < t).reshape(4, 4)
    packets = int(survive.any(axis=1).sum())  # stage-1 packets: batches with survivors
    settings = make_settings(batching={"max_batch_size": 4, "max_queue_delay_ms": 100})
    stage1 = {"model": "tiny", "version": "1", "stage": "1"}

    async def test() -> None:
        async with started(settings) as plane:
            await plane.infer(InferenceInput("tiny", None, x, override))
            value = plane.metrics.value
            batches = value("exitserve_batch_size_count", stage1)
            assert batches < packets, "no stage-1 batch merged packets: the test proves nothing"
            assert value("exitserve_queue_wait_seconds_count", stage1) == batches

    run(test)


def test_forget_removes_every_series_of_the_version_but_readiness() -> None:
    """Unloaded versions leave no series behind (version churn must not grow /metrics); the
    other version keeps its own; a version loaded again records afresh."""
    metrics = Metrics(CollectorRegistry())

    def record(version: str) -> None:
        metrics.model_loaded("m", version, [0.5, 0.5], exits=2)
        metrics.record_batch("m", version, 0, 4, 0.01, [0.001, 0.002], 0.001, 0.001)
        metrics.record_exit("m", version, 0, 10, 20, count=4)
        metrics.record_inference("m", version, 200, 0.02)
        metrics.child(metrics.queue_depth, "m", version, "0").set(3)
        metrics.batch_failures.labels("m", version, "1").inc()

    def versions() -> dict[str, set[str]]:
        """version -> names of the families with a series for it"""
        found: dict[str, set[str]] = {}
        for family in metrics.registry.collect():
            for sample in family.samples:
                if "version" in sample.labels:
                    found.setdefault(sample.labels["version"], set()).add(family.name)
        return found

    record("1")
    record("2")
    before = versions()
    assert before["1"] == before["2"]
    assert len(before["1"]) > 8
    metrics.model_unloaded("m", "1")
    metrics.forget("m", ["1"])
    after = versions()
    assert after["1"] == {"exitserve_model_ready"}
    assert after["2"] == before["2"]
    assert metrics.value("exitserve_model_ready", {"model": "m", "version": "1"}) == 0
    assert ("m", "1") not in metrics.triton
    assert ("m", "2") in metrics.triton
    record("1")  # loaded again: cached children were dropped, so the series come back
    assert versions()["1"] == before["1"]
    assert (
        metrics.value("exitserve_samples_total", {"model": "m", "version": "1", "exit": "0"}) == 4
    )
    assert np.isclose(metrics.triton[("m", "1")].phases[1], 0.02)
