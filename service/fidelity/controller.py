"""The fidelity controller of one model version: evidence in, a new policy object out.

It owns everything stateful about fidelity (evidence, sampler, per-exit grid positions,
its log) so that the policy the stages read stays a frozen, pure `ExitPolicy`: `step`
builds a new one and the caller swaps it in with one assignment. Nothing here runs on
the request path except `sampler.choose`, `evidence.count` and `evidence.record`, which
are O(rows) numpy. `step` runs from a periodic task; it is a pure function of the
evidence and `now` (no clock reads), so tests and the offline replay drive it directly.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import deque

from models.manifest import Manifest
from service.fidelity import rules, scale
from service.fidelity.config import FidelityConfig, default_target
from service.fidelity.evidence import EvidenceStore
from service.fidelity.records import (
    SEVERITY,
    Adjustment,
    ControllerState,
    Estimate,
    ExitState,
    ExitStatus,
    Snapshot,
    ThresholdChange,
)
from service.fidelity.sampler import ShadowSampler
from service.fidelity.stats import Curve, curve, z_value
from service.policies import ExitPolicy
from service.types import PolicyKind

log = logging.getLogger(__name__)
LOG_LENGTH = 256  # changes kept in memory; each is also logged


class FidelityController:
    """Moves one version's early-exit thresholds to keep early answers faithful."""

    def __init__(
        self, manifest: Manifest, base: ExitPolicy, config: FidelityConfig, target: float
    ) -> None:
        if base.kind not in scale.THRESHOLD_POLICIES:
            raise ValueError(f"policy {base.kind!r} has no thresholds to control")
        self.model, self.version = manifest.name, manifest.version
        self.base, self.policy = base, base
        self.config, self.target = config, target
        self._kind: PolicyKind = base.kind
        self._z = z_value(config.confidence)
        self._z_raise = z_value(config.raise_confidence)
        early = manifest.num_exits - 1
        grids = [self._grid(base.thresholds[k], len(manifest.labels)) for k in range(early)]
        self._grids = [g for g, _ in grids]
        self._calibrated = [i for _, i in grids]
        self._index = list(self._calibrated)
        self.evidence = EvidenceStore(
            early, config.window, config.horizon_samples, config.horizon_s
        )
        self.sampler = ShadowSampler(
            config.min_shadow_fraction, config.max_shadow_fraction, config.seed
        )
        self.log: deque[ThresholdChange] = deque(maxlen=LOG_LENGTH)
        self.enabled = config.enabled
        self.frozen = config.frozen
        self._boost = 0  # a fresh controller shadows at the maximum until its evidence suffices
        self._curves: list[Curve] = []
        self._stepped_at, self._stepped_seen = -math.inf, 0
        if not self.enabled:
            self.sampler.fraction = 0.0

    @classmethod
    def for_manifest(
        cls, manifest: Manifest, base: ExitPolicy, config: FidelityConfig
    ) -> FidelityController | None:
        """A controller for the version's default policy, or None when there is nothing to
        hold it to (no calibration and no explicit target) or no threshold to move."""
        target = config.target
        if target is None and manifest.calibration is not None:
            target = default_target(manifest.calibration)
        if target is None or base.kind not in scale.THRESHOLD_POLICIES or manifest.num_exits < 2:
            return None
        return cls(manifest, base, config, target)

    def _grid(self, threshold: float, classes: int) -> tuple[scale.FloatArray, int]:
        calibrated = scale.from_policy(self._kind, threshold)
        return scale.grid(self._kind, classes, calibrated, self.config.allow_below_calibrated)

    # -- the periodic step -------------------------------------------------------------

    def due(self, now: float) -> bool:
        """Whether a step is due: `interval_s` passed or `step_samples` rows were served
        since the last one, a quarter of that while the sampler is above its minimum (a
        load, an alarm, a change: decisions come one exit per step, and evidence comes
        fast). O(1), so the scheduler may ask after every batch."""
        cfg = self.config
        waited = now - self._stepped_at >= cfg.interval_s
        steady = self.sampler.fraction <= self.sampler.low
        every = cfg.step_samples if steady else max(cfg.step_samples // 4, 1)
        return waited or self.evidence.seen - self._stepped_seen >= every

    def step(self, now: float) -> Adjustment | None:
        """Re-estimate every exit, move thresholds that must move; None when none did."""
        self._stepped_at, self._stepped_seen = now, self.evidence.seen
        if not self.enabled:
            return None
        self._curves = [self._curve(k, now) for k in range(len(self._grids))]
        changes = [] if self.frozen else self._moves(now)
        self.sampler.update(self._alarm(bool(changes)))
        if not changes:
            return None
        self.policy = self._policy()
        return Adjustment(self.policy, tuple(changes))

    def _curve(self, k: int, now: float) -> Curve:
        seen = self.evidence.recent(k, now)
        grid = self._grids[k]
        return curve(seen.score, seen.agree, seen.weight, grid, self._z, self._z_raise)

    def _bars(self, k: int) -> rules.Bars:
        cfg = self.config
        floor = 0 if cfg.allow_below_calibrated else self._calibrated[k]
        return rules.Bars(self.target, cfg.hysteresis, cfg.min_samples, cfg.max_step, floor)

    def _moves(self, now: float) -> list[ThresholdChange]:
        changes = []
        for k, curve_k in enumerate(self._curves):
            move = rules.decide(curve_k, self._index[k], self._bars(k))
            if move is not None:
                changes.append(self._change(k, move, now))
                self._index[k] = move.index
        return changes

    def _change(self, k: int, move: rules.Move, now: float) -> ThresholdChange:
        curve_k, old = self._curves[k], self._index[k]
        after = None if move.index >= rules.disabled(curve_k) else self._estimate(k, move.index)
        change = ThresholdChange(
            model=self.model,
            version=self.version,
            exit=k,
            old=self._threshold(k, old),
            new=self._threshold(k, move.index),
            reason=move.reason,
            target=self.target,
            before=self._estimate(k, old),
            after=after,
            at_s=now,
            at_sample=self.evidence.seen,
        )
        self.log.append(change)
        log.info(
            "fidelity %s v%s exit %d: threshold %g -> %g (%s; target %.4f; evidence before: "
            "%s; after: %s)",
            *_fields(change),
            change.target,
            change.before.summary(),
            "exit switched off" if change.after is None else change.after.summary(),
        )
        return change

    def _alarm(self, changed: bool) -> bool:
        """Whether the sampler should shadow at its maximum until the next step.

        After a change (for `boost_steps` steps, to confirm it, and to judge the later
        exits, whose traffic it changed); while the answers being given have too little
        evidence to judge or clearly disagree; and while an exit above its floor might
        come back down, since only evidence brings it back.
        """
        self._boost = self.config.boost_steps if changed else max(self._boost - 1, 0)
        if self._boost > 0 or any(self._may_recover(k) for k in range(len(self._curves))):
            return True
        # at the raise level: the alarm repeats every step on overlapping evidence, and a
        # false one costs a burst of shadows and the evidence (see _restart)
        pooled = rules.pooled(self._curves, self._index, self._z_raise)
        if pooled is None:
            return False  # no early answers at all: no shadow to run
        n_eff, upper = pooled
        if upper < self.target and self.sampler.fraction < self.sampler.high:
            self._restart()
        return n_eff < self.config.alarm_samples or upper < self.target

    def _restart(self) -> None:
        """Disagreement seen at a low fraction: start the evidence over, at the maximum.

        Comparisons shadowed at the steady fraction weigh 1/fraction each; kept, the few
        from before a shift outweigh the many that follow at the maximum and hold every
        decision back until they age out of the horizon (thousands of samples). A false
        alarm costs one burst of shadows; decisions then rest on the fresh evidence alone."""
        log.info(
            "fidelity %s v%s: disagreement at shadow fraction %g; evidence restarted",
            self.model,
            self.version,
            self.sampler.fraction,
        )
        self.evidence.clear()

    def _may_recover(self, k: int) -> bool:
        """Exit k sits above its floor and the evidence there is not clearly bad."""
        floor = self._bars(k).floor
        if self._index[k] <= floor:
            return False
        return bool(self._curves[k].upper[floor] >= self.target + self.config.hysteresis)

    def _policy(self) -> ExitPolicy:
        thresholds = list(self.base.thresholds)
        for k in range(len(self._grids)):
            thresholds[k] = scale.to_policy(self._kind, self._surety(k, self._index[k]))
        return dataclasses.replace(self.base, thresholds=tuple(thresholds))

    # -- operator actions --------------------------------------------------------------

    def freeze(self) -> None:
        """Keep the current thresholds; evidence and estimates still update."""
        self.frozen = True

    def unfreeze(self) -> None:
        self.frozen = False

    def reset(self, now: float) -> Adjustment:
        """Back to the calibrated thresholds, forgetting the evidence (the operator says the
        traffic changed); the sampler starts over at its maximum as after a load."""
        self._curves = [self._curve(k, now) for k in range(len(self._grids))]  # for the log
        changes = [
            self._change(k, rules.Move(calibrated, "reset to calibrated by the operator"), now)
            for k, calibrated in enumerate(self._calibrated)
            if self._index[k] != calibrated
        ]
        self._index = list(self._calibrated)
        self.evidence.clear()
        self._curves = []
        self._boost = self.config.boost_steps
        if self.enabled:
            self.sampler.reset()
        self.policy = self.base
        return Adjustment(self.policy, tuple(changes))

    def set_enabled(self, enabled: bool, now: float) -> Adjustment | None:
        """Switch control on or off; off serves the calibrated policy and runs no shadows."""
        self.enabled = enabled
        if enabled:
            self.sampler.reset()
            return None
        adjustment = self.reset(now)
        self.sampler.fraction = 0.0
        return adjustment

    # -- reading -------------------------------------------------------------------------

    def snapshot(self, now: float) -> Snapshot:
        """States, thresholds and estimates as of the last step (or fresh if none ran)."""
        if len(self._curves) != len(self._grids):
            self._curves = [self._curve(k, now) for k in range(len(self._grids))]
        exits = tuple(self._status(k) for k in range(len(self._grids)))
        return Snapshot(
            self._state(exits),
            self.target,
            self.sampler.fraction,
            self.evidence.seen,
            exits,
        )

    def _state(self, exits: tuple[ExitStatus, ...]) -> ControllerState:
        if not self.enabled:
            return "off"
        if self.frozen:
            return "frozen"
        worst: ExitState = max((e.state for e in exits), key=SEVERITY.__getitem__, default="steady")
        return worst

    def _status(self, k: int) -> ExitStatus:
        index, calibrated = self._index[k], self._calibrated[k]
        estimate = self._estimate(k, index)
        state: ExitState = "steady"
        if index >= rules.disabled(self._curves[k]):
            state = "disabled-exit"
        elif index > calibrated:
            state = "tightened"
        elif estimate.n_eff < self.config.alarm_samples:
            state = "warming"  # the sampler's own bar: it shadows at its maximum meanwhile
        return ExitStatus(k, state, estimate.threshold, self._threshold(k, calibrated), estimate)

    def _estimate(self, k: int, index: int) -> Estimate:
        """The agreement at an index; for a switched-off exit, at its calibrated threshold
        (what switching it back on as calibrated would give)."""
        curve_k = self._curves[k]
        i = index if index < rules.disabled(curve_k) else self._calibrated[k]
        p = curve_k.agreement[i]
        return Estimate(
            threshold=self._threshold(k, index),
            count=int(curve_k.count[i]),
            n_eff=float(curve_k.n_eff[i]),
            agreement=None if math.isnan(p) else float(p),
            lower=float(curve_k.lower[i]),
            upper=float(curve_k.upper[i]),
        )

    def _surety(self, k: int, index: int) -> float:
        grid = self._grids[k]
        return math.inf if index >= len(grid) else float(grid[index])

    def _threshold(self, k: int, index: int) -> float:
        return scale.to_policy(self._kind, self._surety(k, index))


def _fields(change: ThresholdChange) -> tuple[str, str, int, float, float, str]:
    return change.model, change.version, change.exit, change.old, change.new, change.reason
