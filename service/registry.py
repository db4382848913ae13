"""Which model versions are loaded; loading, reloading and unloading them at run time.

A (re)load builds and warms every new version off the event loop first and swaps the
table only when all of them work, so a broken version leaves the old one serving. The
swap is one dict assignment on the event loop, between requests: a request either sees
the old pipeline (which then drains) or the new one. Model and version names come from
the repository's folders and are checked against the manifest's patterns, never taken
as paths from a client. A version with a calibration also gets a fidelity controller
(service/governor.py) that may move its default policy while it serves.
"""

from __future__ import annotations

import asyncio
import logging
import re
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from models.manifest import MANIFEST_FILE, NAME_PATTERN, Manifest, ManifestError, load_manifest
from service.errors import BadRequest, NotFound, NotReady
from service.fidelity import FidelityController
from service.governor import Governor
from service.jobs import ByteBudget, row_state_bytes
from service.metrics import Metrics
from service.pipeline_spec import PipelineSpec
from service.policies import ExitPolicy, resolve_policy
from service.runtime import ModelRuntime
from service.scheduler import BatchTrace, Pipeline
from service.sessions import ProviderError
from service.settings import Settings
from service.shadows import Watch
from service.text import Tokens
from service.types import PolicyOverride
from service.verification import VersionMismatch

log = logging.getLogger(__name__)
VERSION_PATTERN = r"^[0-9]{1,9}$"
_PATH = re.compile(r"(?<![\w.])/(?:[\w.+-]+/)+[\w.+-]*")  # an absolute path in a message
NO_OVERRIDE = PolicyOverride()


class ModelLoadError(BadRequest):
    """A version that cannot be served; the message names the problem, never a path."""


@dataclass
class Loaded:
    """One serving model version."""

    manifest: Manifest
    runtime: ModelRuntime
    pipeline: Pipeline
    default_policy: ExitPolicy  # calibrated at load; the fidelity controller swaps it whole
    fidelity: Governor | None = None

    @property
    def tokens(self) -> Tokens | None:
        """A text model's tokeniser (the protocol layer encodes requests with it)."""
        return self.runtime.tokens

    def policy(self, override: PolicyOverride) -> ExitPolicy:
        """A request's exit policy (BadRequest names a bad override)."""
        if override == NO_OVERRIDE:
            return self.default_policy
        return resolve_policy(self.manifest, override)

    def watched(self, override: PolicyOverride) -> bool:
        """Whether a request's rows are fidelity evidence: it runs the default policy."""
        return self.fidelity is not None and override == NO_OVERRIDE

    def publish(self, policy: ExitPolicy) -> None:
        """Serve `policy` to requests without overrides from now on (event loop)."""
        self.default_policy = policy

    def start(self) -> None:
        self.pipeline.start()
        if self.fidelity is not None:
            self.fidelity.start()


