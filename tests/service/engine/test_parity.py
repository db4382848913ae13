"""The engine's answers equal running the segments directly and applying the policy by hand."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

from service.device_rows import DeviceRows, Hidden
from service.settings import Settings
from service.types import InferenceInput, InferenceResult, PolicyOverride
from tests.service.engine.conftest import Reference, run, split_threshold, started

BOUNDARY = 1e-5  # scores this close to a threshold may flip with batch composition


def score(policy: str, probs: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """The policy's score, written out independently of service.policies."""
    p = probs.astype(np.float64)
    if policy == "confidence":
        return np.asarray(p.max(axis=1))
    if policy == "margin":
        top = np.sort(p, axis=1)
        return np.asarray(top[:, -1] - top[:, -2])
    return np.asarray(-(p * np.log(np.clip(p, 1e-12, 1))).sum(axis=1))  # entropy


def passes(policy: str, s: npt.NDArray[np.float64], t: float) -> npt.NDArray[np.bool_]:
    return s <= t if policy == "entropy" else s >= t


async def infer_in_chunks(
    plane_settings: Settings, x: npt.NDArray[np.float32], override: PolicyOverride
) -> list[InferenceResult]:
    """Concurrent requests of varied sizes (1..7 rows) covering x in order."""
    sizes = np.random.default_rng(1).integers(1, 8, len(x))
    bounds = np.minimum(np.concatenate([[0], np.cumsum(sizes)]), len(x))
    chunks = [x[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    async with started(plane_settings) as plane:
        return await asyncio.gather(
            *(plane.infer(InferenceInput("tiny", None, c, override)) for c in chunks)
        )


def merged(results: list[InferenceResult]) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    exits = np.concatenate([r.exit_index for r in results])
    probs = np.concatenate([r.probabilities for r in results])
    for r in results:
        np.testing.assert_array_equal(r.label, r.probabilities.argmax(axis=1))
        np.testing.assert_allclose(r.confidence, r.probabilities.max(axis=1))
    return exits, probs


def check(
    ref: Reference,
    exits: npt.NDArray[np.int32],
    probs: npt.NDArray[np.float32],
    policy: str,
    thresholds: list[float],
) -> None:
    scores = [score(policy, p) for p in ref.probs]
    expected = ref.exits(lambda k, _: passes(policy, scores[k], thresholds[k]))
    unsure = np.zeros(len(exits), dtype=bool)
    for k in range(len(ref.probs) - 1):
        unsure |= np.abs(scores[k] - thresholds[k]) < BOUNDARY
    np.testing.assert_array_equal(exits[~unsure], expected[~unsure])
    answered = np.stack([ref.probs[e][i] for i, e in enumerate(exits)])
    np.testing.assert_allclose(probs, answered, atol=1e-5)


@pytest.mark.parametrize("io_binding", ["off", "on"])
def test_default_policy_matches_direct_segments(
    make_settings: Callable[..., Settings], reference: Reference, io_binding: str
) -> None:
    manifest = reference.manifest
    policy = manifest.default_policy
    thresholds = [seg.thresholds[policy] for seg in manifest.segments]
    settings = make_settings(io_binding=io_binding)

    async def test() -> None:
        results = await infer_in_chunks(settings, reference.x, PolicyOverride())
        check(reference, *merged(results), policy, thresholds)

    run(test)


@pytest.mark.parametrize("io_binding", ["off", "on"])
def test_full_depth_answers_every_sample_at_the_last_exit(
    make_settings: Callable[..., Settings], reference: Reference, io_binding: str
) -> None:
    async def test() -> None:
        override = PolicyOverride(full_depth=True)
        results = await infer_in_chunks(make_settings(io_binding=io_binding), reference.x, override)
        exits, probs = merged(results)
        assert (exits == reference.manifest.num_exits - 1).all()
        np.testing.assert_allclose(probs, reference.probs[-1], atol=1e-5)

    run(test)


@pytest.mark.parametrize("io_binding", ["off", "on"])
def test_one_request_with_samples_at_different_exits_answers_once_in_order(
    make_settings: Callable[..., Settings], reference: Reference, io_binding: str
) -> None:
    t = split_threshold(score("confidence", reference.probs[0]).astype(np.float32))
    override = PolicyOverride(policy="confidence", threshold=t)
    settings = make_settings(io_binding=io_binding, batching={"max_batch_size": 16})

    async def test() -> None:
        async with started(settings) as plane:
            result = await plane.infer(InferenceInput("tiny", None, reference.x, override))
        assert len(np.unique(result.exit_index)) >= 2
        check(reference, *merged([result]), "confidence", [t] * reference.manifest.num_exits)

    run(test)


def test_max_exit_caps_the_depth(
    make_settings: Callable[..., Settings], reference: Reference
) -> None:
    async def test() -> None:
        results = await infer_in_chunks(make_settings(), reference.x, PolicyOverride(max_exit=0))
        exits, probs = merged(results)
        assert (exits == 0).all()
        np.testing.assert_allclose(probs, reference.probs[0], atol=1e-5)

    run(test)


def test_on_a_device_survivors_are_gathered_as_the_next_batch_merges_them(
    make_settings: Callable[..., Settings],
    reference: Reference,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bound path: a batch whose rows partly exit forwards its survivors by naming their
    rows, so no Gather runs as it ends; the next stage picks and merges them in one
    select run per batch, and the answers are still the segments' own."""
    calls = {"take": 0, "select": 0}
    take, select = DeviceRows.take, DeviceRows.select

    def counted_take(self: DeviceRows, x: Hidden, rows: npt.NDArray[np.int64]) -> Hidden:
        calls["take"] += isinstance(x, ort.OrtValue)
        return take(self, x, rows)

    def counted_select(self: DeviceRows, parts: list[tuple[Hidden, Any]]) -> Hidden:
        calls["select"] += any(isinstance(x, ort.OrtValue) for x, _ in parts)
        return select(self, parts)

    t = split_threshold(score("confidence", reference.probs[0]).astype(np.float32))
    override = PolicyOverride(policy="confidence", threshold=t)
    settings = make_settings(io_binding="on", batching={"max_batch_size": 16})

    async def test() -> None:
        async with started(settings) as plane:
            monkeypatch.setattr(DeviceRows, "take", counted_take)
            monkeypatch.setattr(DeviceRows, "select", counted_select)
            result = await plane.infer(InferenceInput("tiny", None, reference.x, override))
        assert len(np.unique(result.exit_index)) >= 2  # some rows went on, some did not
        check(reference, *merged([result]), "confidence", [t] * reference.manifest.num_exits)

    run(test)
    assert calls["take"] == 0
    assert calls["select"] > 0
