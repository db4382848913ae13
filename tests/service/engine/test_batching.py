"""Stage batching on the real model: survivors merge across batches; metrics are recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from service.settings import Settings
from service.types import InferenceInput, PolicyOverride
from tests.service.engine.conftest import Reference, run, split_threshold, started


def test_a_stage_1_batch_holds_survivors_of_several_stage_0_batches(
    make_settings: Callable[..., Settings], reference: Reference
) -> None:
    trace: list[tuple[int, list[str]]] = []
    t = split_threshold(reference.probs[0].max(axis=1))  # about half survive exit 0
    override = PolicyOverride(policy="confidence", threshold=t)
    settings = make_settings(batching={"max_batch_size": 4, "max_queue_delay_ms": 100})

    async def test() -> None:
        async with started(settings, trace=lambda k, ids: trace.append((k, ids))) as plane:
            await asyncio.gather(
                *(
                    plane.infer(
                        InferenceInput(
                            "tiny", None, reference.x[i : i + 1], override, request_id=f"s{i}"
                        )
                    )
                    for i in range(16)
                )
            )

    run(test)
    stage0 = [set(ids) for k, ids in trace if k == 0]
    assert all(len(ids) <= 4 for ids in stage0)
    merged = [ids for k, ids in trace if k == 1 and sum(bool(b & set(ids)) for b in stage0) > 1]
    assert merged, f"no stage-1 batch merged stage-0 batches: {trace}"


def test_batches_exits_and_compute_are_recorded(
    make_settings: Callable[..., Settings], reference: Reference
) -> None:
    settings = make_settings(batching={"max_batch_size": 8})
    x = reference.x[:20]

    async def test() -> None:
        async with started(settings) as plane:
            result = await plane.infer(InferenceInput("tiny", None, x, PolicyOverride()))
            value = plane.metrics.value
            labels = {"model": "tiny", "version": "1"}
            per_exit = [
                value("exitserve_samples_total", {**labels, "exit": str(k)}) for k in range(3)
            ]
            assert per_exit == [float(np.sum(result.exit_index == k)) for k in range(3)]
            assert value("exitserve_batch_size_count", {**labels, "stage": "0"}) == 3  # 8+8+4
            assert value("exitserve_batch_size_sum", {**labels, "stage": "0"}) == 20
            macs = [s.macs for s in reference.manifest.segments]
            used = sum(sum(macs[: k + 1]) * n for k, n in enumerate(per_exit))
            assert value("exitserve_compute_used_macs_total", labels) == used
            assert value("exitserve_compute_full_macs_total", labels) == 20 * sum(macs)
            assert value("exitserve_inflight_requests", {"model": "tiny"}) == 0
            assert value("exitserve_queue_depth", {**labels, "stage": "0"}) == 0
            assert value("exitserve_model_ready", labels) == 1

    run(test)


def test_naive_scheduling_never_merges_batches_and_answers_the_same(
    make_settings: Callable[..., Settings], reference: Reference
) -> None:
    """The benchmark's baseline: survivors stay with their batch, answers are unchanged."""
    trace: list[tuple[int, list[str]]] = []
    t = split_threshold(reference.probs[0].max(axis=1))
    override = PolicyOverride(policy="confidence", threshold=t)
    batching = {"max_batch_size": 4, "max_queue_delay_ms": 100}
    answers: dict[str, list[int]] = {}
    for mode in ("stage", "naive"):
        settings = make_settings(batching=batching, scheduling=mode)

        async def test(settings: Settings = settings, mode: str = mode) -> None:
            async with started(settings, trace=lambda k, ids: trace.append((k, ids))) as plane:
                results = await asyncio.gather(
                    *(
                        plane.infer(
                            InferenceInput(
                                "tiny",
                                None,
                                reference.x[i : i + 1],
                                override,
                                request_id=f"{mode}{i}",
                            )
                        )
                        for i in range(16)
                    )
                )
            answers[mode] = [int(r.label[0]) for r in results]

        run(test)
    naive = [(k, set(ids)) for k, ids in trace if all(i.startswith("naive") for i in ids)]
    stage0 = [ids for k, ids in naive if k == 0]
    later = [ids for k, ids in naive if k > 0]
    assert later, "no naive batch reached stage 1"
    assert all(any(ids <= b for b in stage0) for ids in later), naive
    assert answers["naive"] == answers["stage"]
