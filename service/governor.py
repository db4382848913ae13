"""The fidelity controller's steps for one model version, off the request path.

One task per loaded version sleeps until `interval_s` has passed or the scheduler says a
step is due (`step_samples` rows served), then steps the controller; a new policy goes
into the version with one assignment (`publish`), so a request reads either the old
policy object or the new one, never a mix. Operator actions (reset, freeze) come through
here too, so that swapping and metering stay in one place. The controller logs every
threshold change itself (old, new, why, evidence).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from service.fidelity import Adjustment, FidelityController, ThresholdChange
from service.metrics import Metrics
from service.policies import ExitPolicy
from service.shadows import Watch

log = logging.getLogger(__name__)
RECENT_CHANGES = 20  # shown by the fidelity endpoint; the controller keeps more


class Governor:
    """Runs and exposes one version's `FidelityController`."""

    def __init__(
        self, watch: Watch, publish: Callable[[ExitPolicy], None], metrics: Metrics
    ) -> None:
        self.fid: FidelityController = watch.fid
        self._publish = publish
        self._metrics = metrics
        self._due: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        watch.wake = self.wake

    def start(self) -> None:
        """Start stepping (event loop) and publish the controller's series."""
        self._due = asyncio.Event()
        fid = self.fid
        self._task = asyncio.create_task(self._loop(), name=f"{fid.model}-v{fid.version}-fidelity")
        self._metrics.fidelity_started(fid.model, fid.version, fid.snapshot(time.monotonic()))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """A step is due before the interval ends (called by the scheduler, O(1))."""
        if self._due is not None:
            self._due.set()

    async def _loop(self) -> None:
        assert self._due is not None
        while True:
            # asyncio.timeout, not wait_for: a wait_for cancelled here on 3.11 could leave
            # the task "cancelling" for good, and unload/shutdown waited on it.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.fid.config.interval_s):
                    await self._due.wait()
            self._due.clear()
            now = time.monotonic()
            if self.fid.due(now):
                self.step(now)

    def step(self, now: float) -> Adjustment | None:
        """One controller step; a failure is logged and the next step tries again."""
        try:
            adjustment = self.fid.step(now)
        except Exception:  # the serving policy stays as it is; never kill the loop
            log.exception("fidelity step of %s v%s failed", self.fid.model, self.fid.version)
            return None
        self._apply(adjustment, now)
        return adjustment

    def _apply(self, adjustment: Adjustment | None, now: float) -> None:
        changed: list[int] = []
        if adjustment is not None:
            self._publish(adjustment.policy)  # the one assignment the stages see
            changed = [change.exit for change in adjustment.changes]
        fid = self.fid
        self._metrics.record_fidelity(fid.model, fid.version, fid.snapshot(now), changed)

    # -- operator actions (admin API) ----------------------------------------------------

    def reset(self) -> dict[str, Any]:
        """Back to the calibrated thresholds, evidence forgotten."""
        now = time.monotonic()
        log.info("fidelity %s v%s: reset by the operator", self.fid.model, self.fid.version)
        self._apply(self.fid.reset(now), now)
        return self.snapshot()

    def freeze(self, frozen: bool) -> dict[str, Any]:
        """Keep (or stop keeping) the current thresholds; evidence still accumulates."""
        if frozen:
            self.fid.freeze()
        else:
            self.fid.unfreeze()
        what = "frozen" if frozen else "unfrozen"
        log.info("fidelity %s v%s: %s by the operator", self.fid.model, self.fid.version, what)
        self._apply(None, time.monotonic())
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        """The controller at a glance, with its latest threshold changes."""
        fid = self.fid
        out = fid.snapshot(time.monotonic()).as_dict()
        changes = list(fid.log)[-RECENT_CHANGES:]
        return {"model": fid.model, "version": fid.version, **out, "changes": changes_of(changes)}


def changes_of(changes: list[ThresholdChange]) -> list[dict[str, Any]]:
    """Log entries as JSON-ready dicts (the monotonic time means nothing to a client)."""
    out = []
    for change in changes:
        entry = change.as_dict()
        entry.pop("at_s", None)
        out.append(entry)
    return out
