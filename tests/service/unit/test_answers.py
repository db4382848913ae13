"""How a batch answers its requests (fake runner): whole answers made from the batch's own
arrays, answers put together from several stages, and the state a stage-0 batch makes
for rows that have seen no exit yet."""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from prometheus_client import CollectorRegistry

from service.assembly import assemble
from service.jobs import Claim, Job, Packet
from service.metrics import Metrics
from service.pipeline_spec import PipelineSpec
from service.policies import ExitPolicy
from service.scheduler import Pipeline
from service.settings import BatchingConfig
from service.types import InferenceResult
from tests.service.unit.fakes import CLASSES, FakeRunner, rows

POLICY = ExitPolicy("confidence", (0.5, 0.5, 0.5), last_exit=2)


def check(result: InferenceResult, planned: list[int], labels: list[int]) -> None:
    """Each row answered at its planned exit, with the fake runner's confident row there."""
    assert result.exit_index.tolist() == planned
    assert result.label.tolist() == labels
    want = np.full((len(labels), CLASSES), 0.1 / (CLASSES - 1), dtype=np.float32)
    want[np.arange(len(labels)), labels] = 0.9
    np.testing.assert_array_equal(result.probabilities, want)
    np.testing.assert_array_equal(result.confidence, np.full(len(labels), 0.9, np.float32))


def test_requests_answered_whole_and_in_parts_share_batches_without_mixing_rows() -> None:
    """One-sample requests (answered with views of the batch) beside requests whose rows
    leave at different stages; answers given earlier stay as they were while later
    batches run."""
    plans = [([0], [1]), ([2], [3]), ([0, 2, 1], [2, 0, 1]), ([1], [2]), ([0, 0], [3, 1])]

    async def test() -> None:
        batching = BatchingConfig(max_batch_size=16, max_queue_delay_ms=20)
        spec = PipelineSpec("m", "1", CLASSES, (10, 20, 30), batching, 1000)
        runner = FakeRunner()
        with ThreadPoolExecutor(2) as executor:
            pipeline = Pipeline(spec, runner, executor, Metrics(CollectorRegistry()))
            pipeline.start()
            first = [
                pipeline.submit(f"a{i}", rows(p, lab, tag=i), POLICY, 5.0)
                for i, (p, lab) in enumerate(plans)
            ]
            answers = await asyncio.gather(*first)
            assert len(runner.batches[0][1]) == 8, "stage 0 must batch every request's rows"
            kept = [(a.label.copy(), a.probabilities.copy()) for a in answers]
            later = [
                pipeline.submit(f"b{i}", rows(p, lab, tag=10 + i), POLICY, 5.0)
                for i, (p, lab) in enumerate(reversed(plans))
            ]
            for result, (p, lab) in zip(await asyncio.gather(*later), reversed(plans), strict=True):
                check(result, p, lab)
            for result, (p, lab), (label, probs) in zip(answers, plans, kept, strict=True):
                check(result, p, lab)
                np.testing.assert_array_equal(result.label, label)
                np.testing.assert_array_equal(result.probabilities, probs)
            await pipeline.close()

    asyncio.run(asyncio.wait_for(test(), 20))


def test_a_stage_0_batch_makes_fresh_state_and_trails_for_its_rows() -> None:
    """Rows entering at stage 0 have seen no exit (prediction -1, streak 0); under fidelity
    control a watched request's rows are evidence and an unwatched one's are not, also
    when a claim takes only part of a packet."""

    async def test() -> None:
        def entry(name: str, n: int, early: int | None) -> Packet:
            job = Job.create(name, "m", "1", n, CLASSES, POLICY, math.inf, early is not None)
            return Packet.entry(job, rows([0] * n, [0] * n), time.monotonic(), early)

        watched, plain, split = entry("w", 2, 2), entry("p", 3, None), entry("s", 4, 2)
        claims = [Claim(watched, 0, 2), Claim(plain, 0, 3), Claim(split, 1, 3)]
        batch = assemble(FakeRunner(), claims)
        assert batch is not None
        assert batch.size == 7
        assert batch.pred.tolist() == [-1] * 7
        assert batch.streak.tolist() == [0] * 7
        assert batch.trail is not None
        assert batch.trail.inclusion.tolist() == [1, 1, 0, 0, 0, 1, 1]
        assert batch.trail.surety.shape == (7, 2)
        assert batch.trail.answered.tolist() == [2] * 7
        assert (batch.trail.label == -1).all()
        assert [(p.lo, p.hi, p.rows.tolist()) for p in batch.pieces] == [
            (0, 2, [0, 1]),
            (2, 5, [0, 1, 2]),
            (5, 7, [1, 2]),
        ]
        unwatched = assemble(FakeRunner(), [Claim(entry("q", 2, None), 0, 2)])
        assert unwatched is not None
        assert unwatched.trail is None

    asyncio.run(test())
