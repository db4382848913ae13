"""The concrete architectures: a residual CNN with 3–4 exits and BranchyNet's B-LeNet.

Each is a units factory (the backbone as a chain of small pieces exits may follow) plus a
head factory. Widths and depths are options so tests can build tiny versions of both.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.multiexit import ArchSpec, Normalize, Shape


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convs and a shortcut (1x1 conv where the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(self.body(x) + self.shortcut(x))
        return out


def resnet_units(input_shape: Shape, opts: dict[str, Any]) -> list[nn.Module]:
    """Stem, then `depth[s]` basic blocks per stage; each stage doubles width, halves size."""
    width, depth = int(opts["width"]), [int(d) for d in opts["depth"]]
    stem = nn.Sequential(
        Normalize(input_shape[0]),
        nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    )
    units: list[nn.Module] = [stem]
    c_in = width
    for stage, blocks in enumerate(depth):
        c_out = width * 2**stage
        for b in range(blocks):
            units.append(BasicBlock(c_in, c_out, 2 if stage > 0 and b == 0 else 1))
            c_in = c_out
    return units


def resnet_head(hidden: Shape, num_classes: int, final: bool, opts: dict[str, Any]) -> nn.Module:
    """Final exit: global pooling + linear. Early exits: conv (stride 2) + pool + linear.

    Early exits see features with a small receptive field, so their head keeps a coarse
    spatial grid (about 4x4) instead of pooling it away; that is what lets an exit at ~15%
    of the cost answer most MNIST digits.
    """
    channels, height = hidden[0], hidden[1]
    if final:
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)
        )
    head_width = int(opts["head_width"] or channels)
    reduced = (height + 1) // 2
    pool = max(1, reduced // 4)
    grid = reduced // pool
    return nn.Sequential(
        nn.Conv2d(channels, head_width, 3, 2, 1, bias=False),
        nn.BatchNorm2d(head_width),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(pool, pool),
        nn.Flatten(),
        nn.Linear(head_width * grid * grid, num_classes),
    )


def _conv_stage(c_in: int, c_out: int) -> list[nn.Module]:
    """B-LeNet's 5x5 conv (padding 3, as in BranchyNet's code), 2x2 max-pool, ReLU."""
    return [nn.Conv2d(c_in, c_out, 5, 1, 3), nn.MaxPool2d(2, 2), nn.ReLU(inplace=True)]


def blenet_units(input_shape: Shape, opts: dict[str, Any]) -> list[nn.Module]:
    """LeNet as BranchyNet's B-LeNet has it: three 5x5 conv/pool/ReLU stages and an FC layer."""
    c1, c2, c3 = (int(c) for c in opts["channels"])
    convs = [
        nn.Sequential(Normalize(input_shape[0]), *_conv_stage(input_shape[0], c1)),
        nn.Sequential(*_conv_stage(c1, c2)),
        nn.Sequential(*_conv_stage(c2, c3)),
    ]
    with torch.no_grad():
        flat = nn.Sequential(*convs)(torch.zeros(1, *input_shape)).numel()
    fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, int(opts["fc"])), nn.ReLU(inplace=True))
    return [*convs, fc]


def blenet_head(hidden: Shape, num_classes: int, final: bool, opts: dict[str, Any]) -> nn.Module:
    """B-LeNet's branch: one 3x3 conv, pool, ReLU, linear; the main exit is a single linear."""
    if final:
        return nn.Linear(hidden[0], num_classes)
    channels, height, width = hidden
    branch = int(opts["branch_channels"])
    return nn.Sequential(
        nn.Conv2d(channels, branch, 3, 1, 1),
        nn.MaxPool2d(2, 2),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(branch * (height // 2) * (width // 2), num_classes),
    )


RESNET = ArchSpec(
    units=resnet_units,
    head=resnet_head,
    options={"width": 32, "depth": (2, 2, 2), "head_width": 0},
    percentiles=(0.15, 0.4, 0.7, 1.0),
)

# BranchyNet places B-LeNet's single branch right after the first conv stage.
BLENET = ArchSpec(
    units=blenet_units,
    head=blenet_head,
    options={"channels": (5, 10, 20), "fc": 84, "branch_channels": 10},
    cuts=(1, 4),
)
