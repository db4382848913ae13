"""The multi-exit network type: a backbone cut into blocks, an exit head after each block.

Segment k of the served model is exactly `blocks[k]` followed by `heads[k]`, so export can
cut the trained network without knowing which architecture it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

Shape = tuple[int, ...]
UnitsFactory = Callable[[Shape, dict[str, Any]], list[nn.Module]]
HeadFactory = Callable[[Shape, int, bool, dict[str, Any]], nn.Module]


class Normalize(nn.Module):
    """Per-channel standardisation inside the graph, so clients send raw [0, 1] pixels."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.full((1, channels, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, channels, 1, 1), 0.5))

    def set_stats(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Use the training data's statistics; kept as buffers so checkpoints carry them."""
        self.mean.copy_(torch.tensor(mean, dtype=torch.float32).view_as(self.mean))
        self.std.copy_(torch.tensor(std, dtype=torch.float32).clamp_min(1e-3).view_as(self.std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture: its backbone units, its heads, where exits go."""

    units: UnitsFactory
    head: HeadFactory
    options: dict[str, Any]
    percentiles: tuple[float, ...] | None = None
    cuts: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ArchConfig:
    """Everything needed to rebuild the same network (and load its weights) later."""

    arch: str
    input_shape: tuple[int, int, int]
    num_classes: int
    cuts: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)
    unit_macs: tuple[int, ...] = ()


class MultiExitNet(nn.Module):
    """`blocks[k]` maps segment k's input to its hidden state; `heads[k]` maps that to logits."""

    def __init__(self, blocks: list[nn.Module], heads: list[nn.Module], config: ArchConfig) -> None:
        super().__init__()
        if len(blocks) != len(heads) or not blocks:
            raise ValueError("need one head per block and at least one block")
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleList(heads)
        self.config = config

    @property
    def num_exits(self) -> int:
        return len(self.blocks)

    @property
    def normalize(self) -> Normalize:
        """The input normalisation layer, which every architecture puts in its first block."""
        for module in self.blocks[0].modules():
            if isinstance(module, Normalize):
                return module
        raise TypeError(f"{self.config.arch}: first block has no Normalize layer")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit, in order (training and evaluation see all of them)."""
        outputs = []
        for block, head in zip(self.blocks, self.heads, strict=True):
            x = block(x)
            outputs.append(head(x))
        return outputs
