"""The stage-batching pipeline on a fake runner: ordering, merging, failures, limits."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.errors import InferenceFailed, NotReady, Overloaded, RequestTimeout
from service.metrics import Metrics
from service.pipeline_spec import PipelineSpec
from service.policies import ExitPolicy
from service.scheduler import BatchTrace, Pipeline
from service.settings import BatchingConfig
from tests.service.unit.fakes import CLASSES, FakeRunner, rows

POLICY = ExitPolicy("confidence", (0.5, 0.5, 0.5), last_exit=2)
TIMEOUT_S = 5.0


@asynccontextmanager
async def running(
    runner: FakeRunner,
    *,
    max_batch: int = 8,
    delay_ms: float = 1.0,
    max_queue: int = 1000,
    trace: BatchTrace | None = None,
    inline_ms: float = 0.0,
    chain: bool = False,
    executor: ThreadPoolExecutor | None = None,
    in_flight: int = 1,
    stage_sizes: tuple[int, ...] = (),
) -> AsyncIterator[Pipeline]:
    spec = PipelineSpec(
        model="m",
        version="1",
        classes=CLASSES,
        macs=(10, 20, 30)[: runner.segments],
        batching=BatchingConfig(
            max_batch_size=max_batch,
            max_queue_delay_ms=delay_ms,
            batches_in_flight=in_flight,
            max_batch_sizes=list(stage_sizes),
        ),
        max_queue_samples=max_queue,
        inline_max_s=inline_ms / 1000.0,
        chain_batches=chain,
    )
    with executor or ThreadPoolExecutor(4) as pool:
        pipeline = Pipeline(spec, runner, pool, Metrics(CollectorRegistry()), trace)
        pipeline.start()
        try:
            yield pipeline
        finally:
            await pipeline.close()


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


def test_random_requests_answered_once_in_order() -> None:
    rng = np.random.default_rng(7)
    payloads = []
    for i in range(40):
        n = int(rng.integers(1, 8))
        planned, labels = rng.integers(0, 4, n), rng.integers(0, CLASSES, n)  # 3 = past the end
        payloads.append((planned, labels, rows(planned, labels, tag=i)))

    async def test() -> None:
        async with running(FakeRunner(), max_batch=5) as pipeline:
            futures = [
                pipeline.submit(f"r{i}", x, POLICY, TIMEOUT_S)
                for i, (_, _, x) in enumerate(payloads)
            ]
            results = await asyncio.gather(*futures)
            samples = pipeline._metrics.value
            total = sum(
                samples("exitserve_samples_total", {"model": "m", "version": "1", "exit": str(k)})
                for k in range(3)
            )
            assert total == sum(len(p[0]) for p in payloads)
            assert pipeline.in_flight == 0
        for (planned, labels, _), result in zip(payloads, results, strict=True):
            assert result.exit_index.tolist() == np.minimum(planned, 2).tolist()
            # rows planned past the last exit leave it unsure: uniform, argmax 0
            assert result.label.tolist() == np.where(planned <= 2, labels, 0).tolist()
            assert result.probabilities.shape == (len(planned), CLASSES)
            np.testing.assert_allclose(result.confidence, result.probabilities.max(axis=1))

    run(test)


def test_batches_respect_max_batch_size_and_split_large_requests() -> None:
    runner = FakeRunner()

    async def test() -> None:
        async with running(runner, max_batch=4) as pipeline:
            planned = [0, 1, 2] * 4
            result = await pipeline.submit("big", rows(planned, [1] * 12), POLICY, TIMEOUT_S)
            assert result.exit_index.tolist() == planned

    run(test)
    assert all(len(x) <= 4 for _, x in runner.batches)
    assert [k for k, _ in runner.batches].count(0) == 3


def test_stage_batch_merges_survivors_of_several_batches() -> None:
    trace: list[tuple[int, list[str]]] = []
    runner = FakeRunner()

    async def test() -> None:
        async with running(
            runner, max_batch=4, delay_ms=100, trace=lambda k, ids: trace.append((k, ids))
        ) as pipeline:
            futures = [
                pipeline.submit(f"r{i}", rows([i % 2], [0], tag=i), POLICY, TIMEOUT_S)
                for i in range(8)
            ]
            await asyncio.gather(*futures)

    run(test)
    first = [set(ids) for k, ids in trace if k == 0]
    assert len(first) >= 2
    merged = [ids for k, ids in trace if k == 1 and sum(bool(set(ids) & b) for b in first) >= 2]
    assert merged, trace


def test_failing_segment_fails_only_its_batch_and_the_stage_recovers() -> None:
    failed = {"done": False}

    def fail_once(k: int, x: Any) -> bool:
        if k == 1 and not failed["done"]:
            failed["done"] = True
            return True
        return False

    async def test() -> None:
        # batches of 2: a's rows, then b+c; so the failing stage-1 batch holds 2 packets
        async with running(FakeRunner(fail=fail_once), max_batch=2, delay_ms=50) as pipeline:
            both = pipeline.submit("a", rows([0, 1], [1, 2]), POLICY, TIMEOUT_S)
            deep = pipeline.submit("b", rows([1], [3]), POLICY, TIMEOUT_S)
            early = pipeline.submit("c", rows([0], [2]), POLICY, TIMEOUT_S)
            outcomes = await asyncio.gather(both, deep, early, return_exceptions=True)
            assert isinstance(outcomes[0], InferenceFailed)
            assert isinstance(outcomes[1], InferenceFailed)
            assert "segment 1" in outcomes[0].message
            assert outcomes[2].label.tolist() == [2]  # type: ignore[union-attr]
            again = await pipeline.submit("d", rows([1, 2], [3, 0]), POLICY, TIMEOUT_S)
            assert again.exit_index.tolist() == [1, 2]
            assert pipeline.in_flight == 0

    run(test)


def test_full_queue_refuses_new_requests() -> None:
    async def test() -> None:
        async with running(FakeRunner(delay_s=lambda k: 0.05), max_queue=4) as pipeline:
            first = pipeline.submit("a", rows([0] * 3, [0] * 3), POLICY, TIMEOUT_S)
            with pytest.raises(Overloaded) as err:
                pipeline.submit("b", rows([0, 0], [0, 0]), POLICY, TIMEOUT_S)
            assert err.value.status_code == 429
            assert err.value.headers["Retry-After"] == "1"
            fits = pipeline.submit("c", rows([0], [0]), POLICY, TIMEOUT_S)
            await asyncio.gather(first, fits)

    run(test)


def test_timed_out_rows_never_reach_later_stages() -> None:
    runner = FakeRunner(delay_s=lambda k: 0.3 if k == 0 else 0.0)

    async def test() -> None:
        async with running(runner) as pipeline:
            slow = pipeline.submit("slow", rows([2, 2], [0, 0], tag=1), POLICY, 0.1)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(slow, 0.1)  # as the data plane does: cancels it
            queued = pipeline.submit("queued", rows([2], [0], tag=2), POLICY, 0.1)
            with pytest.raises(RequestTimeout):
                await queued  # expired in the stage-0 queue behind the slow batch
            await asyncio.sleep(0.4)  # let the slow batch finish and forward its survivors
            assert pipeline.in_flight == 0

    run(test)
    assert runner.tags_run(0) == {1.0, 1.001}
    assert runner.tags_run(1) == set()


def test_cancelled_request_is_dropped_before_running() -> None:
    runner = FakeRunner(delay_s=lambda k: 0.1 if k == 0 else 0.0)

    async def test() -> None:
        async with running(runner, max_batch=1) as pipeline:
            first = pipeline.submit("a", rows([0], [0], tag=1), POLICY, TIMEOUT_S)
            gone = pipeline.submit("b", rows([0], [0], tag=2), POLICY, TIMEOUT_S)
            await asyncio.sleep(0.02)
            gone.cancel()
            await first
            await asyncio.sleep(0.05)

    run(test)
    assert runner.tags_run(0) == {1.0}


def test_drain_answers_queued_requests_then_refuses() -> None:
    async def test() -> None:
        async with running(FakeRunner(delay_s=lambda k: 0.01), max_batch=2) as pipeline:
            futures = [
                pipeline.submit(f"r{i}", rows([i % 3], [1]), POLICY, TIMEOUT_S) for i in range(10)
            ]
            assert await pipeline.drain(5.0)
            assert all(f.done() and not f.exception() for f in futures)
            with pytest.raises(NotReady):
                pipeline.submit("late", rows([0], [1]), POLICY, TIMEOUT_S)

    run(test)


def test_close_after_a_drain_timeout_answers_leftovers() -> None:
    async def test() -> None:
        async with running(FakeRunner(delay_s=lambda k: 0.2), max_batch=1) as pipeline:
            futures = [
                pipeline.submit(f"r{i}", rows([0], [1]), POLICY, TIMEOUT_S) for i in range(3)
            ]
            assert not await pipeline.drain(0.05)
            await pipeline.close()
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
            assert any(isinstance(o, NotReady) for o in outcomes)
            assert pipeline.in_flight == 0

    run(test)


class ThreadRecorder(FakeRunner):
    """Records, per run, whether it ran on the event loop's (main) thread."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(delay_s=lambda k: delay_s)
        self.on_loop: list[bool] = []

    def run(self, k: int, x: Any) -> Any:
        self.on_loop.append(threading.current_thread() is threading.main_thread())
        return super().run(k, x)


