"""What the controller reports: threshold changes (its log), per-exit status, snapshots.

Plain frozen dataclasses in the policy's own units (entropy <= t), so the metrics, the
stats endpoint and the log can show them without knowing the controller's surety scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from service.policies import ExitPolicy

ExitState = Literal["warming", "steady", "tightened", "disabled-exit"]
ControllerState = Literal["warming", "steady", "tightened", "disabled-exit", "frozen", "off"]
# the worst exit names the controller's state
SEVERITY: dict[ExitState, int] = {"steady": 0, "warming": 1, "tightened": 2, "disabled-exit": 3}


@dataclass(frozen=True)
class Estimate:
    """The agreement among comparisons at or above one threshold."""

    threshold: float  # policy units; +inf/-inf = exit switched off
    count: int  # comparisons
    n_eff: float  # effective sample size of their weights
    agreement: float | None  # None without comparisons
    lower: float
    upper: float

    def summary(self) -> str:
        """For the log: the estimate, its bounds and what it rests on."""
        agreement = "n/a" if self.agreement is None else f"{self.agreement:.4f}"
        return (
            f"agreement {agreement} in [{self.lower:.4f}, {self.upper:.4f}] from "
            f"{self.count} comparisons (n_eff {self.n_eff:.1f})"
        )


@dataclass(frozen=True)
class ThresholdChange:
    """One entry of the controller's log: a threshold moved, why, and on what evidence."""

    model: str
    version: str
    exit: int
    old: float
    new: float
    reason: str
    target: float
    before: Estimate  # the evidence at the old threshold
    after: Estimate | None  # ... and at the new one (None when the exit was switched off)
    at_s: float  # monotonic clock
    at_sample: int  # the version's sample clock

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Adjustment:
    """A step's outcome: the policy to swap in, and the changes that made it."""

    policy: ExitPolicy
    changes: tuple[ThresholdChange, ...]


@dataclass(frozen=True)
class ExitStatus:
    """One early exit as the stats endpoint and the gauges show it."""

    exit: int
    state: ExitState
    threshold: float
    calibrated: float
    estimate: Estimate


@dataclass(frozen=True)
class Snapshot:
    """The controller at a glance."""

    state: ControllerState
    target: float
    shadow_fraction: float
    samples_seen: int
    exits: tuple[ExitStatus, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
