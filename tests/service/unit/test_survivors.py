"""Survivors of a batch whose request went away while the batch ran (fake runner).

The stage batch is assembled with both requests' rows; one request is cancelled while its
segment runs. Its rows must be left behind, and the other request's survivors must carry
their own hidden rows to the next stage (a packet whose rows and spans disagree would
hand one request another's answers).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry

from service.metrics import Metrics
from service.pipeline_spec import PipelineSpec
from service.policies import ExitPolicy
from service.scheduler import Pipeline
from service.settings import BatchingConfig
from tests.service.unit.fakes import CLASSES, FakeRunner, rows

POLICY = ExitPolicy("confidence", (0.5, 0.5, 0.5), last_exit=2)


def test_a_request_cancelled_mid_batch_leaves_the_others_rows_aligned() -> None:
    async def test() -> None:
        runner = FakeRunner(delay_s=lambda k: 0.2 if k == 0 else 0.0)
        batching = BatchingConfig(max_batch_size=8, max_queue_delay_ms=50)
        spec = PipelineSpec("m", "1", CLASSES, (10, 20, 30), batching, 1000)
        with ThreadPoolExecutor(2) as executor:
            pipeline = Pipeline(spec, runner, executor, Metrics(CollectorRegistry()))
            pipeline.start()
            gone = pipeline.submit("a", rows([1, 1], [3, 3], tag=1), POLICY, 5.0)
            kept = pipeline.submit("b", rows([1, 2], [1, 2], tag=2), POLICY, 5.0)
            while not runner.batches:  # stage 0 has both requests' rows and is running
                await asyncio.sleep(0.005)
            assert len(runner.batches[0][1]) == 4
            gone.cancel()
            result = await kept
            assert result.label.tolist() == [1, 2]
            assert result.exit_index.tolist() == [1, 2]
            assert {round(float(t), 3) for _, x in runner.batches[1:] for t in x[:, 2]} == {
                2.0,
                2.001,
            }
            await pipeline.close()

    asyncio.run(asyncio.wait_for(test(), 20))
