"""Failures stay in their batch, load is shed, slow requests time out, shutdown drains."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from service.errors import (
    BadRequest,
    InferenceFailed,
    NotFound,
    NotReady,
    Overloaded,
    RequestTimeout,
)
from service.runtime import Hidden, ModelRuntime, SegmentOutput
from service.settings import Settings
from service.types import InferenceInput, PolicyOverride
from tests.service.engine.conftest import Reference, run, started

DEEP = PolicyOverride(full_depth=True)
SHALLOW = PolicyOverride(max_exit=0)


def patch_run(monkeypatch: pytest.MonkeyPatch, before: Callable[[int], None]) -> list[int]:
    """Wrap ModelRuntime.run: `before(k)` runs first (sleep, raise); returns stages run."""
    original = ModelRuntime.run
    stages: list[int] = []

    def run_segment(self: ModelRuntime, k: int, x: Hidden) -> SegmentOutput:
        stages.append(k)
        before(k)
        return original(self, k, x)

    monkeypatch.setattr(ModelRuntime, "run", run_segment)
    return stages


DEFAULT = PolicyOverride()


def ask(x: Any, policy: PolicyOverride = DEFAULT, rid: str = "") -> InferenceInput:
    return InferenceInput("tiny", None, x, policy, request_id=rid)


def test_failing_segment_fails_its_batch_only_and_serving_goes_on(
    make_settings: Callable[..., Settings], reference: Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = reference.x
    settings = make_settings(batching={"max_batch_size": 32, "max_queue_delay_ms": 50})

    async def test() -> None:
        async with started(settings) as plane:
            failures = {"left": 1}

            def fail_stage_1_once(k: int) -> None:
                if k == 1 and failures["left"]:
                    failures["left"] -= 1
                    raise RuntimeError("CUDA error: an illegal memory access (injected)")

            patch_run(monkeypatch, fail_stage_1_once)
            outcomes = await asyncio.gather(
                plane.infer(ask(x[:3], DEEP)),
                plane.infer(ask(x[3:5], DEEP)),
                plane.infer(ask(x[5:9], SHALLOW)),
                return_exceptions=True,
            )
            for failed in outcomes[:2]:
                assert isinstance(failed, InferenceFailed)
                assert failed.status_code == 500
                assert "segment 1" in failed.message
                assert "illegal memory" not in failed.message  # no internals leak
            assert not isinstance(outcomes[2], BaseException)
            assert outcomes[2].exit_index.tolist() == [0] * 4
            again = await plane.infer(ask(x[:3], DEEP))
            assert again.exit_index.tolist() == [2, 2, 2]
            failed_batches = plane.metrics.value(
                "exitserve_batch_failures_total", {"model": "tiny", "version": "1", "stage": "1"}
            )
            assert failed_batches == 1

    run(test)


def test_full_stage_0_queue_sheds_load(
    make_settings: Callable[..., Settings], reference: Reference
) -> None:
    settings = make_settings(max_queue_samples=8)

    async def test() -> None:
        async with started(settings) as plane:
            # gather starts both in one loop turn, before the stage loop can take a row: the
            # queue is full when the second arrives, however fast the machine
            outcomes = await asyncio.gather(
                plane.infer(ask(reference.x[:8])),
                plane.infer(ask(reference.x[:1])),
                return_exceptions=True,
            )
            assert not isinstance(outcomes[0], BaseException)
            assert isinstance(outcomes[1], Overloaded)
            assert outcomes[1].status_code == 429
            assert "Retry-After" in outcomes[1].headers
            await plane.infer(ask(reference.x[:8]))  # room again once answered

    run(test)


def test_bytes_in_flight_are_given_back_however_a_request_ends(
    make_settings: Callable[..., Settings], reference: Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answered, failed in a batch or refused: the byte budget ends where it started, so a
    failure cannot leak budget until the server sheds everything."""
    x = reference.x
    settings = make_settings(batching={"max_batch_size": 32, "max_queue_delay_ms": 50})

    async def test() -> None:
        async with started(settings) as plane:
            budget = plane.registry.get("tiny", None).pipeline.budget
            assert budget.limit == settings.max_inflight_bytes
            failures = {"left": 1}

            def fail_stage_1_once(k: int) -> None:
                if k == 1 and failures["left"]:
                    failures["left"] -= 1
                    raise RuntimeError("injected")

            patch_run(monkeypatch, fail_stage_1_once)
            pending = plane.submit(ask(x[:3], DEEP))
            assert budget.used >= x[:3].nbytes  # charged on admission
            outcomes = await asyncio.gather(
                pending, plane.infer(ask(x[3:8])), return_exceptions=True
            )
            assert isinstance(outcomes[0], InferenceFailed)
            assert not isinstance(outcomes[1], BaseException)
            with pytest.raises(BadRequest):
                await plane.infer(ask(x[:1], PolicyOverride(max_exit=9)))
            assert budget.used == 0

    run(test)


