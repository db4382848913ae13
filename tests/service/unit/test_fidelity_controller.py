"""The fidelity controller on real model outputs: the tiny 3-exit model on MNIST test images,
clean and shifted (Gaussian noise sigma 0.3, rotation), routed by the server's own policy
code and shadowed as the scheduler will (loadtest.drift_replay.serve).

`mnist_samples` holds only 256 images, too few for streams of thousands; the streams take
the MNIST test set through the same loader (models.data). Every expectation is checked
against ground truth measured directly on the outputs, so a controller that does nothing,
or moves everything, fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from loadtest.drift import noise, rotate
from loadtest.drift_replay import Outputs, Served, route, serve
from models.data import load_mnist
from models.manifest import Manifest
from service.fidelity import FidelityConfig, FidelityController, default_target, surety
from service.policies import ExitPolicy, resolve_policy
from service.types import PolicyKind, PolicyOverride
from tests.service.api.v2helpers import load_reference

CLEAN, SHIFTED = 3000, 4000
RATE = 1000.0  # samples per second of the simulated clock
BATCH = 32
TAIL = 1000
RECOVERY_BOUND = 4000  # samples after the traffic returns to clean


@dataclass(frozen=True)
class Tiny:
    manifest: Manifest
    streams: dict[str, Outputs]  # per policy kind, per stream name: see outputs()


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> Tiny:
    reference = load_reference(tiny_model_dir)
    x = load_mnist("t10k").x
    rng = np.random.default_rng(0)
    images = {
        "clean": x[:CLEAN],
        "clean2": x[CLEAN : 2 * CLEAN],
        "noise": noise(x[2 * CLEAN : 2 * CLEAN + SHIFTED], rng),
        "rotate": rotate(x[2 * CLEAN : 2 * CLEAN + SHIFTED], rng),
    }
    streams = {}
    for kind in ("margin", "entropy"):
        for name, batch in images.items():
            probs = reference.exit_probs(np.ascontiguousarray(batch))
            streams[f"{kind}/{name}"] = _outputs(probs, kind)
    return Tiny(reference.manifest, streams)


def _outputs(probs: list[np.ndarray], kind: PolicyKind) -> Outputs:
    pred = np.stack([p.argmax(axis=1) for p in probs], axis=1).astype(np.int64)
    return Outputs(pred, np.stack([surety(kind, p) for p in probs], axis=1), probs)


def _join(*parts: Outputs) -> Outputs:
    probs = [np.concatenate([p.probs[k] for p in parts]) for k in range(len(parts[0].probs))]
    pred = np.concatenate([p.pred for p in parts])
    return Outputs(pred, np.concatenate([p.surety for p in parts]), probs)


def _base(tiny: Tiny, kind: PolicyKind = "margin") -> ExitPolicy:
    return resolve_policy(tiny.manifest, PolicyOverride(policy=kind))


def _controller(tiny: Tiny, base: ExitPolicy, **config: object) -> FidelityController:
    controller = FidelityController.for_manifest(tiny.manifest, base, FidelityConfig(**config))
    assert controller is not None
    return controller


def _agreement(served: Served, outputs: Outputs, rows: slice) -> float:
    final = outputs.pred[rows, -1]
    return float((served.label[rows] == final).mean())


def _leaver_agreement(outputs: Outputs, policy: ExitPolicy, k: int) -> float:
    """Ground truth: how often rows leaving at exit k under `policy` agree with the last."""
    exits = route(policy, outputs.probs)
    left = exits == k
    return float((outputs.pred[left, k] == outputs.pred[left, -1]).mean())


def _exit_changes(controller: FidelityController, k: int) -> list[float]:
    return [c.new for c in controller.log if c.exit == k]


def test_default_target_comes_from_the_calibration(tiny: Tiny) -> None:
    calibration = tiny.manifest.calibration
    assert calibration is not None
    expected = 2 * calibration.final_exit_accuracy - 1 - calibration.tolerance_pp / 100
    assert default_target(calibration) == pytest.approx(expected)
    assert _controller(tiny, _base(tiny)).target == pytest.approx(expected)
    bare = tiny.manifest.model_copy(update={"calibration": None})
    assert FidelityController.for_manifest(bare, _base(tiny), FidelityConfig()) is None
    explicit = FidelityConfig(target=0.97)
    assert FidelityController.for_manifest(bare, _base(tiny), explicit) is not None


def test_clean_stream_leaves_faithful_exits_alone(tiny: Tiny) -> None:
    """Exit 0 agrees above target on clean data and must keep its calibrated threshold;
    only an exit that measurably disagrees more than the target allows may move."""
    base, clean = _base(tiny), _join(tiny.streams["margin/clean"], tiny.streams["margin/clean2"])
    controller = _controller(tiny, base)
    assert _leaver_agreement(clean, base, 0) > controller.target + 0.02  # precondition
    served = serve(clean, base, controller, BATCH, RATE)
    assert _exit_changes(controller, 0) == []
    assert controller.policy.thresholds[0] == base.thresholds[0]
    for change in controller.log:
        assert _leaver_agreement(clean, base, change.exit) < controller.target
    assert controller.snapshot(len(clean.pred) / RATE).exits[0].state == "steady"
    assert served.shadow.sum() > 0  # shadows were run, so the evidence was there


@pytest.mark.parametrize("shift", ["noise", "rotate"])
def test_shifted_stream_raises_thresholds_and_agreement_recovers(tiny: Tiny, shift: str) -> None:
    base = _base(tiny)
    stream = _join(tiny.streams["margin/clean"], tiny.streams[f"margin/{shift}"])
    controller = _controller(tiny, base)
    served = serve(stream, base, controller, BATCH, RATE)
    static = serve(stream, base, None, BATCH, RATE)
    tail = slice(len(stream.pred) - TAIL, None)
    assert _agreement(static, stream, tail) < controller.target - 0.1  # the shift hurts
    assert _agreement(served, stream, tail) >= controller.target
    assert controller.policy.thresholds[0] > base.thresholds[0]
    raise_ = next(c for c in controller.log if c.exit == 0)
    assert raise_.before.upper < raise_.target  # a clear violation, on evidence
    assert raise_.before.n_eff >= controller.config.min_samples
    assert raise_.at_sample >= CLEAN  # not before the traffic changed


def test_return_to_clean_brings_thresholds_and_savings_back(tiny: Tiny) -> None:
    base, s = _base(tiny), tiny.streams
    stream = _join(s["margin/clean"], s["margin/noise"], s["margin/clean2"], s["margin/clean"])
    controller = _controller(tiny, base)
    served = serve(stream, base, controller, BATCH, RATE)
    back = CLEAN + SHIFTED
    assert any(c.new > base.thresholds[0] and c.at_sample < back for c in controller.log)
    assert controller.policy.thresholds[0] == base.thresholds[0]
    returned = [c for c in controller.log if c.exit == 0 and c.at_sample >= back]
    assert returned[-1].new == base.thresholds[0]
    assert returned[-1].at_sample - back <= RECOVERY_BOUND
    # savings, over the last 1000 of the 6000 clean samples after the shift: exit 0 (the
    # exit that is faithful on clean data) takes its static share again. Exit 1 may stay
    # off: its answers agree ~60-75% with the last exit's even on clean data.
    static = serve(stream, base, None, BATCH, RATE)
    share, static_share = (float((x.exit[-TAIL:] == 0).mean()) for x in (served, static))
    assert share >= static_share - 0.05
    assert share > float((served.exit[back - TAIL : back] == 0).mean()) + 0.5


def test_frozen_controller_never_moves_but_still_sees(tiny: Tiny) -> None:
    base = _base(tiny)
    stream = _join(tiny.streams["margin/clean"], tiny.streams["margin/noise"])
    controller = _controller(tiny, base)
    controller.freeze()
    serve(stream, base, controller, BATCH, RATE)
    assert controller.policy is base
    assert list(controller.log) == []
    snapshot = controller.snapshot(len(stream.pred) / RATE)
    assert snapshot.state == "frozen"
    assert snapshot.exits[0].estimate.upper < controller.target  # it saw the violation
    controller.unfreeze()
    assert controller.step(len(stream.pred) / RATE) is not None


@pytest.mark.parametrize(("kind", "off"), [("margin", math.inf), ("entropy", -math.inf)])
def test_exit_without_a_feasible_threshold_is_switched_off(
    tiny: Tiny, kind: PolicyKind, off: float
) -> None:
    """Noise at sigma 0.3 leaves no bar at exit 0 where the tiny model's early answers agree
    often enough (checked on the outputs): the exit is switched off, not merely raised."""
    base, noisy = _base(tiny, kind), tiny.streams[f"{kind}/noise"]
    score, agree = noisy.surety[:, 0], noisy.pred[:, 0] == noisy.pred[:, -1]
    for t in np.quantile(score, np.linspace(0, 0.99, 50)):
        assert agree[score >= t].mean() < 0.9  # precondition: no feasible threshold
    controller = _controller(tiny, base)
    stream = _join(tiny.streams[f"{kind}/clean"], noisy)
    serve(stream, base, controller, BATCH, RATE)
    assert controller.policy.thresholds[0] == off
    assert controller.snapshot(len(stream.pred) / RATE).exits[0].state == "disabled-exit"
    assert not np.any(route(controller.policy, noisy.probs) == 0)  # nobody leaves there
    assert "no threshold certified" in next(c for c in controller.log if c.exit == 0).reason


def test_reset_restores_the_calibrated_policy_and_forgets(tiny: Tiny) -> None:
    base = _base(tiny)
    stream = _join(tiny.streams["margin/clean"], tiny.streams["margin/noise"])
    controller = _controller(tiny, base)
    serve(stream, base, controller, BATCH, RATE)
    assert controller.policy != base
    now = len(stream.pred) / RATE
    adjustment = controller.reset(now)
    assert adjustment.policy is base
    assert controller.policy is base
    assert all(c.reason.startswith("reset") for c in adjustment.changes)
    assert {c.exit for c in adjustment.changes} == {0, 1}
    assert len(controller.evidence.recent(0, now)) == 0
    assert controller.sampler.fraction == controller.config.max_shadow_fraction


def test_switched_off_controller_serves_calibrated_and_runs_no_shadows(tiny: Tiny) -> None:
    base = _base(tiny)
    stream = _join(tiny.streams["margin/clean"], tiny.streams["margin/noise"])
    controller = _controller(tiny, base, enabled=False)
    served = serve(stream, base, controller, BATCH, RATE)
    assert controller.policy is base
    assert not served.shadow.any()
    assert controller.snapshot(0.0).state == "off"
    assert controller.step(1e6) is None


def test_adjusted_policy_is_the_type_the_stages_read(tiny: Tiny) -> None:
    base = _base(tiny)
    stream = _join(tiny.streams["margin/clean"], tiny.streams["margin/noise"])
    controller = _controller(tiny, base)
    serve(stream, base, controller, BATCH, RATE)
    policy = controller.policy
    assert isinstance(policy, ExitPolicy)
    assert (policy.kind, policy.last_exit, policy.patience) == (
        base.kind,
        base.last_exit,
        base.patience,
    )
    assert policy.thresholds[-1] == base.thresholds[-1]
    hash(policy)  # frozen and hashable: the scheduler groups rows by policy


def test_steady_clean_traffic_is_shadowed_at_the_minimum_fraction(tiny: Tiny) -> None:
    """Once clean traffic has settled the sampler, it stays at min_shadow_fraction: the
    thin evidence a low fraction leaves within the horizon must not raise the alarm by
    itself (the steady cost is what the fraction bounds). Requiring min_samples comparisons
    instead, as a decision does, pulls the fraction back to its maximum every few steps."""
    base, s = _base(tiny), tiny.streams
    stream = _join(s["margin/clean"], s["margin/clean2"], s["margin/clean"])
    tail = slice(len(stream.pred) - 2 * CLEAN, None)

    def shadow_share(**config: object) -> float:
        controller = _controller(tiny, base, **config)
        served = serve(stream, base, controller, BATCH, RATE)
        early = served.exit[tail] < len(controller.base.thresholds) - 1
        return float(served.shadow[tail].sum() / early.sum())

    steady = shadow_share()
    assert steady <= 1.5 * FidelityConfig().min_shadow_fraction
    assert shadow_share(alarm_samples=30) > 2 * steady


def test_disagreement_at_the_steady_fraction_restarts_the_evidence(tiny: Tiny) -> None:
    """A shift met at the steady fraction: the evidence starts over (once) soon after it, so
    the heavy comparisons shadowed at 1% before it cannot hold the raise back."""
    base, s = _base(tiny), tiny.streams
    stream = _join(s["margin/clean"], s["margin/clean2"], s["margin/noise"])
    controller = _controller(tiny, base)
    restarts: list[tuple[int, float]] = []
    clear = controller.evidence.clear

    def spy() -> None:
        restarts.append((controller.evidence.seen, controller.sampler.fraction))
        clear()

    controller.evidence.clear = spy  # type: ignore[method-assign]
    serve(stream, base, controller, BATCH, RATE)
    shift = 2 * CLEAN
    assert len(restarts) == 1
    seen, fraction = restarts[0]
    assert shift <= seen <= shift + 1000
    assert fraction == controller.config.min_shadow_fraction
    raise_ = next(c for c in controller.log if c.exit == 0)
    assert raise_.at_sample - shift <= 1500
    assert raise_.before.count <= raise_.at_sample - seen  # fresh evidence only
