"""Exit placement at percentiles of cumulative backbone cost."""

from __future__ import annotations

import pytest

from models.placement import PlacementError, cumulative_fractions, group_costs, place_exits


def test_cumulative_fractions() -> None:
    assert cumulative_fractions([10, 10, 30, 50]) == [0.1, 0.2, 0.5, 1.0]


def test_exits_go_to_the_nearest_boundary() -> None:
    costs = [10, 10, 30, 50]  # boundaries at 10%, 20%, 50%, 100%
    assert place_exits(costs, [0.15 + 1e-9, 0.45, 1.0]) == [2, 3, 4]
    assert place_exits(costs, [0.12, 0.6]) == [1, 3, 4]


def test_final_exit_is_always_at_the_end() -> None:
    assert place_exits([1, 1, 1, 1], [0.5])[-1] == 4


def test_ties_prefer_the_cheaper_boundary() -> None:
    assert place_exits([10, 10, 10, 10], [0.375, 1.0]) == [1, 4]  # 25% and 50% are equally near


def test_two_percentiles_on_one_boundary_fail() -> None:
    with pytest.raises(PlacementError, match="already placed"):
        place_exits([10, 80, 10], [0.05, 0.08, 1.0])


@pytest.mark.parametrize("percentiles", [[0.5, 0.3, 1.0], [0.0, 1.0], [0.5, 1.2], []])
def test_bad_percentiles_fail(percentiles: list[float]) -> None:
    with pytest.raises(PlacementError):
        place_exits([1, 2, 3, 4], percentiles)


def test_group_costs() -> None:
    assert group_costs([1, 2, 3, 4], [2, 3, 4]) == [3, 3, 4]


def test_resnet_exits_land_near_the_requested_percentiles() -> None:
    pytest.importorskip("torch")
    from models.architectures import build_model

    model = build_model("resnet", (1, 28, 28), 10, percentiles=(0.15, 0.4, 0.7, 1.0))
    fractions = cumulative_fractions(model.config.unit_macs)
    reached = [fractions[c - 1] for c in model.config.cuts]
    assert len(model.blocks) == 4
    assert reached[-1] == 1.0
    for got, want in zip(reached[:-1], (0.15, 0.4, 0.7), strict=True):
        assert abs(got - want) < 0.1, (got, want)
