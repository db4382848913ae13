"""The quality gate: whether a calibrated model may be published, and what to say if not.

A build that trains too briefly, or calibrates on too few samples, still produces files
that load and serve; only its figures show that it is broken. These checks read those
figures so that a user never has to, and each failure names the figure, the bar and the
option that fixes it. Refusals block publishing unless forced; warnings only speak up.

The rules:

* **Above the baseline.** The baseline is the better of chance (1/K) and always answering
  the training set's most frequent class (scored on the test set). The final exit must fix
  at least MIN_SKILL of the baseline's errors — accuracy >= b + MIN_SKILL·(1 − b) — and show
  it with 99% confidence: the one-sided Wilson lower bound of its test accuracy (z = 2.326,
  the binomial score interval) must clear that bar. Significance alone would pass a
  10-class model at 24% on 360 test samples; the margin is what "clearly above" means.
* **A validation split that can resolve the tolerance.** Calibration accepts a setting
  when its drop plus SAFETY_Z standard errors fits the tolerance, but a split whose own
  binomial standard error, sqrt(a(1 − a)/n), exceeds the tolerance cannot tell a 0.5 pp drop
  from noise (a policy calibrated on 144 samples lost 1.94 pp on test). So n must be at
  least SAFETY_Z² · a(1 − a) / tolerance², with a the reference exit's validation accuracy
  (Agresti–Coull centre, so 100% does not make any n enough).
* **A feasible calibration.** Some threshold setting must hold the tolerance on validation.
* Warnings: the tolerance not held on the test set; an early exit more accurate than the
  final one (then `--reference best` calibrates against it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from models.calibrate import SAFETY_Z
from models.data import IntArray

MIN_SKILL = 0.5
CONFIDENCE_Z = 2.326  # one-sided 99%


class QualityError(RuntimeError):
    """The gate refused to publish; the message lists every failed check.

    `figures` are the report's headline lines, so a refused build still shows what it got.
    """

    def __init__(self, message: str, figures: list[str]) -> None:
        super().__init__(message)
        self.figures = figures


@dataclass(frozen=True)
class Figures:
    """What the gate looks at, all measured after calibration."""

    test_accuracy_per_exit: list[float]
    val_accuracy_per_exit: list[float]
    test_samples: int
    val_samples: int
    baseline: float
    tolerance_pp: float
    reference: int  # exit index the tolerance is measured from
    test_drop_pp: float  # default policy, test set, below the reference exit
    feasible: bool
    reference_option: str = "final"


@dataclass(frozen=True)
class Verdict:
    """Failed checks: `refusals` block publishing unless forced, `warnings` do not."""

    refusals: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def baseline_accuracy(train_y: IntArray, test_y: IntArray, classes: int) -> float:
    """The better of chance and always answering the training set's majority class."""
    majority = int(np.bincount(train_y, minlength=classes).argmax())
    return max(1.0 / classes, float(np.mean(test_y == majority)))


def wilson_lower(accuracy: float, n: int, z: float = CONFIDENCE_Z) -> float:
    """One-sided lower bound of a binomial proportion (Wilson score interval)."""
    if n <= 0:
        return 0.0
    centre = accuracy + z * z / (2 * n)
    spread = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def required_val_samples(accuracy: float, n: int, tolerance_pp: float) -> int:
    """Validation samples for SAFETY_Z binomial standard errors to fit in the tolerance."""
    centre = (accuracy * n + SAFETY_Z**2 / 2) / (n + SAFETY_Z**2)
    return math.ceil(SAFETY_Z**2 * centre * (1 - centre) / (tolerance_pp / 100) ** 2)


def judge(f: Figures) -> Verdict:
    """Every check on `f`; empty lists mean the model may be published as it is."""
    refusals = [r for r in (_quality(f), _val_size(f), _feasible(f)) if r]
    warnings = [w for w in (_held_on_test(f), _better_early_exit(f)) if w]
    return Verdict(refusals, warnings)


def _quality(f: Figures) -> str | None:
    final = f.test_accuracy_per_exit[-1]
    bar = f.baseline + MIN_SKILL * (1 - f.baseline)
    if wilson_lower(final, f.test_samples) >= bar:
        return None
    return (
        f"final exit {100 * final:.1f}% accurate on {f.test_samples} test samples, not clearly "
        f"above the baseline {100 * f.baseline:.1f}% (chance or the majority class): it must "
        f"reach {100 * bar:.1f}% with 99% confidence; train longer (--epochs) or on more data"
    )


def _val_size(f: Figures) -> str | None:
    if f.tolerance_pp <= 0:
        return None
    accuracy = f.val_accuracy_per_exit[f.reference]
    needed = required_val_samples(accuracy, f.val_samples, f.tolerance_pp)
    if f.val_samples >= needed:
        return None
    resolvable = math.ceil(10 * f.tolerance_pp * math.sqrt(needed / f.val_samples)) / 10
    return (
        f"the validation split holds {f.val_samples} samples; a {f.tolerance_pp:g} pp tolerance "
        f"at {100 * accuracy:.1f}% accuracy needs {needed} (one binomial standard error within "
        f"the tolerance): use --val-samples {needed} or more, or --tolerance {resolvable:g}"
    )


def _feasible(f: Figures) -> str | None:
    if f.feasible:
        return None
    return (
        f"no threshold setting keeps validation accuracy within {f.tolerance_pp:g} pp of exit "
        f"{f.reference + 1} after the safety margin: raise --tolerance"
    )


def _held_on_test(f: Figures) -> str | None:
    if f.test_drop_pp <= f.tolerance_pp:
        return None
    return (
        f"on the test set the calibrated policy is {f.test_drop_pp:.2f} pp below exit "
        f"{f.reference + 1}, beyond the {f.tolerance_pp:g} pp tolerance"
    )


def _better_early_exit(f: Figures) -> str | None:
    test, final = f.test_accuracy_per_exit, len(f.test_accuracy_per_exit) - 1
    best = max(range(final), key=lambda k: (test[k], k), default=final)
    if test[best] <= test[final] or f.reference_option == "best":
        return None
    val = f.val_accuracy_per_exit
    return (
        f"exit {best + 1} is more accurate than the final exit on test ({100 * test[best]:.2f}% "
        f"vs {100 * test[final]:.2f}%; validation {100 * val[best]:.2f}% vs "
        f"{100 * val[final]:.2f}%): --reference best calibrates against the most accurate exit"
    )
