"""Exit policies on hand-computed probabilities, and request overrides checked per field."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.errors import BadRequest
from service.policies import ExitPolicy, decide, entropy, margin, max_prob, resolve_policy
from service.types import PolicyOverride
from tests.service.unit.manifests import make_manifest

P = np.array(
    [
        [0.97, 0.01, 0.01, 0.01],  # confident
        [0.25, 0.25, 0.25, 0.25],  # uniform: entropy ln 4, margin 0
        [0.50, 0.40, 0.10, 0.00],  # margin 0.1, a zero-probability class
    ],
    dtype=np.float32,
)
NONE = np.full(3, -1, dtype=np.int64)
ZERO = np.zeros(3, dtype=np.int32)


def test_scores_match_hand_computation() -> None:
    np.testing.assert_allclose(max_prob(P), [0.97, 0.25, 0.5])
    h0 = -(0.97 * math.log(0.97) + 3 * 0.01 * math.log(0.01))
    h2 = -(0.5 * math.log(0.5) + 0.4 * math.log(0.4) + 0.1 * math.log(0.1))
    np.testing.assert_allclose(entropy(P), [h0, math.log(4), h2], rtol=1e-5)
    np.testing.assert_allclose(margin(P), [0.96, 0.0, 0.1], atol=1e-6)


@pytest.mark.parametrize(
    ("kind", "threshold", "expected"),
    [
        ("confidence", 0.5, [True, False, True]),
        ("confidence", 0.51, [True, False, False]),
        ("entropy", 0.5, [True, False, False]),
        ("entropy", 1.0, [True, False, True]),
        ("margin", 0.09, [True, False, True]),
        ("margin", 0.2, [True, False, False]),
    ],
)
def test_threshold_rules(kind: str, threshold: float, expected: list[bool]) -> None:
    policy = ExitPolicy(kind, (threshold,) * 3, last_exit=2)  # type: ignore[arg-type]
    d = decide(policy, 0, P, NONE, ZERO)
    assert d.exits.tolist() == expected
    assert d.pred.tolist() == [0, 0, 0]
    assert d.streak.tolist() == [1, 1, 1]


def test_last_exit_always_answers() -> None:
    policy = ExitPolicy("confidence", (1.0, 1.0, 1.0), last_exit=1)
    assert not decide(policy, 0, P, NONE, ZERO).exits.any()
    assert decide(policy, 1, P, NONE, ZERO).exits.all()


def test_patience_counts_consecutive_agreeing_exits() -> None:
    policy = ExitPolicy("patience", (0.0,) * 4, last_exit=3, patience=2)
    first = decide(policy, 0, P, NONE, ZERO)
    assert not first.exits.any()  # one exit never agrees with anything yet
    flipped = P[:, ::-1].copy()  # argmax moves for rows 0 and 2; row 1 ties at index 0
    second = decide(policy, 1, flipped, first.pred, first.streak)
    assert second.exits.tolist() == [False, True, False]
    assert second.streak.tolist() == [1, 2, 1]
    third = decide(policy, 2, flipped, second.pred, second.streak)
    assert third.exits.tolist() == [True, True, True]


def test_resolve_defaults_to_calibrated_thresholds() -> None:
    manifest = make_manifest(thresholds={"confidence": [0.8, 0.7, 0.0], "entropy": [0.3, 0.4, 9]})
    policy = resolve_policy(manifest, PolicyOverride())
    assert policy == ExitPolicy("confidence", (0.8, 0.7, 0.0), last_exit=2)
    assert resolve_policy(manifest, PolicyOverride(policy="entropy")).thresholds == (0.3, 0.4, 9)
    assert resolve_policy(manifest, PolicyOverride(threshold=0.5)).thresholds == (0.5,) * 3
    assert resolve_policy(manifest, PolicyOverride(max_exit=1)).last_exit == 1
    assert resolve_policy(manifest, PolicyOverride(patience=3)).patience == 3


@pytest.mark.parametrize(
    "override",
    [
        PolicyOverride(full_depth=True),
        PolicyOverride(policy="entropy", threshold=1.0, full_depth=True),
        PolicyOverride(policy="patience", full_depth=True),
    ],
)
def test_full_depth_only_the_last_exit_answers(override: PolicyOverride) -> None:
    manifest = make_manifest(thresholds={"confidence": [0.9] * 3, "entropy": [1.0] * 3})
    policy = resolve_policy(manifest, override)
    certain = np.eye(4, dtype=np.float32)[:3]  # would exit anywhere under any threshold
    pred, streak = NONE, ZERO
    for k in range(manifest.num_exits):
        d = decide(policy, k, certain, pred, streak)
        assert d.exits.tolist() == [k == 2] * 3
        pred, streak = d.pred, d.streak


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (PolicyOverride(max_exit=3), "parameters.max_exit must be in [0, 2]"),
        (PolicyOverride(max_exit=-1), "parameters.max_exit must be in [0, 2]"),
        (PolicyOverride(threshold=1.5), "parameters.threshold"),
        (PolicyOverride(threshold=float("nan")), "parameters.threshold"),
        (PolicyOverride(policy="entropy", threshold=2.0), "parameters.threshold"),
        (PolicyOverride(policy="margin"), "parameters.policy 'margin' has no calibrated"),
        (PolicyOverride(policy="confidence", patience=2), "parameters.patience applies only"),
        (PolicyOverride(patience=0), "parameters.patience must be in [1, 3]"),
        (PolicyOverride(policy="patience", threshold=0.5), "parameters.threshold does not apply"),
        (PolicyOverride(max_exit=1, full_depth=True), "parameters.max_exit cannot be combined"),
    ],
)
def test_invalid_overrides_name_the_field(override: PolicyOverride, message: str) -> None:
    with pytest.raises(BadRequest) as err:
        resolve_policy(make_manifest(), override)
    assert message in err.value.message
    assert err.value.status_code == 400


def test_policies_are_hashable_for_grouping() -> None:
    manifest = make_manifest()
    a = resolve_policy(manifest, PolicyOverride(threshold=0.5))
    b = resolve_policy(manifest, PolicyOverride(threshold=0.5))
    assert a == b
    assert len({a, b, resolve_policy(manifest, PolicyOverride())}) == 2
