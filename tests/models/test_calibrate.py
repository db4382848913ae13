"""Threshold calibration: routing, the tolerance, and the policies' conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.calibrate import (
    apply,
    calibrate,
    exits_taken,
    from_manifest,
    pick_default,
    scores,
    to_manifest,
)

CUMULATIVE = np.array([0.2, 0.5, 1.0], dtype=np.float32)


def _probs(
    confidences: list[list[float]], predicted: list[list[int]], classes: int = 4
) -> np.ndarray:
    """(exits, N, classes) probabilities with the given top-1 confidence and class."""
    exits, n = len(confidences), len(confidences[0])
    probs = np.zeros((exits, n, classes), dtype=np.float32)
    for e in range(exits):
        for i in range(n):
            c = confidences[e][i]
            probs[e, i, :] = (1 - c) / (classes - 1)
            probs[e, i, predicted[e][i]] = c
    return probs


def test_scores_follow_each_policy() -> None:
    probs = np.array([[[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]]], dtype=np.float32)
    np.testing.assert_allclose(scores(probs, "confidence")[0], [0.7, 0.4], rtol=1e-6)
    np.testing.assert_allclose(scores(probs, "margin")[0], [0.5, 0.05], rtol=1e-5)
    entropy = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    assert scores(probs, "entropy")[0, 0] == pytest.approx(-entropy, rel=1e-5)


def test_samples_take_the_first_exit_that_is_sure_enough() -> None:
    score = np.array([[0.9, 0.1, 0.1], [0.5, 0.8, 0.1], [0.0, 0.0, 0.0]])
    taken = exits_taken(score, np.array([0.7, 0.7]))
    assert taken.tolist() == [0, 1, 2]


def test_entropy_thresholds_round_trip_and_last_exit_always_passes() -> None:
    cuts = np.array([-0.3, -0.1])
    thresholds = to_manifest("entropy", cuts, num_classes=10)
    assert thresholds[:2] == [0.3, 0.1]
    assert thresholds[2] == pytest.approx(math.log(10))  # the largest entropy possible
    np.testing.assert_allclose(from_manifest("entropy", thresholds), cuts)
    assert to_manifest("confidence", np.array([0.9, 0.8]), 10)[-1] == 0.0


def test_confidently_wrong_samples_are_kept_from_exiting_early() -> None:
    n = 400
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, n)
    wrong = (labels + 1) % 4
    # exit 1: right and sure for 300 samples, wrong yet fairly sure (0.6) for 100
    pred1 = np.where(np.arange(n) < 300, labels, wrong)
    conf1 = np.where(np.arange(n) < 300, 0.95, 0.6)
    probs = _probs(
        [conf1.tolist(), [0.9] * n, [0.99] * n], [pred1.tolist(), labels.tolist(), labels.tolist()]
    )
    choice = calibrate(probs, labels, CUMULATIVE, tolerance_pp=0.5, policies=("confidence",))[
        "confidence"
    ]
    assert choice.feasible
    assert 0.6 < choice.thresholds[0] <= 0.95
    assert choice.val.accuracy == 1.0
    assert choice.val.exit_distribution[0] == pytest.approx(0.75)
    assert choice.val.compute_fraction == pytest.approx(0.75 * 0.2 + 0.25 * 0.5)


def _noisy_exits(seed: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Realistic-looking outputs: later exits are more often right, confidence tracks it."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    probs = np.zeros((3, n, 10), dtype=np.float32)
    for e, skill in enumerate((1.5, 2.5, 4.0)):
        logits = rng.normal(0, 1, (n, 10))
        logits[np.arange(n), labels] += skill
        probs[e] = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, labels


@pytest.mark.parametrize("tolerance", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("policy", ["confidence", "entropy", "margin"])
def test_calibrated_accuracy_stays_within_the_tolerance(tolerance: float, policy: str) -> None:
    probs, labels = _noisy_exits(1)
    final = (probs[-1].argmax(-1) == labels).mean()
    choice = calibrate(probs, labels, CUMULATIVE, tolerance, policies=(policy,))[policy]
    assert choice.feasible
    assert choice.val.accuracy >= final - tolerance / 100
    assert choice.val.compute_fraction < 1.0  # something does leave early
    outcome = apply(probs, labels, policy, choice.thresholds, CUMULATIVE)
    assert outcome == choice.val


def test_a_looser_tolerance_never_costs_more_compute() -> None:
    probs, labels = _noisy_exits(2)
    costs = [
        calibrate(probs, labels, CUMULATIVE, t, policies=("confidence",))[
            "confidence"
        ].val.compute_fraction
        for t in (0.0, 0.5, 2.0, 10.0)
    ]
    assert costs == sorted(costs, reverse=True)
    assert costs[-1] < costs[0]


def test_tolerance_holds_on_unseen_data_of_the_same_kind() -> None:
    val_probs, val_labels = _noisy_exits(3, n=5000)
    test_probs, test_labels = _noisy_exits(4, n=5000)
    choice = calibrate(val_probs, val_labels, CUMULATIVE, 0.5, policies=("confidence",))[
        "confidence"
    ]
    test = apply(test_probs, test_labels, "confidence", choice.thresholds, CUMULATIVE)
    final = (test_probs[-1].argmax(-1) == test_labels).mean()
    assert test.accuracy >= final - 0.5 / 100 - 0.003  # within sampling noise of the margin


def test_default_policy_is_the_cheapest_feasible_one() -> None:
    probs, labels = _noisy_exits(5)
    choices = calibrate(probs, labels, CUMULATIVE, 0.5)
    best = pick_default(choices)
    assert choices[best].val.compute_fraction == min(
        c.val.compute_fraction for c in choices.values()
    )


def test_mismatched_shapes_are_rejected() -> None:
    probs, labels = _noisy_exits(6, n=50)
    with pytest.raises(ValueError, match="do not match"):
        calibrate(probs, labels[:10], CUMULATIVE)
