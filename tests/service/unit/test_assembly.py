"""A batch of one whole packet is put together by a shortcut (`assembly._whole_packet`);
it must give exactly what the general path (`assembly._gather`) gives for that claim."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from service.assembly import Batch, _gather, _whole_packet
from service.jobs import Claim, Job, Packet, ShadowJob, Span
from service.policies import ExitPolicy
from service.trail import Trail
from tests.service.unit.fakes import CLASSES, FakeRunner, rows

POLICY = ExitPolicy("confidence", (0.5, 0.5, 0.5), last_exit=2)


def _job(name: str, size: int) -> Job:
    return Job.create(name, "m", "1", size, CLASSES, POLICY, math.inf)


def _entry(early: int | None) -> Packet:
    """A request's rows entering stage 0, watched (`early` exits) or not."""
    return Packet.entry(_job("a", 3), rows([0, 1, 2], [1, 2, 3]), 0.0, early)


def _survivors(shadow_tail: bool) -> Packet:
    """Survivors of two requests (one of them twice) at a later stage, with their state
    and trail; optionally a shadow span after them."""
    a, b = _job("a", 4), _job("b", 2)
    spans = [Span(a, np.array([0, 2])), Span(b, np.array([1])), Span(a, np.array([3]))]
    if shadow_tail:
        spans.append(Span(ShadowJob.of("m", "1", POLICY), np.array([0, 1])))
    n = sum(len(s.rows) for s in spans)
    trail = Trail.fresh(n, 2, True)
    trail.surety[:, 0] = np.arange(n) / 10
    packet = Packet(rows([1] * n, [2] * n), spans, np.arange(n), np.ones(n, np.int32), 0.0)
    packet.trail = trail
    return packet


def _same(fast: Batch, general: Batch) -> None:
    assert [(p.job, p.lo, p.hi, p.rows.tolist()) for p in fast.pieces] == [
        (p.job, p.lo, p.hi, p.rows.tolist()) for p in general.pieces
    ]
    np.testing.assert_array_equal(fast.x, general.x)
    np.testing.assert_array_equal(fast.pred, general.pred)
    np.testing.assert_array_equal(fast.streak, general.streak)
    assert fast.pred.dtype == general.pred.dtype
    assert fast.streak.dtype == general.streak.dtype
    assert (fast.real, len(fast.waits)) == (general.real, len(general.waits))
    assert (fast.trail is None) == (general.trail is None)
    if fast.trail is not None and general.trail is not None:
        for column in ("surety", "label", "answered", "inclusion"):
            np.testing.assert_array_equal(
                getattr(fast.trail, column), getattr(general.trail, column)
            )


@pytest.mark.parametrize(
    "make",
    [
        lambda: _entry(None),
        lambda: _entry(2),
        lambda: _survivors(False),
        lambda: _survivors(True),
    ],
    ids=["entry", "entry-watched", "survivors", "survivors-and-shadows"],
)
def test_the_shortcut_matches_the_general_assembly(make: object) -> None:
    async def test() -> None:
        packet = make()  # type: ignore[operator]
        claim = Claim(packet, 0, packet.size)
        fast = _whole_packet(claim)
        general = _gather(FakeRunner(), [claim])
        assert fast is not None
        assert general is not None
        _same(fast, general)

    asyncio.run(test())


def test_the_shortcut_leaves_parts_and_dead_requests_to_the_general_path() -> None:
    async def test() -> None:
        packet = _survivors(False)
        assert _whole_packet(Claim(packet, 1, packet.size)) is None
        assert _whole_packet(Claim(packet, 0, packet.size - 1)) is None
        packet.spans[1].job.dead = True
        assert _whole_packet(Claim(packet, 0, packet.size)) is None

    asyncio.run(test())