class ModelRegistry:
    """The loaded versions of every model; mutated on the event loop only."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        executor: Executor,
        trace: BatchTrace | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._executor = executor
        self._trace = trace
        self._budget = ByteBudget(settings.max_inflight_bytes)  # one for every version
        self._models: dict[str, dict[str, Loaded]] = {}
        self.errors: dict[tuple[str, str], str] = {}  # last load error per version
        self._changing = asyncio.Lock()  # one load/unload at a time

    def scan(self) -> dict[str, list[str]]:
        """Model name -> versions found on disk (folders holding a manifest)."""
        root = self._settings.model_repository
        found = {p.name: self.scan_one(p.name) for p in sorted(root.iterdir()) if p.is_dir()}
        return {name: versions for name, versions in found.items() if versions}

    def scan_one(self, name: str) -> list[str]:
        """The versions of one model on disk (empty for a name that is not a model)."""
        folder = self._settings.model_repository / name
        if not re.match(NAME_PATTERN, name) or not folder.is_dir():
            return []
        return sorted(
            (
                v.name
                for v in folder.iterdir()
                if re.match(VERSION_PATTERN, v.name) and (v / MANIFEST_FILE).is_file()
            ),
            key=int,
        )

    async def load_all(self) -> None:
        """Load every version on disk; a broken one is logged and left out, not fatal."""
        for name, versions in self.scan().items():
            for version in versions:
                try:
                    await self.load(name, version)
                except ModelLoadError as exc:
                    log.error("not serving: %s", exc.message)

    async def load(self, name: str, version: str | None = None) -> list[str]:
        """(Re)load a model's versions on disk (or one), warm them, then swap them in."""
        _check_name(name, version)
        async with self._changing:
            return await self._load(name, version)

    async def _load(self, name: str, version: str | None) -> list[str]:
        on_disk = self.scan_one(name)
        wanted = on_disk if version is None else [v for v in on_disk if v == version]
        if not wanted:
            what = f"model '{name}'" + ("" if version is None else f" version '{version}'")
            raise ModelLoadError(f"{what} is not in the model repository")
        built: list[Loaded] = []
        try:
            for v in wanted:
                built.append(await asyncio.to_thread(self._build, name, v))
        except ModelLoadError:
            for item in built:
                item.runtime.close()
            raise
        stale = self._swap(name, built, replace_all=version is None)
        await self._retire(stale)
        return wanted

    def _build(self, name: str, version: str) -> Loaded:
        """Blocking: read the manifest, create the sessions, check them against the manifest
        and warm them through every segment (worker thread); ModelLoadError says why not."""
        folder = self._settings.model_repository / name / version
        try:
            manifest = load_manifest(folder)
            if (manifest.name, manifest.version) != (name, version):
                raise ManifestError(f"manifest names {manifest.name}/{manifest.version}")
            batching = self._settings.batching_for(name)
            default = resolve_policy(manifest, NO_OVERRIDE)
            runtime = ModelRuntime(manifest, folder, self._settings)
            runtime.warm_up(sorted({1, batching.max_batch_size, *batching.max_batch_sizes}))
        except Exception as exc:  # corrupt ONNX, missing files, bad manifest, provider
            reason = _reason(exc, folder)
            self.errors[(name, version)] = reason
            log.error("model '%s' version '%s' failed to load: %r", name, version, exc)
            raise ModelLoadError(f"model '{name}' version '{version}': {reason}") from exc
        self.errors.pop((name, version), None)
        spec = PipelineSpec(
            model=name,
            version=version,
            classes=len(manifest.labels),
            macs=tuple(s.macs for s in manifest.segments),
            batching=batching,
            max_queue_samples=self._settings.max_queue_samples,
            row_bytes=row_state_bytes(manifest),
            chain_batches=self._settings.scheduling != "stage",
            inline_max_s=self._settings.inline_max_ms / 1000.0,
        )
        config = self._settings.fidelity_for(name)
        fid = FidelityController.for_manifest(manifest, default, config)
        watch = None if fid is None else Watch(fid)
        pipeline = Pipeline(
            spec, runtime, self._executor, self._metrics, self._trace, self._budget, watch
        )
        loaded = Loaded(manifest, runtime, pipeline, default)
        if watch is not None:
            loaded.fidelity = Governor(watch, loaded.publish, self._metrics)
        return loaded

    def _swap(self, name: str, built: list[Loaded], replace_all: bool) -> list[Loaded]:
        """Put the new versions in service; return the ones they replace."""
        current = dict(self._models.get(name, {}))
        replaced = [b.manifest.version for b in built if b.manifest.version in current]
        stale = list(current.values()) if replace_all else [current[v] for v in replaced]
        table = {} if replace_all else current
        for item in built:
            item.start()
            table[item.manifest.version] = item
            share = item.manifest.calibration.exit_distribution if item.manifest.calibration else []
            exits = item.manifest.num_exits
            self._metrics.model_loaded(name, item.manifest.version, share, exits)
        self._models[name] = table
        for item in stale:
            if item.manifest.version not in table:
                self._metrics.model_unloaded(name, item.manifest.version)
        return stale

    async def unload(self, name: str, version: str | None = None) -> None:
        """Stop serving a model (or one version) after its queued requests are answered."""
        _check_name(name, version)
        async with self._changing:
            await self._unload(name, version)

    async def _unload(self, name: str, version: str | None) -> None:
        table = self._models.get(name, {})
        if not table or (version is not None and version not in table):
            raise self._not_found(name, version)
        gone = list(table.values()) if version is None else [table[version]]
        remaining = {v: item for v, item in table.items() if item not in gone}
        if remaining:
            self._models[name] = remaining
        else:
            self._models.pop(name, None)
        for item in gone:
            self._metrics.model_unloaded(name, item.manifest.version)
        await self._retire(gone)
        self._metrics.forget(name, [item.manifest.version for item in gone])

    async def _retire(self, items: list[Loaded]) -> None:
        """Drain replaced pipelines (bounded), then close them and their sessions."""
        timeout = self._settings.drain_timeout_s
        for item in items:  # first: a replaced version's steps must not meter over the new one
            if item.fidelity is not None:
                await item.fidelity.close()
        await asyncio.gather(*(item.pipeline.drain(timeout) for item in items))
        for item in items:
            await item.pipeline.close()
            item.runtime.close()

    async def close(self) -> None:
        """Drain and close everything (shutdown)."""
        items = [item for table in self._models.values() for item in table.values()]
        self._models.clear()
        await self._retire(items)

    def get(self, name: str, version: str | None = None) -> Loaded:
        """A loaded version; the highest loaded one when `version` is None."""
        table = self._models.get(name)
        if not table or (version is not None and version not in table):
            raise self._not_serving(name, version)
        return table[version] if version is not None else table[max(table, key=int)]

    def names(self) -> list[str]:
        return sorted(self._models)

    @property
    def serves_any(self) -> bool:
        return bool(self._models)

    def serves(self, name: str) -> bool:
        """Whether some version of `name` is loaded (per request: no sorted copy)."""
        return name in self._models

    def versions(self, name: str) -> list[str]:
        return sorted(self._models.get(name, {}), key=int)

    def loaded(self) -> list[Loaded]:
        return [self._models[n][v] for n in self.names() for v in self.versions(n)]

    def _not_found(self, name: str, version: str | None) -> NotFound:
        if name not in self._models or version is None:
            return NotFound(f"model '{name}' is not loaded")
        return NotFound(f"model '{name}' has no version '{version}'")

    def _not_serving(self, name: str, version: str | None) -> NotFound | NotReady:
        """404 for what the repository lacks; 503 (Retry-After) for what it has but does
        not serve (unloaded, or its load failed): a client may retry the second, not the first."""
        what = f"model '{name}'" + ("" if version is None else f" version '{version}'")
        on_disk = self.scan_one(name)
        if not on_disk:
            return NotFound(f"{what} is not in the model repository")
        if version is not None and version not in on_disk:
            return NotFound(f"model '{name}' has no version '{version}'")
        return NotReady(f"{what} is in the model repository but not loaded")


def _check_name(name: str, version: str | None) -> None:
    if not re.match(NAME_PATTERN, name):
        raise BadRequest(f"model name '{name[:64]}' is not a valid model name")
    if version is not None and not re.match(VERSION_PATTERN, version):
        raise BadRequest(f"model version '{version[:16]}' must be a positive integer")


def _reason(exc: Exception, folder: Path) -> str:
    """A client-safe reason: our own checks' message without paths, else the failure's kind."""
    if isinstance(exc, (ManifestError, VersionMismatch, ProviderError)):
        return _PATH.sub("<path>", str(exc).replace(str(folder), "<version>"))
    if exc.__class__.__module__.startswith("onnxruntime"):
        return "a segment is not a valid ONNX model for onnxruntime"
    return f"{type(exc).__name__} while creating sessions"
