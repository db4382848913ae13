"""Count multiply-accumulates (MACs) per sample by running the network, never by hand.

Forward hooks on the layers that do the arithmetic see the real shapes, so the count follows
any change to widths, strides or input size. Conv and linear layers count exactly; batch
norm and pooling count one MAC per element they touch (small next to convs, but counted so
that a head made of pooling is not free). Activations and residual additions are not
counted: they are memory-bound and cost no multiply.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

MacCounter = Callable[[nn.Module, torch.Tensor, torch.Tensor], int]
# what a unit takes: a tensor, or a tuple such as a text model's (hidden, attention mask)
Example = torch.Tensor | tuple[torch.Tensor, ...]


def _conv_macs(layer: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    assert isinstance(layer, nn.Conv2d | nn.Conv1d)
    per_output = (layer.in_channels // layer.groups) * math.prod(layer.kernel_size)
    return int(out[0].numel()) * per_output


def _linear_macs(layer: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    assert isinstance(layer, nn.Linear)
    return int(out[0].numel()) * layer.in_features


def _elementwise_macs(layer: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    return int(out[0].numel())


def _pool_macs(layer: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    # every input element is read into exactly one (or, for overlap, several) windows
    return max(int(inp[0].numel()), int(out[0].numel()))


COUNTERS: dict[type[nn.Module], MacCounter] = {
    nn.Conv1d: _conv_macs,
    nn.Conv2d: _conv_macs,
    nn.Linear: _linear_macs,
    nn.BatchNorm1d: _elementwise_macs,
    nn.BatchNorm2d: _elementwise_macs,
    nn.MaxPool2d: _pool_macs,
    nn.AvgPool2d: _pool_macs,
    nn.AdaptiveAvgPool2d: _pool_macs,
}


def _counter_for(layer: nn.Module) -> MacCounter | None:
    for kind, counter in COUNTERS.items():
        if type(layer) is kind:
            return counter
    return None


def count_macs(module: nn.Module, example: Example) -> int:
    """MACs per sample of `module(example)`; `example` is one batch (its first sample counts)."""
    total = 0

    def hook(layer: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        nonlocal total
        counter = _counter_for(layer)
        if counter is not None and isinstance(out, torch.Tensor):
            total += counter(layer, args[0], out)

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        was_training = module.training
        module.eval()
        with torch.no_grad():
            module(example)
        module.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    return total


def count_chain_macs(
    units: Iterable[nn.Module], example: Example
) -> tuple[list[int], list[Example]]:
    """MACs of each unit of a sequential chain and the example's activation after each."""
    costs: list[int] = []
    activations: list[Example] = []
    h = example
    for unit in units:
        costs.append(count_macs(unit, h))
        with torch.no_grad():
            unit.eval()
            h = unit(h)
        activations.append(h)
    return costs, activations