def _one_at_a_time(runner: ThreadRecorder, inline_ms: float, requests: int) -> None:
    deep = rows([2], [1])  # leaves at the last exit: three runs per request

    async def test() -> None:
        async with running(runner, delay_ms=0.0, inline_ms=inline_ms) as pipeline:
            for i in range(requests):
                await pipeline.submit(f"r{i}", deep, POLICY, TIMEOUT_S)

    run(test)


def test_the_only_request_runs_inline_once_its_stages_are_known_to_be_quick() -> None:
    runner = ThreadRecorder()
    _one_at_a_time(runner, inline_ms=50.0, requests=3)
    assert runner.on_loop[:3] == [False] * 3  # no cost measured yet: the executor
    assert runner.on_loop[3:] == [True] * 6


def test_slow_stages_and_a_zero_limit_keep_runs_off_the_event_loop() -> None:
    slow = ThreadRecorder(delay_s=0.02)
    _one_at_a_time(slow, inline_ms=5.0, requests=2)
    off = ThreadRecorder()
    _one_at_a_time(off, inline_ms=0.0, requests=2)
    assert not any(slow.on_loop)
    assert not any(off.on_loop)
    assert len(slow.on_loop) == len(off.on_loop) == 6


def test_requests_in_flight_together_run_on_the_executor() -> None:
    """The first of two requests sent together is alone when it arrives, so its stage 0
    runs at once on the loop (`Pipeline._solo`); every run while both are in flight goes
    to the executor."""
    runner = ThreadRecorder(delay_s=0.001)

    async def test() -> None:
        async with running(runner, max_batch=1, delay_ms=0.0, inline_ms=50.0) as pipeline:
            await pipeline.submit("warm", rows([2], [0]), POLICY, TIMEOUT_S)
            runner.on_loop.clear()
            both = [pipeline.submit(f"r{i}", rows([2], [i]), POLICY, TIMEOUT_S) for i in range(2)]
            await asyncio.gather(*both)

    run(test)
    assert len(runner.on_loop) == 6
    assert runner.on_loop[:2] == [True, False]


