"""The fidelity controller's metric families and how they are recorded (docs/fidelity.md).

A part of `service.metrics.Metrics` (a base class, so the families are attributes of the
one Metrics object: exported, read back and forgotten with every other series), kept in
its own module for size. Labels: model, version, and `exit`, the early exit that answered.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge

from service.fidelity import Snapshot
from service.fidelity.records import ControllerState

STATES: tuple[str, ...] = get_args(ControllerState)


class FidelityMetrics:
    """Shadow samples run and shed, agreement counter pairs, thresholds, state, changes."""

    def child(self, metric: Any, *labels: str) -> Any:  # Metrics' cached `labels`
        raise NotImplementedError

    def _fidelity_families(self, registry: CollectorRegistry, mve: list[str]) -> None:
        """Fidelity control (docs/fidelity.md); `exit` = the early exit that answered."""
        self.shadow_run = Counter(
            "exitserve_shadow_samples", "Early answers sent on as shadows", mve, registry=registry
        )
        self.shadow_shed = Counter(
            "exitserve_shadow_shed", "Shadows dropped under load", mve, registry=registry
        )
        self.compared = Counter(
            "exitserve_fidelity_compared",
            "Shadowed early answers compared with the last exit's answer",
            mve,
            registry=registry,
        )
        self.agreed = Counter(
            "exitserve_fidelity_agreed", "... equal to its answer", mve, registry=registry
        )
        self.threshold = Gauge(
            "exitserve_fidelity_threshold", "Threshold served (+Inf: off)", mve, registry=registry
        )
        self.threshold_changes = Counter(
            "exitserve_fidelity_threshold_changes", "Threshold changes", mve, registry=registry
        )
        mv = mve[:2]
        self.target = Gauge(
            "exitserve_fidelity_target", "Agreement each exit must keep", mv, registry=registry
        )
        self.shadow_fraction = Gauge(
            "exitserve_fidelity_shadow_fraction", "Share shadowed", mv, registry=registry
        )
        self.fidelity_state = Gauge(
            "exitserve_fidelity_state",
            "1 for the controller's current state",
            [*mv, "state"],
            registry=registry,
        )

    def record_shadows(self, model: str, version: str, exit_: int, run: int, shed: int) -> None:
        """Early answers at `exit_` that went on as shadows, or were picked but shed."""
        if run:
            self.child(self.shadow_run, model, version, str(exit_)).inc(run)
        if shed:
            self.child(self.shadow_shed, model, version, str(exit_)).inc(shed)

    def record_shed(self, model: str, version: str, per_exit: Sequence[int]) -> None:
        """Queued shadows dropped, counted by the exit that answered them early."""
        for k, count in enumerate(per_exit):
            if count:
                self.child(self.shadow_shed, model, version, str(k)).inc(int(count))

    def record_agreement(
        self, model: str, version: str, per_exit: Sequence[tuple[int, int]]
    ) -> None:
        """(compared, agreed) per early exit from one batch of evidence."""
        for k, (compared, agreed) in enumerate(per_exit):
            if compared:
                self.child(self.compared, model, version, str(k)).inc(compared)
                self.child(self.agreed, model, version, str(k)).inc(agreed)

    def fidelity_started(self, model: str, version: str, snap: Snapshot) -> None:
        """A controller's series, its counters at 0 so that rates exist from the start."""
        for status in snap.exits:
            for family in (self.shadow_run, self.shadow_shed, self.compared, self.agreed):
                self.child(family, model, version, str(status.exit))
            self.child(self.threshold_changes, model, version, str(status.exit))
        self.record_fidelity(model, version, snap)

    def record_fidelity(
        self, model: str, version: str, snap: Snapshot, changed: Iterable[int] = ()
    ) -> None:
        """The controller after a step: thresholds (+Inf: exit off), state, target, fraction.

        Thresholds are shown as the policy uses them; entropy's "never" (-inf) shows as +Inf
        too, so that +Inf always means switched off. `changed`: exits whose threshold moved.
        """
        for status in snap.exits:
            t = status.threshold
            value = t if math.isfinite(t) else math.inf
            self.child(self.threshold, model, version, str(status.exit)).set(value)
        for k in changed:
            self.child(self.threshold_changes, model, version, str(k)).inc()
        for state in STATES:
            self.child(self.fidelity_state, model, version, state).set(state == snap.state)
        self.child(self.target, model, version).set(snap.target)
        self.child(self.shadow_fraction, model, version).set(snap.shadow_fraction)
