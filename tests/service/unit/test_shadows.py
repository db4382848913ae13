"""Shadow rows in the stages, on the fake runner: priority, shedding, evidence, answers.

The fake runner's rows say where they leave (see fakes.py): at its planned exit a row is
90% sure of its label, elsewhere uniform, so the last exit says label 0 for every row
that did not plan to leave there. An early answer therefore agrees with the last exit
exactly when its label is 0, which lets the test know every comparison in advance.
"""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from prometheus_client import CollectorRegistry

from service.fidelity import FidelityConfig, FidelityController
from service.jobs import Job, Packet, ShadowJob, Span
from service.metrics import Metrics
from service.pipeline_spec import PipelineSpec
from service.policies import ExitPolicy
from service.scheduler import Pipeline
from service.settings import BatchingConfig
from service.shadows import Watch
from service.stage import Stage
from tests.service.unit.fakes import CLASSES, FakeRunner, rows
from tests.service.unit.manifests import make_manifest

POLICY = ExitPolicy("confidence", (0.9, 0.9, 0.9), last_exit=2)
ALWAYS = FidelityConfig(target=0.9, min_shadow_fraction=1.0, max_shadow_fraction=1.0)


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]


def packet(job: Job, n: int) -> Packet:
    x = np.zeros((n, 3), np.float32)
    spans = [Span(job, np.arange(n, dtype=np.int64))]
    return Packet(x, spans, np.zeros(n, np.int64), np.zeros(n, np.int32), time.monotonic())


def test_a_batch_takes_request_rows_first_and_fills_with_shadows() -> None:
    async def test() -> None:
        job = Job.create("r", "m", "1", 8, CLASSES, POLICY, math.inf)
        shadow = ShadowJob.of("m", "1", POLICY)
        stage = Stage(1, max_batch=4, max_delay_s=0.0)
        stage.put_shadow(packet(shadow, 3))  # queued first, still served last
        stage.put(packet(job, 2))
        claims = await stage.collect(1.0)
        assert [(c.packet.spans[0].job, c.stop - c.start) for c in claims] == [
            (job, 2),
            (shadow, 2),
        ]
        assert (stage.rows, stage.shadow_rows) == (0, 1)
        stage.put(packet(job, 4))
        full = await stage.collect(1.0)
        assert [c.packet.spans[0].job for c in full] == [job]  # no room: shadows wait
        alone = await stage.collect(1.0)  # no request row waits: shadows run alone
        assert [(c.packet.spans[0].job, c.stop - c.start) for c in alone] == [(shadow, 1)]
        stage.put_shadow(packet(shadow, 5))
        assert [p.left for p in stage.shed()] == [5]
        assert stage.shadow_rows == 0

    run(test())


def test_shadows_alone_wait_for_a_full_batch_requests_do_not() -> None:
    """With a long shadow delay, a partial batch of shadows waits, and a request row that
    arrives meanwhile starts the batch at once (its own delay is 0); a full batch of
    shadows does not wait either. No clock is read: each wait here is bounded at 5 s
    only so that a broken stage fails instead of hanging."""

    async def test() -> None:
        job = Job.create("r", "m", "1", 8, CLASSES, POLICY, math.inf)
        shadow = ShadowJob.of("m", "1", POLICY)
        stage = Stage(1, max_batch=4, max_delay_s=0.0, shadow_delay_s=3600.0)
        stage.put_shadow(packet(shadow, 2))
        waiting = asyncio.create_task(stage.collect(3600.0))
        await asyncio.sleep(0)
        assert not waiting.done()  # two shadows, no request: they wait for more
        stage.put(packet(job, 1))
        claims = await asyncio.wait_for(waiting, 5)
        assert [(c.packet.spans[0].job, c.stop - c.start) for c in claims] == [
            (job, 1),
            (shadow, 2),
        ]
        stage.put_shadow(packet(shadow, 4))
        full = await asyncio.wait_for(stage.collect(3600.0), 5)
        assert sum(c.stop - c.start for c in full) == 4

    run(test())


def test_shadows_run_to_the_end_compared_never_answered() -> None:
    """Every early answer of the watched request is shadowed (fraction 1) and compared at
    the last exit; the same rows sent with watched=False are not; answers are the same."""
    planned = [0, 0, 1, 2, 3, 3]  # 3: never leaves early
    labels = [0, 1, 2, 3, 1, 0]

    async def test() -> None:
        manifest = make_manifest(thresholds={"confidence": [0.9, 0.9, 0.9]})
        fid = FidelityController.for_manifest(manifest, POLICY, ALWAYS)
        assert fid is not None
        metrics, runner = Metrics(CollectorRegistry()), FakeRunner()
        spec = PipelineSpec("m", "1", CLASSES, (10, 20, 30), BatchingConfig(), 1000)
        with ThreadPoolExecutor(2) as executor:
            pipeline = Pipeline(spec, runner, executor, metrics, watch=Watch(fid))
            pipeline.start()
            watched = pipeline.submit("w", rows(planned, labels, tag=1), POLICY, 5.0, True)
            plain = pipeline.submit("p", rows(planned, labels, tag=2), POLICY, 5.0, False)
            a, b = await watched, await plain
            assert a.exit_index.tolist() == b.exit_index.tolist() == [0, 0, 1, 2, 2, 2]
            assert a.label.tolist() == b.label.tolist() == [0, 1, 2, 3, 0, 0]

            def value(name: str, k: int) -> float:
                labels = {"model": "m", "version": "1", "exit": str(k)}
                return metrics.value(f"exitserve_{name}_total", labels)

            while value("fidelity_compared", 0) + value("fidelity_compared", 1) < 3:
                await asyncio.sleep(0.01)  # the shadows' last batches (bounded by wait_for)
            assert [value("shadow_samples", k) for k in (0, 1)] == [2, 1]
            assert [value("fidelity_compared", k) for k in (0, 1)] == [2, 1]
            assert [value("fidelity_agreed", k) for k in (0, 1)] == [1, 0]  # label 0 agrees
            assert sum(value("samples", k) for k in range(3)) == 12  # shadows are not samples
            await asyncio.sleep(0)  # the futures' done callbacks
            assert pipeline.in_flight == 0
            assert fid.evidence.seen == 12
            assert {1.0, 1.001} <= runner.tags_run(2)  # the watched exit-0 rows ran on
            assert not {2.0, 2.001} & runner.tags_run(1)  # the others left
            await pipeline.close()

    run(test())