def test_a_lone_quick_request_is_answered_inside_submit() -> None:
    """Alone and quick, a request runs stage 0 inside `submit`: a one-exit answer is ready
    when it returns, with no event-loop turn; one in flight beside it waits its turn."""
    runner = ThreadRecorder()

    async def test() -> None:
        async with running(runner, delay_ms=0.0, inline_ms=50.0) as pipeline:
            await pipeline.submit("learn", rows([0], [1]), POLICY, TIMEOUT_S)
            alone = pipeline.submit("alone", rows([0], [3]), POLICY, TIMEOUT_S)
            assert alone.done()
            assert int(alone.result().label[0]) == 3
            deep = pipeline.submit("deep", rows([2], [2]), POLICY, TIMEOUT_S)
            assert not deep.done()  # survivors queued at stage 1
            beside = pipeline.submit("beside", rows([0], [1]), POLICY, TIMEOUT_S)
            assert not beside.done()  # `deep` is in flight: queued, not run at once
            done = await asyncio.gather(deep, beside)
            assert [int(r.label[0]) for r in done] == [2, 1]

    run(test)
    assert runner.on_loop[1:3] == [True, True]  # `alone`'s and `deep`'s stage 0


def test_survivor_delay_applies_after_the_first_stage() -> None:
    def delays(**batching: Any) -> list[float]:
        config = BatchingConfig(max_batch_size=8, **batching)
        spec = PipelineSpec("m", "1", CLASSES, (1, 2, 3), config, max_queue_samples=10)
        pipeline = Pipeline(spec, FakeRunner(), ThreadPoolExecutor(1), Metrics(CollectorRegistry()))
        return [stage.max_delay_s for stage in pipeline.stages]

    assert delays(max_queue_delay_ms=2.0) == [0.002] * 3
    assert delays(max_queue_delay_ms=2.0, survivor_delay_ms=0.0) == [0.002, 0.0, 0.0]
    assert delays(max_queue_delay_ms=0.0, survivor_delay_ms=5.0) == [0.0, 0.005, 0.005]


