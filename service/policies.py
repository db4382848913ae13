"""Exit policies: pure, vectorised decisions over one exit's softmax outputs.

A request's `parameters` are checked once against the model (`resolve_policy`) and turned
into a frozen, hashable `ExitPolicy`; the scheduler then groups rows by policy and calls
`decide` once per group per batch, so the per-sample cost stays in numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.manifest import Manifest
from service.errors import BadRequest
from service.types import PolicyKind, PolicyOverride

DEFAULT_PATIENCE = 2
ProbArray = npt.NDArray[np.float32]
PredArray = npt.NDArray[np.int64]
StreakArray = npt.NDArray[np.int32]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class ExitPolicy:
    """When a row may leave: a rule per exit and the deepest exit it may reach.

    `thresholds[k]` is the bar at exit k (unused for patience); `last_exit` always answers.
    """

    kind: PolicyKind
    thresholds: tuple[float, ...]
    last_exit: int
    patience: int = DEFAULT_PATIENCE


@dataclass(frozen=True)
class Decision:
    """Which rows exit here, and the state the survivors carry to the next exit.

    `top`: each row's highest probability when the rule computed it (confidence), so the
    batch's answers and fidelity notes reuse it instead of reducing the rows again.
    """

    exits: BoolArray
    pred: PredArray
    streak: StreakArray
    top: npt.NDArray[np.float32] | None = None


def max_prob(probs: ProbArray) -> npt.NDArray[np.float32]:
    """Each row's highest probability (a direct ufunc reduce: `probs.max` adds Python
    frames, microseconds that count at one sample per batch)."""
    return np.asarray(np.maximum.reduce(probs, axis=1), dtype=np.float32)


def entropy(probs: ProbArray) -> npt.NDArray[np.float32]:
    """Shannon entropy in nats; zero-probability classes contribute nothing."""
    p = np.clip(probs, 1e-12, 1.0)
    return np.asarray(-(probs * np.log(p)).sum(axis=1), dtype=np.float32)


def margin(probs: ProbArray) -> npt.NDArray[np.float32]:
    """Top-1 minus top-2 probability."""
    top2 = np.partition(probs, probs.shape[1] - 2, axis=1)[:, -2:]
    return np.asarray(top2[:, 1] - top2[:, 0], dtype=np.float32)


def decide(
    policy: ExitPolicy, exit_index: int, probs: ProbArray, pred: PredArray, streak: StreakArray
) -> Decision:
    """Apply `policy` at `exit_index` to rows whose previous prediction/streak are given.

    `pred` is the argmax at the previous exit (-1 before the first); `streak` counts the
    consecutive exits that agreed on it. Both are needed only by patience but are always
    carried, so every policy sees the same row state.
    """
    new_pred = probs.argmax(axis=1).astype(np.int64, copy=False)
    new_streak = np.where(new_pred == pred, streak + 1, 1).astype(np.int32, copy=False)
    if exit_index >= policy.last_exit:
        return Decision(np.ones(len(probs), dtype=np.bool_), new_pred, new_streak)
    if policy.kind == "patience":
        return Decision(new_streak >= policy.patience, new_pred, new_streak)
    if policy.kind == "confidence":
        top = max_prob(probs)
        return Decision(top >= policy.thresholds[exit_index], new_pred, new_streak, top)
    exits = _threshold_rule(policy.kind, probs, policy.thresholds[exit_index])
    return Decision(exits, new_pred, new_streak)


def _threshold_rule(kind: PolicyKind, probs: ProbArray, t: float) -> BoolArray:
    """The rules other than confidence, which `decide` applies itself (it keeps `top`)."""
    if kind == "entropy":
        return np.asarray(entropy(probs) <= t)
    if kind == "margin":
        return np.asarray(margin(probs) >= t)
    raise ValueError(f"no threshold rule for policy {kind!r}")


def resolve_policy(manifest: Manifest, override: PolicyOverride) -> ExitPolicy:
    """The manifest's calibrated policy with a request's overrides applied and checked.

    Raises BadRequest naming the `parameters.<field>` at fault.
    """
    last = manifest.num_exits - 1
    kind = override.policy or ("patience" if override.patience is not None else None)
    kind = kind or manifest.default_policy
    if override.patience is not None and kind != "patience":
        raise BadRequest("parameters.patience applies only to policy 'patience'")
    if override.max_exit is not None:
        if not 0 <= override.max_exit <= last:
            raise BadRequest(f"parameters.max_exit must be in [0, {last}]")
        if override.full_depth and override.max_exit != last:
            raise BadRequest("parameters.max_exit cannot be combined with parameters.full_depth")
    last_exit = last if override.full_depth or override.max_exit is None else override.max_exit
    if kind == "patience":
        return _patience_policy(manifest, override, last_exit)
    thresholds = _thresholds(manifest, kind, override.threshold)
    if override.full_depth:
        thresholds = tuple(math.inf if kind != "entropy" else -math.inf for _ in thresholds)
    return ExitPolicy(kind=kind, thresholds=thresholds, last_exit=last_exit)


def _patience_policy(manifest: Manifest, override: PolicyOverride, last_exit: int) -> ExitPolicy:
    if override.threshold is not None:
        raise BadRequest("parameters.threshold does not apply to policy 'patience'")
    patience = DEFAULT_PATIENCE if override.patience is None else override.patience
    if not 1 <= patience <= manifest.num_exits:
        raise BadRequest(f"parameters.patience must be in [1, {manifest.num_exits}]")
    if override.full_depth:
        patience = manifest.num_exits + 1  # never satisfied: only the last exit answers
    thresholds = tuple(0.0 for _ in manifest.segments)
    return ExitPolicy("patience", thresholds, last_exit=last_exit, patience=patience)


def _thresholds(manifest: Manifest, kind: PolicyKind, threshold: float | None) -> tuple[float, ...]:
    """One bar per exit: the request's single value, else the calibrated ones."""
    if threshold is not None:
        high = math.log(len(manifest.labels)) if kind == "entropy" else 1.0
        if not (math.isfinite(threshold) and 0.0 <= threshold <= high):
            raise BadRequest(f"parameters.threshold for policy '{kind}' must be in [0, {high:g}]")
        return tuple(threshold for _ in manifest.segments)
    calibrated = [seg.thresholds.get(kind) for seg in manifest.segments]
    if any(t is None for t in calibrated[:-1]):
        raise BadRequest(
            f"parameters.policy '{kind}' has no calibrated thresholds for model "
            f"'{manifest.name}'; pass parameters.threshold"
        )
    return tuple(0.0 if t is None else t for t in calibrated)
