"""The fidelity controller's settings (`Settings.fidelity` and `Settings.model_fidelity`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.manifest import Calibration


class FidelityConfig(BaseModel):
    """Shadow sampling and threshold control for one model version (docs: issue 11)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        True,
        description="run the controller for every model with a calibration; off = the "
        "calibrated thresholds are served as they are and no shadows run",
    )
    frozen: bool = Field(
        False,
        description="start frozen: shadows run and estimates update (stats, metrics), but "
        "the calibrated thresholds are kept until an operator unfreezes (admin API)",
    )
    target: float | None = Field(
        None,
        gt=0.5,
        le=1.0,
        description="least share of early answers (per exit) that must equal the last exit's; "
        "None = 2*final_exit_accuracy - 1 - tolerance_pp/100 from the manifest's calibration, "
        "the agreement the calibrated accuracy itself implies",
    )
    min_shadow_fraction: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="share of early answers sent on to the last exit when steady; bounds the "
        "shadow cost on familiar traffic (a shadow from the first exit of `mnist` costs "
        "about 4 early answers, so 1% costs about 4% of the compute)",
    )
    max_shadow_fraction: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="share shadowed after a load, a threshold change or rising disagreement",
    )
    window: int = Field(
        4096,
        ge=64,
        le=1 << 20,
        description="most comparisons kept per exit (ring buffer: memory is bounded)",
    )
    horizon_samples: int = Field(
        2500,
        ge=100,
        description="comparisons older than this many samples of traffic are forgotten, so "
        "the estimates follow the traffic when it changes",
    )
    horizon_s: float = Field(
        600.0, gt=0, description="comparisons older than this many seconds are forgotten"
    )
    min_samples: int = Field(
        30,
        ge=5,
        description="least effective number of comparisons behind any decision about a threshold",
    )
    alarm_samples: int = Field(
        5,
        ge=1,
        description="least effective number of comparisons on the early answers being given; "
        "with fewer, the sampler shadows at max_shadow_fraction. Lower than min_samples: "
        "spotting disagreement takes fewer comparisons than certifying a threshold, and "
        "the steady fraction must not keep min_samples within the horizon by itself",
    )
    confidence: float = Field(
        0.95,
        gt=0.5,
        lt=1.0,
        description="one-sided level of the Wilson bounds behind every decision",
    )
    raise_confidence: float = Field(
        0.9999,
        gt=0.5,
        lt=1.0,
        description="one-sided level of the bound that must fall below target before a "
        "threshold is raised: the check repeats at every step on overlapping evidence, so "
        "at `confidence` alone clean traffic would trip it now and then (a false raise "
        "costs savings and a burst of shadows); a real shift clears it within a few dozen "
        "comparisons",
    )
    hysteresis: float = Field(
        0.005,
        ge=0.0,
        lt=0.5,
        description="a threshold is lowered only where the lower bound clears target + this",
    )
    max_step: int = Field(
        10,
        ge=1,
        description="most grid points a threshold moves down per step (raises are not bounded: "
        "fidelity first)",
    )
    allow_below_calibrated: bool = Field(
        False,
        description="let a threshold go below its calibrated value when the evidence allows",
    )
    interval_s: float = Field(
        1.0,
        gt=0,
        le=3600,
        description="most seconds between controller steps (off the request path)",
    )
    step_samples: int = Field(
        500,
        ge=1,
        description="a step is also due after this many samples of traffic (a quarter of "
        "it while the shadow fraction is above its minimum), so that busy models react and "
        "recover within a bounded number of samples, not seconds",
    )
    boost_steps: int = Field(
        3,
        ge=0,
        description="steps at max_shadow_fraction after a threshold change, to confirm it",
    )
    seed: int = Field(0, description="seed of the shadow sampler's random choices")
    shadow_delay_ms: float = Field(
        100.0,
        ge=0.0,
        le=10_000.0,
        description="a stage runs shadows alone (no request row waiting) only once they fill "
        "a batch or the oldest has waited this long: batches of one shadow cost nearly what "
        "full ones do, and only the controller waits for shadows",
    )
    shed_above: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="shadows are dropped (and counted as shed) while any stage queue of the "
        "version holds more than this share of max_queue_samples, or the bytes in flight "
        "exceed this share of max_inflight_bytes: requests always come first",
    )

    @model_validator(mode="after")
    def _ordered(self) -> FidelityConfig:
        if self.min_shadow_fraction > self.max_shadow_fraction:
            raise ValueError("min_shadow_fraction must not exceed max_shadow_fraction")
        if self.raise_confidence < self.confidence:
            raise ValueError("raise_confidence must not be below confidence")
        return self


def default_target(calibration: Calibration) -> float:
    """The agreement the calibration implies: 2 * final accuracy - 1 - tolerance.

    Two answers right with chances a and b agree at least a + b - 1 of the time (both
    right), and calibration promised early accuracy >= final - tolerance. Agreement below
    this is therefore proof that the validated accuracy does not hold on this traffic,
    which is exactly when thresholds must rise; clean traffic sits comfortably above it.
    """
    final = calibration.final_exit_accuracy
    return min(1.0, max(0.51, 2.0 * final - 1.0 - calibration.tolerance_pp / 100.0))