class GatedRunner(FakeRunner):
    """Stage 1 waits for `release`, and says when it has started."""

    def __init__(self) -> None:
        super().__init__()
        self.started, self.release = threading.Event(), threading.Event()

    def run(self, k: int, x: Any) -> Any:
        if k == 1:
            self.started.set()
            assert self.release.wait(TIMEOUT_S), "stage 1 was never released"
        return super().run(k, x)


def test_naive_stage_0_takes_the_next_batch_while_survivors_run_on() -> None:
    """Naive early exit is a fair baseline: a batch's survivors run the later stages as
    their own chain, so stage 0 is not blocked behind them (it was, before: serial)."""
    runner = GatedRunner()

    async def test() -> None:
        async with running(runner, chain=True) as pipeline:
            deep = pipeline.submit("deep", rows([2], [1]), POLICY, TIMEOUT_S)
            await asyncio.to_thread(runner.started.wait, TIMEOUT_S)
            assert runner.started.is_set()
            early = pipeline.submit("early", rows([0], [3], tag=1), POLICY, TIMEOUT_S)
            done, _ = await asyncio.wait({early}, timeout=TIMEOUT_S)
            assert early in done  # answered while stage 1 still holds `deep`
            assert not deep.done()
            runner.release.set()
            assert int((await early).label[0]) == 3
            assert int((await deep).label[0]) == 1

    run(test)


class RecordingExecutor(ThreadPoolExecutor):
    """Calls `on_submit(stage, claims)` as each batch is handed to it, on the event loop."""

    def __init__(self, on_submit: Callable[[int, list[Any]], None]) -> None:
        super().__init__(2)
        self.on_submit = on_submit

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.on_submit(args[1], args[2])
        return super().submit(fn, *args, **kwargs)


class GatedFirstRunner(FakeRunner):
    """The first stage-0 run waits for `release`, and says when it has started."""

    def __init__(self) -> None:
        super().__init__()
        self.started, self.release = threading.Event(), threading.Event()

    def run(self, k: int, x: Any) -> Any:
        if not self.started.is_set():
            self.started.set()
            assert self.release.wait(TIMEOUT_S), "the first batch was never released"
        return super().run(k, x)


