"""Evidence rings and the shadow sampler: bounded memory, expiry, weights, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from service.fidelity.evidence import EvidenceStore, ExitRing
from service.fidelity.sampler import ShadowSampler


def _append(ring: ExitRing, scores: list[float], seq: int = 0, stamp: float = 0.0) -> None:
    n = len(scores)
    s = np.asarray(scores, dtype=np.float64)
    ring.append(s, np.ones(n, bool), np.ones(n, bool), np.ones(n), seq, stamp)


def test_ring_keeps_only_the_newest_entries() -> None:
    ring = ExitRing(capacity=5)
    _append(ring, [1, 2, 3])
    _append(ring, [4, 5, 6, 7])
    assert ring.size == 5
    assert sorted(ring.recent(0, 0.0).score.tolist()) == [3, 4, 5, 6, 7]
    _append(ring, [10, 11, 12, 13, 14, 15, 16])  # more than fit at once
    assert sorted(ring.recent(0, 0.0).score.tolist()) == [12, 13, 14, 15, 16]


def test_ring_expires_by_sample_count_and_by_clock() -> None:
    ring = ExitRing(capacity=10)
    _append(ring, [1, 2], seq=0, stamp=0.0)
    _append(ring, [3], seq=100, stamp=5.0)
    _append(ring, [4], seq=200, stamp=1.0)
    assert sorted(ring.recent(100, 0.0).score.tolist()) == [3, 4]
    assert sorted(ring.recent(0, 2.0).score.tolist()) == [3]
    ring.clear()
    assert len(ring.recent(0, 0.0)) == 0


def test_record_files_each_row_under_the_exits_it_reached() -> None:
    """A row that left at exit 0 says nothing about exit 1 (the policy never sent it there);
    rows reaching the last exit are observed for free (weight 1), shadows weigh 1/fraction."""
    store = EvidenceStore(early_exits=2, capacity=16, horizon_samples=1000, horizon_s=60.0)
    surety = np.array([[0.9, 0.95], [0.4, 0.8], [0.3, 0.2]])
    pred = np.array([[1, 1], [2, 3], [4, 5]])
    final = np.array([1, 3, 6])
    answered_at = np.array([0, 1, 2])  # left at 0, left at 1, answered by the last exit
    inclusion = np.array([0.25, 0.5, 1.0])
    counts = store.record(surety, pred, final, answered_at, inclusion, now=1.0)
    exit0, exit1 = store.recent(0, 1.0), store.recent(1, 1.0)
    assert exit0.score.tolist() == [0.9, 0.4, 0.3]
    assert exit0.agree.tolist() == [True, False, False]
    assert exit0.left.tolist() == [True, False, False]
    assert exit0.weight.tolist() == [4.0, 2.0, 1.0]
    assert exit1.score.tolist() == [0.8, 0.2]
    assert exit1.agree.tolist() == [True, False]
    assert counts == [(1, 1), (1, 1)]  # (early answers compared, agreed) per exit


def test_store_forgets_evidence_older_than_its_horizon() -> None:
    store = EvidenceStore(early_exits=1, capacity=64, horizon_samples=100, horizon_s=60.0)
    row = (np.array([[0.9]]), np.array([[1]]), np.array([1]), np.array([0]))
    store.record(*row, inclusion=1.0, now=0.0)
    store.count(50)
    assert len(store.recent(0, 0.0)) == 1
    store.count(51)
    assert len(store.recent(0, 0.0)) == 0
    store.record(*row, inclusion=1.0, now=0.0)
    assert len(store.recent(0, 61.0)) == 0  # the clock horizon


def test_sampler_is_deterministic_for_a_seed_and_honours_its_fraction() -> None:
    a, b = ShadowSampler(0.02, 0.25, seed=7), ShadowSampler(0.02, 0.25, seed=7)
    picks = a.choose(20000)
    assert np.array_equal(picks, b.choose(20000))
    assert picks.mean() == pytest.approx(0.25, abs=0.01)
    assert a.chosen == int(picks.sum())


def test_sampler_honours_its_fraction_over_many_small_draws_and_after_a_change() -> None:
    """Batches of one or a few rows (the usual at low load) skip rows between picks; the
    rate must still be the fraction, and a new fraction must hold from the next draw on."""
    sampler = ShadowSampler(0.02, 0.25, seed=3)
    sizes = np.random.default_rng(4).integers(1, 4, size=20000)
    picked = sum(len(sampler.draw(int(n))[0]) for n in sizes)
    assert picked / sizes.sum() == pytest.approx(0.25, abs=0.01)
    assert sampler.chosen == picked
    for _ in range(4):
        sampler.update(alarm=False)  # down to 0.02
    assert sampler.fraction == pytest.approx(0.02)
    picked = [sampler.draw(2)[0] for _ in range(50000)]
    assert sum(map(len, picked)) / 100000 == pytest.approx(0.02, abs=0.002)
    assert all(set(p.tolist()) <= {0, 1} for p in picked)


def test_sampler_starts_high_decays_when_quiet_and_jumps_on_alarm() -> None:
    sampler = ShadowSampler(0.02, 0.25)
    assert sampler.fraction == 0.25  # right after a load
    fractions = [sampler.update(alarm=False) for _ in range(6)]
    assert fractions == sorted(fractions, reverse=True)
    assert fractions[-1] == 0.02  # never below the minimum
    assert sampler.update(alarm=True) == 0.25
    assert not ShadowSampler(0.0, 0.0).choose(100).any()


def test_sampler_rejects_inverted_bounds() -> None:
    with pytest.raises(ValueError, match="shadow fraction"):
        ShadowSampler(0.5, 0.1)
