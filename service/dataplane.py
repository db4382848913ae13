"""The transport-agnostic data plane: readiness, model lookup, validation and inference.

The HTTP layer parses and serialises; everything below it goes through here. Construction
does no I/O; `start` loads and warms every model, `stop` drains. Records what happens below
the HTTP layer (in-flight requests, batches, exits) into the Metrics passed in.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from models.manifest import Manifest
from service import introspection
from service.errors import (
    BadRequest,
    ClientGone,
    ExitServeError,
    NotFound,
    NotReady,
    RequestTimeout,
)
from service.governor import Governor
from service.inputs import check_input
from service.metrics import Metrics
from service.registry import Loaded, ModelRegistry
from service.scheduler import BatchTrace
from service.sessions import choose_placement
from service.settings import Settings
from service.types import InferenceInput, InferenceResult

log = logging.getLogger(__name__)


class DataPlane:
    """What the HTTP layer calls; one per server process (or per test)."""

    def __init__(
        self, settings: Settings, metrics: Metrics, *, trace: BatchTrace | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._trace = trace
        self._executor: ThreadPoolExecutor | None = None
        self._registry: ModelRegistry | None = None
        self._started = False
        self._draining = False
        self._stopped = False
        self._ids = itertools.count(1)
        self._last_inference: dict[tuple[str, str], int] = {}
        self._inflight: dict[str, int] = {}  # per model; the gauge reads it when scraped

    async def start(self) -> None:
        """Load and warm every model in the repository; then the server is ready."""
        self._executor = ThreadPoolExecutor(
            executor_threads(self.settings), thread_name_prefix="exitserve-stage"
        )
        self._registry = ModelRegistry(self.settings, self.metrics, self._executor, self._trace)
        await self._registry.load_all()
        self._started = True
        log.info("data plane ready: %s", self._registry.names())

    async def stop(self) -> None:
        """Not ready at once; answer what is queued (up to drain_timeout_s); close sessions."""
        self._draining = True
        if self._registry is not None:
            await self._registry.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._stopped = True

    @property
    def live(self) -> bool:
        return not self._stopped

    @property
    def ready(self) -> bool:
        registry = self._registry
        return self._started and not self._draining and registry is not None and registry.serves_any

    def serves(self, name: str) -> bool:
        """Whether model `name` has a loaded version (request metrics label by it)."""
        return self._registry is not None and self._registry.serves(name)

    @property
    def registry(self) -> ModelRegistry:
        if self._registry is None:
            raise NotReady("the server is starting")
        return self._registry

    def model_ready(self, name: str, version: str | None = None) -> bool:
        if not self._started or self._draining or self._registry is None:
            return False
        return name in self._registry.names() and (
            version is None or version in self._registry.versions(name)
        )

    def manifest(self, name: str, version: str | None = None) -> Manifest:
        return self.registry.get(name, version).manifest

    def lookup(self, name: str, version: str | None = None) -> Loaded:
        """The loaded version a request will run on: looked up once, then passed to
        `submit`, so a reload between decoding and queueing cannot switch it."""
        return self.registry.get(name, version)

    def versions(self, name: str) -> list[str]:
        return [] if self._registry is None else self._registry.versions(name)

    def model_names(self) -> list[str]:
        return [] if self._registry is None else self._registry.names()

    def server_metadata(self) -> dict[str, Any]:
        return introspection.server_metadata()

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        manifest = self.manifest(name, version)
        return introspection.model_metadata(manifest, self.versions(name))

    def model_config(self, name: str, version: str | None = None) -> dict[str, Any]:
        loaded = self.registry.get(name, version)
        return introspection.model_config(
            loaded.manifest,
            self.settings.batching_for(name),
            self.settings.max_samples_per_request,
            on_gpu=loaded.runtime.placement.device_type == "cuda",
        )

    def model_stats(self, name: str | None = None, version: str | None = None) -> dict[str, Any]:
        """Triton statistics for one version, every version of a model, or every model."""
        if name is not None:
            manifests = (
                [self.manifest(name, version)]
                if version is not None
                else [self.manifest(name, v) for v in self.versions(name)]
            )
            if not manifests:
                self.manifest(name)  # raises NotFound
        else:
            manifests = [item.manifest for item in self.registry.loaded()]
        stats = [
            introspection.version_stats(
                self.metrics, m, self._last_inference.get((m.name, m.version), 0)
            )
            for m in manifests
        ]
        return {"model_stats": stats}

    async def load_model(self, name: str, version: str | None = None) -> list[str]:
        """(Re)load a model from the repository; the old versions serve until it is warm."""
        if self._draining:
            raise NotReady("the server is shutting down")
        return await self.registry.load(name, version)

    async def unload_model(self, name: str, version: str | None = None) -> None:
        await self.registry.unload(name, version)

    def fidelity(self, name: str, version: str | None = None) -> dict[str, Any]:
        """The fidelity controller's snapshot for one version (docs/fidelity.md)."""
        return self._governor(name, version).snapshot()

    def fidelity_action(self, name: str, version: str | None, action: str) -> dict[str, Any]:
        """An operator's `reset`, `freeze` or `unfreeze`; the snapshot after it."""
        governor = self._governor(name, version)
        if action == "reset":
            return governor.reset()
        if action in ("freeze", "unfreeze"):
            return governor.freeze(action == "freeze")
        raise BadRequest(f"fidelity action '{action[:32]}' must be reset, freeze or unfreeze")

    def _governor(self, name: str, version: str | None) -> Governor:
        loaded = self.registry.get(name, version)
        if loaded.fidelity is None:
            raise NotFound(
                f"model '{name}' version '{loaded.manifest.version}' has no fidelity control: "
                "it has no calibration (or no thresholds) to hold its early exits to"
            )
        return loaded.fidelity

    def repository_index(self) -> list[dict[str, str]]:
        """Triton's repository index: every version on disk, with its state."""
        registry = self.registry
        out = []
        for name, versions in registry.scan().items():
            loaded = set(registry.versions(name))
            for v in versions:
                entry = {
                    "name": name,
                    "version": v,
                    "state": "READY" if v in loaded else "UNAVAILABLE",
                }
                if v not in loaded:
                    entry["reason"] = registry.errors.get((name, v), "unloaded")
                out.append(entry)
        return out

    async def infer(self, request: InferenceInput) -> InferenceResult:
        """Validate, queue at stage 0 and wait (bounded) for every row's answer.

        An answer ready at once (`Pipeline._solo`) still gives the loop one turn, as the
        HTTP path's socket reads do: an in-process caller looping on `infer` must not keep
        the server's other tasks (stage loops, reloads, timeouts) from running.
        """
        future = self.submit(request)
        if future.done():
            await asyncio.sleep(0)
        return await future

    def submit(
        self, request: InferenceInput, loaded: Loaded | None = None
    ) -> asyncio.Future[InferenceResult]:
        """Validate and queue at stage 0; the future holds the answer or the error.

        A future rather than a coroutine, so a caller can wait on it beside other events
        without wrapping it in a task. Timed out by a timer (cheaper than wait_for). It
        may be done already (`Pipeline._solo`); a caller looping on it yields as `infer`
        does.
        """
        if not self._started or self._draining:
            raise NotReady("the server is shutting down" if self._draining else "starting")
        if loaded is None:
            loaded = self.registry.get(request.model, request.version)
        data = check_input(loaded.manifest, request.data, self.settings.max_samples_per_request)
        policy = loaded.policy(request.policy)
        job_id = request.request_id or f"r{next(self._ids)}"
        timeout = self.settings.request_timeout_s
        version, begun = loaded.manifest.version, time.monotonic()
        try:
            watched = loaded.watched(request.policy)
            future = loaded.pipeline.submit(job_id, data, policy, timeout, watched)
        except ExitServeError as exc:  # refused (overloaded, unloading): a failed inference
            self.metrics.record_inference(request.model, version, exc.status_code, 0.0)
            raise
        timer = None  # answered already when it ran at once (Pipeline._solo): no timeout
        if not future.done():
            timer = asyncio.get_running_loop().call_later(timeout, _expire, future, timeout)
        self._count_in(request.model)
        key = (request.model, version)
        future.add_done_callback(lambda f: self._settled(f, timer, key, begun))
        return future

    def _count_in(self, model: str) -> None:
        """One more request of `model` in flight; its gauge series starts on the first."""
        count = self._inflight.get(model)
        if count is None:
            count = 0
            self.metrics.watch_gauge(
                self.metrics.inflight, lambda: self._inflight.get(model, 0), model
            )
        self._inflight[model] = count + 1

    def _settled(
        self,
        future: asyncio.Future[InferenceResult],
        timer: asyncio.TimerHandle | None,
        key: tuple[str, str],
        begun: float,
    ) -> None:
        """Count the request for Triton's success/fail statistics, by its answer's status."""
        if timer is not None:
            timer.cancel()
        self._inflight[key[0]] -= 1
        seconds = time.monotonic() - begun
        if future.cancelled():
            code = ClientGone.status_code
        elif (exc := future.exception()) is not None:
            code = exc.status_code if isinstance(exc, ExitServeError) else 500
        else:
            self._last_inference[key] = int(time.time() * 1000)
            code = 200
        self.metrics.record_inference(*key, code, seconds)


def _expire(future: asyncio.Future[InferenceResult], timeout: float) -> None:
    if not future.done():  # its job sees the future done and skips its remaining rows
        future.set_exception(RequestTimeout(f"request took longer than {timeout:g} s"))


def executor_threads(settings: Settings) -> int:
    """The configured count, or 1 on CPU / 4 on CUDA: measured in docs/benchmarks.md."""
    if settings.executor_threads:
        return settings.executor_threads
    return 4 if choose_placement(settings).device_type == "cuda" else 1