def test_the_next_due_batch_is_handed_over_before_the_last_is_answered() -> None:
    """The worker gets its next batch as the last one comes back, not after the event
    loop has answered it: at the hand-over, the last batch's request is still unanswered."""
    runner = GatedFirstRunner()
    handed: list[tuple[int, list[str], bool]] = []
    first: list[asyncio.Future[Any]] = []

    def on_submit(k: int, claims: list[Any]) -> None:
        ids = [piece[0].id for claim in claims for piece in claim.pieces()]
        handed.append((k, ids, bool(first) and first[0].done()))

    async def test() -> None:
        executor = RecordingExecutor(on_submit)
        async with running(runner, delay_ms=0.0, executor=executor) as pipeline:
            first.append(pipeline.submit("a", rows([0], [1]), POLICY, TIMEOUT_S))
            await asyncio.to_thread(runner.started.wait, TIMEOUT_S)
            second = pipeline.submit("b", rows([0], [2], tag=1), POLICY, TIMEOUT_S)
            runner.release.set()
            assert int((await first[0]).label[0]) == 1
            assert int((await second).label[0]) == 2

    run(test)
    assert handed == [(0, ["a"], False), (0, ["b"], False)]


@pytest.mark.parametrize("in_flight", [1, 2])
def test_a_second_batch_of_a_stage_runs_beside_a_stalled_one_only_when_allowed(
    in_flight: int,
) -> None:
    """batches_in_flight=2 (GPUs): a request queued behind a stage-0 batch that has not come
    back runs and is answered meanwhile; with the default 1 it waits for that batch."""
    runner = GatedFirstRunner()

    async def test() -> None:
        async with running(runner, delay_ms=0.0, in_flight=in_flight) as pipeline:
            first = pipeline.submit("a", rows([0], [1]), POLICY, TIMEOUT_S)
            await asyncio.to_thread(runner.started.wait, TIMEOUT_S)
            second = pipeline.submit("b", rows([0], [2], tag=1), POLICY, TIMEOUT_S)
            wait_s = TIMEOUT_S if in_flight > 1 else 0.3  # 1: it cannot start before release
            done, _ = await asyncio.wait({second}, timeout=wait_s)
            assert (second in done) == (in_flight > 1)
            assert not first.done()
            runner.release.set()
            assert int((await first).label[0]) == 1
            assert int((await second).label[0]) == 2
            assert pipeline.in_flight == 0

    run(test)


def test_overlapped_batches_answer_every_request_and_survive_a_failed_run() -> None:
    """With two batches in flight per stage, random requests across three stages are each
    answered once, and a failing run fails only its own batch's requests."""
    runner = FakeRunner(fail=lambda k, x: k == 1 and bool((x[:, 2] >= 99).any()))

    async def test() -> None:
        async with running(runner, max_batch=3, delay_ms=0.0, in_flight=2) as pipeline:
            good = [
                pipeline.submit(f"r{i}", rows([i % 3, 0], [1, 2], tag=i), POLICY, TIMEOUT_S)
                for i in range(30)
            ]
            bad = pipeline.submit("bad", rows([2], [1], tag=99), POLICY, TIMEOUT_S)
            with pytest.raises(InferenceFailed):
                await bad
            results = await asyncio.gather(*good, return_exceptions=True)
            answered = [r for r in results if not isinstance(r, BaseException)]
            # only requests sharing the bad row's stage-1 batch may fail with it
            assert len(answered) >= len(good) - 2
            for result in answered:
                assert result.label.tolist() == [1, 2]
            assert pipeline.in_flight == 0

    run(test)


def test_each_stage_takes_its_own_max_batch_size() -> None:
    """max_batch_sizes=[2, 6]: stage 0 runs at most 2 rows; stage 1 waits (up to its 1 s
    delay) until its 6 rows fill one batch."""
    runner = FakeRunner()

    async def test() -> None:
        async with running(runner, max_batch=4, delay_ms=1000.0, stage_sizes=(2, 6)) as pipeline:
            result = await pipeline.submit("six", rows([1] * 6, [3] * 6), POLICY, TIMEOUT_S)
            assert result.exit_index.tolist() == [1] * 6

    run(test)
    assert [len(x) for k, x in runner.batches if k == 0] == [2, 2, 2]
    assert [len(x) for k, x in runner.batches if k == 1] == [6]
