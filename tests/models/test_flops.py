"""MAC counting against hand-computed figures."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from models.architectures import build_model  # noqa: E402
from models.flops import count_chain_macs, count_macs  # noqa: E402


def test_conv_macs_match_hand_count() -> None:
    # 8 output channels x 10 x 10 positions, each a 3x3 window over 3 input channels
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(conv, torch.zeros(1, 3, 10, 10)) == 8 * 10 * 10 * (3 * 3 * 3)


def test_strided_grouped_conv_macs() -> None:
    # 6x6 input, 3x3 kernel, stride 2, no padding -> 2x2 output; groups=2 halves the fan-in
    conv = nn.Conv2d(4, 8, 3, stride=2, groups=2)
    assert count_macs(conv, torch.zeros(1, 4, 6, 6)) == 8 * 2 * 2 * (2 * 3 * 3)


def test_linear_and_batchnorm_macs() -> None:
    net = nn.Sequential(nn.Linear(20, 5), nn.BatchNorm1d(5))
    assert count_macs(net, torch.zeros(2, 20)) == 20 * 5 + 5


def test_count_is_per_sample_whatever_the_batch() -> None:
    conv = nn.Conv2d(1, 4, 5)
    one = count_macs(conv, torch.zeros(1, 1, 28, 28))
    assert one == 4 * 24 * 24 * 25
    assert count_macs(conv, torch.zeros(16, 1, 28, 28)) == one


def test_uncounted_layers_are_free() -> None:
    assert count_macs(nn.Sequential(nn.ReLU(), nn.Flatten()), torch.zeros(1, 3, 4, 4)) == 0


def test_chain_costs_add_up_to_the_whole() -> None:
    units = [nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, stride=2)]
    costs, activations = count_chain_macs(units, torch.zeros(1, 1, 8, 8))
    assert costs == [4 * 8 * 8 * 9, 4 * 4 * 4 * 36]
    assert activations[-1].shape == (1, 4, 4, 4)
    assert sum(costs) == count_macs(nn.Sequential(*units), torch.zeros(1, 1, 8, 8))


def test_model_records_counted_unit_costs() -> None:
    model = build_model("resnet", (1, 28, 28), 10, width=4, depth=(1, 1, 1))
    stem_conv = 4 * 28 * 28 * 9  # 1 -> 4 channels, 3x3, same padding
    stem_bn = 4 * 28 * 28
    assert model.config.unit_macs[0] == stem_conv + stem_bn
    assert len(model.config.unit_macs) == 4
