"""PABEE patience: routed exactly as the server routes it, calibrated, refused where it loses.

Patience has one knob, k. With weak early exits that agree with each other while wrong,
no k holds the tolerance, and the calibration must say so (manifest `patience: null`)
rather than ship the default k and lose accuracy silently.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.calibrate import PATIENCE, apply, calibrate, patience_exits, pick_default
from service.policies import ExitPolicy, decide

CUMULATIVE = np.array([0.25, 0.5, 0.75, 1.0], dtype=np.float32)


def _probs(preds: npt.NDArray[np.int64], sure: float = 0.9) -> npt.NDArray[np.float32]:
    """(exits, N, 2) softmax outputs that predict `preds` with confidence `sure`."""
    probs = np.full((*preds.shape, 2), 1 - sure, dtype=np.float32)
    np.put_along_axis(probs, preds[..., None], sure, axis=-1)
    return probs


def test_routing_matches_the_servers_decide() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=(4, 300)).astype(np.float32)
    for k in (1, 2, 3, 4):
        policy = ExitPolicy("patience", (0.0,) * 4, last_exit=3, patience=k)
        pred = np.full(300, -1, dtype=np.int64)
        streak = np.zeros(300, dtype=np.int32)
        served = np.full(300, -1, dtype=np.int64)
        for exit_index in range(4):
            decision = decide(policy, exit_index, probs[exit_index], pred, streak)
            served[(served < 0) & decision.exits] = exit_index
            pred, streak = decision.pred, decision.streak
        np.testing.assert_array_equal(patience_exits(probs, k), served)


def test_patience_is_refused_where_agreeing_early_exits_are_wrong() -> None:
    labels = np.zeros(1000, dtype=np.int64)
    preds = np.zeros((4, 1000), dtype=np.int64)
    preds[:3, :200] = 1  # the three early exits agree on a wrong answer for 20% of samples
    choices = calibrate(_probs(preds), labels, CUMULATIVE, tolerance_pp=1.0)
    patience = choices[PATIENCE]
    assert not patience.feasible
    assert patience.val.accuracy < 0.99  # even its least bad k loses more than 1 pp
    # the threshold policies stay usable (they see the final exit is needed): never patience
    assert pick_default(choices) != PATIENCE


def test_smallest_feasible_patience_is_chosen_and_holds_on_test() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 4000)
    preds = np.tile(labels, (4, 1))
    # exit 1 alone is wrong 30% of the time; exits 1 and 2 never agree on a wrong answer
    wrong = rng.random(4000) < 0.3
    preds[0, wrong] = 1 - labels[wrong]
    choices = calibrate(_probs(preds), labels, CUMULATIVE, tolerance_pp=0.5)
    patience = choices[PATIENCE]
    assert patience.feasible
    assert patience.thresholds == [2.0] * 4
    test = apply(_probs(preds), labels, PATIENCE, patience.thresholds, CUMULATIVE)
    assert test.accuracy == 1.0
    assert test.exit_distribution[1] > 0.6  # agreeing samples leave at exit 2
