"""Stage batching for one model version: a queue and batcher per segment, survivors merged.

Each stage loop (service/stage_loops.py) collects a batch, runs it on the shared bounded
executor (so segments of different stages overlap) and then, back on the event loop,
answers the requests whose last rows exited and queues the survivors for the next stage,
where they meet survivors of other batches. A quick batch runs on the loop itself when its
request is the only one in flight (service/inline.py); such a request runs stage 0 inside
`submit`, without the queue. A segment run that raises fails exactly the requests in that
batch; the loop carries on. Admission is the only place load is refused, so no accepted row is
ever dropped between stages. Shadow rows (fidelity control, service/shadows.py) are the
exception by design: nobody waits on them, and under load they are dropped (counted as
shed) before any request could be refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor

from service.admission import admit
from service.batch import Outcome, SegmentRunner, run_batch
from service.errors import InferenceFailed, NotReady
from service.inline import InlineRule
from service.jobs import ByteBudget, Claim, Job, Packet
from service.metrics import Metrics
from service.pipeline_spec import PipelineSpec
from service.policies import ExitPolicy
from service.runtime import Hidden
from service.shadows import Watch, crowded, observe, shed
from service.stage import Stage
from service.stage_loops import overlapped, serial
from service.types import InferenceResult

log = logging.getLogger(__name__)

BatchTrace = Callable[[int, list[str]], None]


class Pipeline:
    """The stages of one loaded model version and the requests in flight through them."""

    def __init__(
        self,
        spec: PipelineSpec,
        runner: SegmentRunner,
        executor: Executor,
        metrics: Metrics,
        trace: BatchTrace | None = None,
        budget: ByteBudget | None = None,
        watch: Watch | None = None,
    ) -> None:
        self.spec = spec
        self.budget = budget or ByteBudget(limit=1 << 62)  # shared by the registry's pipelines
        self._runner = runner
        self._executor = executor
        self._metrics = metrics
        self._trace = trace
        self._watch = watch
        if watch is not None:
            watch.crowded = self._crowded
        shadow_delay = 0.0 if watch is None else watch.fid.config.shadow_delay_ms / 1000.0
        self.stages = [
            Stage(k, spec.batching.max_batch_at(k), spec.batching.delay_at(k), shadow_delay)
            for k in range(len(spec.macs))
        ]
        for stage in self.stages:
            self._metrics.watch_gauge(
                self._metrics.queue_depth,
                _rows_of(stage),
                spec.model,
                spec.version,
                str(stage.index),
            )
        self._jobs: set[Job] = set()
        self._rule = InlineRule(spec.inline_max_s, len(self.stages))
        self._idle = asyncio.Event()  # set while no request is in flight
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._chains: set[asyncio.Task[None]] = set()  # naive mode's survivor chains
        self._closing = False
        self.closed = False  # close() has answered every request left

    @property
    def in_flight(self) -> int:
        return len(self._jobs)

    def start(self) -> None:
        """Start one loop per stage on the running event loop."""
        if self._watch is not None:
            self._watch.start()
        self._tasks = [
            asyncio.create_task(self._stage_loop(stage), name=f"{self.spec.model}-stage{k}")
            for k, stage in enumerate(self.stages)
        ]

    def submit(
        self,
        job_id: str,
        data: Hidden,
        policy: ExitPolicy,
        timeout_s: float,
        watched: bool = False,
    ) -> asyncio.Future[InferenceResult]:
        """Queue a request's rows at stage 0 (or run them now: `_solo`); Overloaded when
        the queues are full.

        `watched`: the request runs under the version's default policy, so its rows are
        fidelity control's evidence (and its early answers may be shadowed).
        """
        if self._closing:
            raise NotReady(f"model '{self.spec.model}' version '{self.spec.version}' is unloading")
        cost = data.nbytes + len(data) * self.spec.row_bytes
        if self._watch is not None and self._crowded(len(data), cost):
            self._shed()  # shadows go first, before anything could be refused
        admit(
            self.stages, self.budget, self.spec.max_queue_samples, self.spec.model, len(data), cost
        )
        now = time.monotonic()
        spec = self.spec
        watch = self._watch if watched and self._watch is not None and self._watch.on else None
        job = Job.create(
            job_id, spec.model, spec.version, len(data), spec.classes, policy, now + timeout_s
        )
        job.watched = watch is not None
        self._jobs.add(job)
        self._idle.clear()
        self.budget.take(cost)
        job.future.add_done_callback(lambda _: self._forget(job, cost))
        early = None if watch is None else watch.early
        packet = Packet.entry(job, data, now, early)
        if self._solo(len(data)):
            self._run_now([Claim(packet, 0, packet.size)])
        else:
            self.stages[0].put(packet)
        return job.future

    def _crowded(self, rows: int = 0, cost: int = 0) -> bool:
        """Whether shadows must give way (see `shadows.crowded`); worker threads ask too."""
        watch, limits = self._watch, (self.spec.max_queue_samples, self.spec.row_bytes)
        return watch is not None and crowded(watch, self.stages, self.budget, limits, rows, cost)

    def _shed(self) -> None:
        """Drop every queued shadow row, counted by the exit that answered it early."""
        if self._watch is not None:
            counts = shed(self._watch, self.stages)
            self._metrics.record_shed(self.spec.model, self.spec.version, counts)

    def _forget(self, job: Job, cost: int) -> None:
        job.dead = True  # a cancelled or timed-out request's rows are skipped from now on
        self.budget.give_back(cost)
        self._jobs.discard(job)
        if not self._jobs:
            self._idle.set()

    async def _stage_loop(self, stage: Stage) -> None:
        """The stage's loop (service/stage_loops.py), cancelled at close."""
        limit = self.spec.batching.batches_in_flight
        await (overlapped(self, stage, limit) if limit > 1 else serial(self, stage))

    def queued(self) -> bool:
        """Whether rows wait at any stage."""
        return any(s.rows for s in self.stages)

    def start_batch(self, k: int, claims: list[Claim]) -> asyncio.Future[Outcome]:
        """The batch running on the executor, or already run inline (see `_inline`); a
        failure to start (the executor shut down at stop) is the future's error."""
        loop = asyncio.get_running_loop()
        try:
            if not self._inline(k, claims):
                return loop.run_in_executor(
                    self._executor, run_batch, self._runner, k, claims, self._watch
                )
            outcome = run_batch(self._runner, k, claims, self._watch)
        except Exception as exc:
            failed: asyncio.Future[Outcome] = loop.create_future()
            failed.set_exception(exc)
            return failed
        done: asyncio.Future[Outcome] = loop.create_future()
        done.set_result(outcome)
        return done

    async def outcome(
        self, k: int, claims: list[Claim], running: asyncio.Future[Outcome]
    ) -> Outcome | None:
        """The batch's outcome, or None when its run failed (its requests are answered)."""
        try:
            return await running
        except Exception as exc:  # the batch's requests fail; the stage goes on
            self.fail(k, claims, exc)
            return None

    def _settle(self, k: int, claims: list[Claim], outcome: Outcome) -> Packet | None:
        """Back on the loop: learn, answer, forward; the survivors when batches are
        chained (naive). A failure here fails the batch's requests, as a failed run does."""
        try:
            self._rule.learn(k, outcome.size, outcome.seconds)
            return self._apply(k, outcome)
        except Exception as exc:
            self.fail(k, claims, exc)
            return None

    def finish(self, k: int, claims: list[Claim], outcome: Outcome | None) -> None:
        """Settle the batch; naive survivors go on as their own task, so stage 0 takes its
        next batch meanwhile (a fair baseline, not a serial one)."""
        forward = None if outcome is None else self._settle(k, claims, outcome)
        if forward is not None:
            chain = asyncio.create_task(self._chain(k + 1, forward))
            self._chains.add(chain)
            chain.add_done_callback(self._chains.discard)

    async def _chain(self, k: int, packet: Packet | None) -> None:
        """Naive early exit: one batch's survivors, alone, through the later stages."""
        while packet is not None:
            claims = [Claim(packet, 0, packet.size)]
            outcome = await self.outcome(k, claims, self.start_batch(k, claims))
            packet = None if outcome is None else self._settle(k, claims, outcome)
            k += 1

    def _inline(self, k: int, claims: list[Claim]) -> bool:
        """Whether to run this batch on the event loop (service/inline.py)."""
        return self._rule.quick(k, sum(c.stop - c.start for c in claims), self._jobs)

    def _solo(self, rows: int) -> bool:
        """Whether a request just admitted runs stage 0 at once, inside `submit`.

        When it is the only request in flight, nothing waits at stage 0 and the run is
        quick (service/inline.py), queueing it would only cost the stage loop's wake-up and
        the caller's: two event-loop turns, a sizeable share of a one-sample request. Its
        answer (or its survivors' packet for stage 1) is then ready when `submit` returns.
        """
        return not self.stages[0].rows and self._rule.quick(0, rows, self._jobs)

    def _run_now(self, claims: list[Claim]) -> None:
        """Run stage 0 on `claims` here, on the event loop, and settle the batch."""
        try:
            outcome = run_batch(self._runner, 0, claims, self._watch)
        except Exception as exc:  # as a failed executor run: the batch's requests fail
            self.fail(0, claims, exc)
            return
        self.finish(0, claims, outcome)

    def _apply(self, k: int, outcome: Outcome) -> Packet | None:
        """Back on the loop: record, answer finished requests, forward survivors.

        Returns the survivors instead of queueing them when batches are chained (naive).
        """
        watch = self._watch
        busy = outcome.shadows is not None or outcome.evidence is not None
        if watch is not None and (watch.on or busy):  # nothing to do while it is off
            observe(
                watch, self.stages, self._metrics, (self.spec.model, self.spec.version), k, outcome
            )
        if not outcome.jobs:
            return None
        spec = self.spec
        self._metrics.record_batch(
            spec.model,
            spec.version,
            k,
            outcome.size,
            outcome.seconds,
            outcome.waits,
            outcome.input_seconds,
            outcome.output_seconds,
        )
        answered = 0
        for job, count, result in outcome.answered:
            job.rows_done(count, result)
            answered += count
        if answered:  # one record for the batch's exits, not one per request
            used, full = sum(spec.macs[: k + 1]), sum(spec.macs)
            self._metrics.record_exit(spec.model, spec.version, k, used, full, answered)
        if self._trace is not None:
            self._trace(k, [job.id for job in outcome.jobs])
        if outcome.forward is None or spec.chain_batches:
            return outcome.forward
        self.stages[k + 1].put(outcome.forward)
        return None

    def fail(self, k: int, claims: list[Claim], exc: Exception) -> None:
        """Every request with rows in the failed batch gets one clean 500."""
        spec = self.spec
        log.error("%s v%s segment %d failed: %r", spec.model, spec.version, k, exc)
        self._metrics.batch_failures.labels(spec.model, spec.version, str(k)).inc()
        message = (
            f"inference failed in segment {k} of model '{spec.model}' version '{spec.version}'"
        )
        for claim in claims:
            for job, *_ in claim.pieces():
                job.fail(InferenceFailed(message))

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests and wait for those in flight; True if all were answered."""
        self._closing = True
        self._shed()  # nobody will read what queued shadows would show
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Answer whatever is left with NotReady and stop the stage loops."""
        self._closing = self.closed = True
        for stage in self.stages:
            stage.clear()
        for job in list(self._jobs):
            job.fail(NotReady(f"model '{self.spec.model}' was unloaded before answering"))
        tasks = [*self._tasks, *self._chains]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []


def _rows_of(stage: Stage) -> Callable[[], float]:
    """The stage's queue depth, read when the gauge is scraped."""
    return lambda: stage.rows
