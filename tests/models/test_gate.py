"""Issue 15, item 1 and 5: the quality gate's rules, and its refusals through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from models.calibrate import best_exit
from models.gate import Figures, judge, required_val_samples, wilson_lower
from tests.models.digits import TINY, error_line, invoke, leftovers
from tests.models.digits import digits_npz_fixture as digits_npz_fixture

GOOD = Figures(
    test_accuracy_per_exit=[0.90, 0.95, 0.97],
    val_accuracy_per_exit=[0.90, 0.95, 0.97],
    test_samples=360,
    val_samples=2000,
    baseline=0.1,
    tolerance_pp=0.5,
    reference=2,
    test_drop_pp=0.3,
    feasible=True,
)


def _with(**changes: object) -> Figures:
    return Figures(**{**GOOD.__dict__, **changes})  # type: ignore[arg-type]


def test_a_good_model_passes_every_check() -> None:
    verdict = judge(GOOD)
    assert verdict.refusals == []
    assert verdict.warnings == []


def test_wilson_lower_bound_matches_the_textbook_value() -> None:
    # 50 of 100, z = 1.96: the Wilson interval is (0.404, 0.596)
    assert wilson_lower(0.5, 100, z=1.96) == pytest.approx(0.4038, abs=1e-4)
    assert wilson_lower(1.0, 10) < 1.0


@pytest.mark.parametrize(
    ("final", "baseline", "refused"),
    [
        (0.239, 0.1, True),  # the blenet on digits: significant, but not "clearly"
        (0.306, 0.34, True),  # below the majority class
        (0.529, 0.1, True),
        (0.62, 0.1, False),  # 10 classes: the bar is 55% with 99% confidence
        (0.80, 0.5, True),  # balanced two classes: the bar is 75%, 80% on 360 is not sure
        (0.85, 0.5, False),
    ],
)
def test_final_exit_must_be_clearly_above_the_baseline(
    final: float, baseline: float, refused: bool
) -> None:
    accuracies = [final - 0.01, final - 0.005, final]
    figures = _with(
        test_accuracy_per_exit=accuracies,
        val_accuracy_per_exit=accuracies,
        baseline=baseline,
        val_samples=100_000,  # only the baseline check is under test
    )
    verdict = judge(figures)
    assert bool(verdict.refusals) == refused
    if refused:
        assert f"final exit {100 * final:.1f}% accurate on 360 test samples" in verdict.refusals[0]


def test_validation_split_must_resolve_the_tolerance() -> None:
    # one binomial standard error sqrt(a(1 - a)/n) <= 0.5 pp  =>  n >= a(1 - a) / 0.005²,
    # with a = 97% on 144 samples pulled towards 1/2 (Agresti-Coull: +0.5 hits, +1 sample)
    a = (0.97 * 144 + 0.5) / 145
    needed = required_val_samples(0.97, 144, 0.5)
    assert needed == math.ceil(a * (1 - a) / 0.005**2)
    verdict = judge(_with(val_samples=144))
    assert len(verdict.refusals) == 1
    message = verdict.refusals[0]
    assert f"needs {needed}" in message
    assert f"--val-samples {needed}" in message
    suggested = float(message.rsplit("--tolerance ", 1)[1])
    assert required_val_samples(0.97, 144, suggested) <= 144  # the advice is enough
    assert judge(_with(val_samples=needed)).refusals == []
    assert math.isclose(required_val_samples(1.0, 144, 0.5), 137, abs_tol=2)  # never 0


def test_an_infeasible_calibration_is_refused() -> None:
    assert "no threshold setting" in judge(_with(feasible=False)).refusals[0]


def test_tolerance_missed_on_test_is_a_warning() -> None:
    verdict = judge(_with(test_drop_pp=1.94))
    assert verdict.refusals == []
    assert verdict.warnings == [
        "on the test set the calibrated policy is 1.94 pp below exit 3, beyond the 0.5 pp tolerance"
    ]


def test_a_more_accurate_early_exit_is_named_and_reference_best_offered() -> None:
    accuracies = [0.90, 0.9214, 0.9182]
    verdict = judge(_with(test_accuracy_per_exit=accuracies))
    assert verdict.warnings == [
        "exit 2 is more accurate than the final exit on test (92.14% vs 91.82%; validation "
        "95.00% vs 97.00%): --reference best calibrates against the most accurate exit"
    ]
    chosen = judge(_with(test_accuracy_per_exit=accuracies, reference_option="best"))
    assert chosen.warnings == []
    assert best_exit([0.9, 0.95, 0.95]) == 2  # ties go to the deeper exit


UNDERTRAINED = ["--epochs", "1", "--batch-size", "512", "--lr", "0.0005", *TINY]


def test_an_undertrained_model_is_refused_and_leaves_nothing(
    digits_npz: Path, tmp_path: Path
) -> None:
    out = tmp_path / "repo"
    result = invoke(
        "build", "--data", f"npz:{digits_npz}", "--name", "weak", "--out", str(out), *UNDERTRAINED
    )
    assert result.exit_code == 1, result.output
    assert error_line(result) == "Error: weak/1 not published (--force publishes anyway):"
    assert "  - final exit " in result.output
    assert "not clearly above the baseline" in result.output
    assert "final exit accuracy" in result.output  # what it got is shown all the same
    assert leftovers(out) == []  # no .1.building, no weak/, no repo/


def test_force_publishes_with_loud_warnings_and_reference_best(
    digits_npz: Path, tmp_path: Path
) -> None:
    out = tmp_path / "repo"
    (out / "weak").mkdir(parents=True)  # an existing model folder stays
    args = ["--name", "weak", "--out", str(out), "--force", "--reference", "best"]
    result = invoke("build", "--data", f"npz:{digits_npz}", *args, *UNDERTRAINED)
    assert result.exit_code == 0, result.output
    assert "WARNING: published with --force although final exit" in result.output
    assert leftovers(out) == sorted(
        ["weak", "weak/1", *(f"weak/1/{f}" for f in _version_files(out / "weak" / "1"))]
    )
    markdown = (out / "weak" / "1" / "calibration.md").read_text()
    assert "* **Published with --force** although final exit" in markdown
    report = json.loads((out / "weak" / "1" / "calibration.json").read_text())
    assert report["reference"] == "best"
    assert report["reference_exit"] == best_exit(report["val_accuracy_per_exit"])


def _version_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir()]