def test_timeout_answers_504_and_drops_rows_from_later_stages(
    make_settings: Callable[..., Settings], reference: Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace: list[tuple[int, list[str]]] = []
    settings = make_settings(request_timeout_s=0.2)

    async def test() -> None:
        async with started(settings, trace=lambda k, ids: trace.append((k, ids))) as plane:
            stages = patch_run(monkeypatch, lambda k: time.sleep(0.4 if k == 0 else 0.0))
            started_at = time.monotonic()
            with pytest.raises(RequestTimeout) as err:
                await plane.infer(ask(reference.x[:4], DEEP, rid="late"))
            assert err.value.status_code == 504
            assert time.monotonic() - started_at < 0.35
            await asyncio.sleep(0.5)  # stage 0 finishes and forwards its survivors
            assert stages == [0]
            assert not [ids for k, ids in trace if k > 0 and "late" in ids]
            assert plane.metrics.value("exitserve_inflight_requests", {"model": "tiny"}) == 0

    run(test)


def test_stop_answers_queued_requests_and_refuses_new_ones(
    make_settings: Callable[..., Settings], reference: Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(batching={"max_batch_size": 4})

    async def test() -> None:
        plane_cm = started(settings)
        plane = await plane_cm.__aenter__()
        patch_run(monkeypatch, lambda k: time.sleep(0.01))
        pending = [
            asyncio.create_task(plane.infer(ask(reference.x[i : i + 3], DEEP)))
            for i in range(0, 48, 3)
        ]
        await asyncio.sleep(0)  # every request is queued
        stopping = asyncio.create_task(plane.stop())
        await asyncio.sleep(0)
        assert not plane.ready
        with pytest.raises(NotReady):
            await plane.infer(ask(reference.x[:1]))
        results = await asyncio.gather(*pending)
        await stopping
        assert [r.exit_index.tolist() for r in results] == [[2, 2, 2]] * 16
        assert not plane.live
        await plane_cm.__aexit__(None, None, None)

    run(test)


@pytest.mark.parametrize(
    ("data", "policy", "error", "message"),
    [
        (
            np.zeros((2, 28, 28), np.float32),
            PolicyOverride(),
            BadRequest,
            "inputs[0].shape must be [-1, 1, 28, 28] (at least one sample), got [2, 28, 28]",
        ),
        (np.zeros((0, 1, 28, 28), np.float32), PolicyOverride(), BadRequest, "got [0, 1, 28, 28]"),
        (
            np.full((1, 1, 28, 28), np.nan, np.float32),
            PolicyOverride(),
            BadRequest,
            "inputs[0] contains NaN or infinity",
        ),
        (
            np.zeros((1, 1, 28, 28), np.float32),
            PolicyOverride(max_exit=5),
            BadRequest,
            "parameters.max_exit must be in [0, 2]",
        ),
        (
            np.zeros((5, 1, 28, 28), np.float32),
            PolicyOverride(),
            BadRequest,
            "inputs[0] holds 5 samples; at most 4 per request",
        ),
    ],
)
def test_bad_requests_name_the_problem(
    make_settings: Callable[..., Settings],
    data: Any,
    policy: PolicyOverride,
    error: type[Exception],
    message: str,
) -> None:
    async def test() -> None:
        async with started(make_settings(max_samples_per_request=4)) as plane:
            with pytest.raises(error) as err:
                await plane.infer(ask(data, policy))
            assert message in str(err.value)
            assert (await plane.infer(ask(np.zeros((1, 1, 28, 28), np.float32)))).version == "1"

    run(test)


def test_unknown_model_or_version_is_not_found(make_settings: Callable[..., Settings]) -> None:
    async def test() -> None:
        async with started(make_settings()) as plane:
            x = np.zeros((1, 1, 28, 28), np.float32)
            with pytest.raises(NotFound, match="model 'nope' is not in the model repository"):
                await plane.infer(InferenceInput("nope", None, x))
            with pytest.raises(NotFound, match="model 'tiny' has no version '7'"):
                await plane.infer(InferenceInput("tiny", "7", x))
            with pytest.raises(NotFound, match="model 'tiny' has no version '7'"):
                plane.manifest("tiny", "7")

    run(test)
