"""The multi-exit network type: a backbone cut into blocks, an exit head after each block.

Segment k of the served model is exactly `blocks[k]` followed by `heads[k]`, so export can
cut the trained network without knowing which architecture it is. A block's state is one
tensor (images) or a tuple (hidden, attention mask) for text: every unit of a text
backbone takes and returns that pair, so padding never leaks into a layer or a head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from models.tokenize import TextEncoder

Shape = tuple[int, ...]
State = torch.Tensor | tuple[torch.Tensor, ...]
Modality = Literal["image", "text"]
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
    # text: the units take (input ids, mask); `tokenizer` finds its file from the options
    modality: Modality = "image"
    tokenizer: Callable[[dict[str, Any]], Path] | None = None


@dataclass(frozen=True)
class ArchConfig:
    """Everything needed to rebuild the same network (and load its weights) later.

    `input_shape` is (C, H, W) for images and (max_length,) for text.
    """

    arch: str
    input_shape: tuple[int, ...]
    num_classes: int
    cuts: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)
    unit_macs: tuple[int, ...] = ()
    modality: Modality = "image"


class MultiExitNet(nn.Module):
    """`blocks[k]` maps segment k's input to its hidden state; `heads[k]` maps that to logits."""

    def __init__(
        self,
        blocks: list[nn.Module],
        heads: list[nn.Module],
        config: ArchConfig,
        encoder: TextEncoder | None = None,
    ) -> None:
        super().__init__()
        if len(blocks) != len(heads) or not blocks:
            raise ValueError("need one head per block and at least one block")
        if (config.modality == "text") != (encoder is not None):
            raise ValueError("a text model needs a tokenizer (encoder), an image model none")
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleList(heads)
        self.config = config
        self.encoder = encoder  # how texts become (ids, mask): exported with the model

    @property
    def num_exits(self) -> int:
        return len(self.blocks)

    @property
    def has_normalize(self) -> bool:
        """Whether the first block standardises its input (built-in image nets do)."""
        return any(isinstance(m, Normalize) for m in self.blocks[0].modules())

    @property
    def normalize(self) -> Normalize:
        """The input normalisation layer, which every architecture puts in its first block."""
        for module in self.blocks[0].modules():
            if isinstance(module, Normalize):
                return module
        raise TypeError(f"{self.config.arch}: first block has no Normalize layer")

    def example(self, batch: int = 1) -> State:
        """An input of the right shape and type: zeros for images, a full mask for text."""
        return example_input(self.config.modality, self.config.input_shape, batch)

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit, in order (training and evaluation see all of them)."""
        x: State = inputs[0] if len(inputs) == 1 else tuple(inputs)
        outputs = []
        for block, head in zip(self.blocks, self.heads, strict=True):
            x = block(x)
            outputs.append(head(x))
        return outputs


def example_input(modality: Modality, shape: Shape, batch: int = 1) -> State:
    """What cost counting and export trace: images (batch, *shape); text (ids, mask)."""
    if modality == "text":
        ids = torch.ones(batch, *shape, dtype=torch.int64)
        return ids, torch.ones_like(ids)
    return torch.zeros(batch, *shape)


def hidden_shape(state: State) -> Shape:
    """Shape of one sample's hidden state (the tensor a head reads), without the batch axis."""
    tensor = state[0] if isinstance(state, tuple) else state
    return tuple(int(d) for d in tensor.shape[1:])
