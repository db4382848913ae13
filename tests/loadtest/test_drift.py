"""The drifting benchmark stream (seeded, numpy) and the offline replay on the tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loadtest.drift import drift_stream
from loadtest.drift_replay import replay
from loadtest.inprocess import load_chain
from service.fidelity import FidelityConfig

PHASES = ("clean", "noise", "rotate", "contrast", "fashion", "clean")


def test_stream_is_deterministic_per_seed_and_phased() -> None:
    a, b = drift_stream(300, PHASES, seed=3), drift_stream(300, PHASES, seed=3)
    assert np.array_equal(a.x, b.x)
    assert not np.array_equal(a.x, drift_stream(300, PHASES, seed=4).x)
    assert a.x.shape == (1800, 1, 28, 28)
    assert a.x.dtype == np.float32
    assert 0.0 <= a.x.min() <= a.x.max() <= 1.0
    assert [(p.name, p.start, p.stop) for p in a.phases] == [
        (name, 300 * i, 300 * (i + 1)) for i, name in enumerate(PHASES)
    ]


def test_each_shift_changes_the_images_in_its_own_way() -> None:
    stream = drift_stream(400, PHASES, seed=0)
    part = {p.name: stream.x[p.start : p.stop] for p in stream.phases}  # last "clean" wins
    clean = part["clean"]
    assert part["noise"].std() > clean.std() * 0.9
    assert (
        np.abs(np.diff(part["noise"], axis=-1)).mean() > 2 * np.abs(np.diff(clean, axis=-1)).mean()
    )
    assert part["contrast"].max() < 0.9  # washed out: no full-white strokes
    assert part["contrast"].min() > 0.1  # ... over a grey background
    # rotation and translation move ink: the mean image smears out
    assert np.abs(part["rotate"].mean(axis=0) - clean.mean(axis=0)).max() > 0.1
    # Fashion-MNIST: far more ink per image than handwritten digits
    assert part["fashion"].mean() > 1.5 * clean.mean()


def test_unknown_phase_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown phase"):
        drift_stream(10, ("clean", "snow"))


def test_replay_shows_the_controller_restoring_agreement(tiny_model_dir: Path) -> None:
    stream = drift_stream(2500, ("clean", "noise"), seed=0)
    chain = load_chain(tiny_model_dir, threads=1)
    result = replay(chain, stream.x, stream.phases, FidelityConfig())
    clean, noisy = result.controlled
    assert noisy.agreement_tail > result.static[1].agreement_tail + 0.3
    assert noisy.early_share_tail < result.static[1].early_share_tail
    assert clean.compute == pytest.approx(result.static[0].compute, abs=0.05)
    assert 0.0 < clean.shadow_cost < 1.0
    assert any(c.exit == 0 for c in result.changes)
