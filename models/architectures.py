"""The registry of multi-exit architectures and the one function that builds them.

An architecture is a registered pair of factories (timm's pattern): one builds the backbone
as a chain of small *units*, the other builds an exit head for a given hidden shape. The
blocks are groups of consecutive units, cut where `placement` puts the exits by counted
cost, so the same factories serve any exit layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from models import nets
from models.flops import count_chain_macs
from models.multiexit import ArchConfig, ArchSpec, MultiExitNet
from models.placement import place_exits

REGISTRY: dict[str, ArchSpec] = {}


def register(name: str, spec: ArchSpec) -> None:
    """Add an architecture under `name` (tests parametrise over every registered one)."""
    REGISTRY[name] = spec


def build_model(
    arch: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    percentiles: Sequence[float] | None = None,
    cuts: Sequence[int] | None = None,
    **options: Any,
) -> MultiExitNet:
    """Build `arch`, placing exits at cost `percentiles` (or at explicit unit `cuts`)."""
    if arch not in REGISTRY:
        raise KeyError(f"unknown architecture {arch!r}; known: {sorted(REGISTRY)}")
    spec = REGISTRY[arch]
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise KeyError(f"{arch} has no options {unknown}; known: {sorted(spec.options)}")
    opts = {**spec.options, **options}
    units = spec.units(input_shape, opts)
    costs, activations = count_chain_macs(units, torch.zeros(1, *input_shape))
    cuts = _resolve_cuts(spec, costs, percentiles, cuts)
    starts = [0, *cuts[:-1]]
    blocks: list[nn.Module] = [
        nn.Sequential(*units[a:b]) for a, b in zip(starts, cuts, strict=True)
    ]
    heads = [
        spec.head(tuple(activations[b - 1].shape[1:]), num_classes, b == len(units), opts)
        for b in cuts
    ]
    config = ArchConfig(arch, input_shape, num_classes, tuple(cuts), opts, tuple(costs))
    return MultiExitNet(blocks, heads, config)


def _resolve_cuts(
    spec: ArchSpec,
    costs: list[int],
    percentiles: Sequence[float] | None,
    cuts: Sequence[int] | None,
) -> list[int]:
    """Explicit cuts win; else place exits at the given (or the spec's) cost percentiles."""
    if cuts is None:
        chosen = percentiles if percentiles is not None else spec.percentiles
        cuts = place_exits(costs, chosen) if chosen is not None else spec.cuts
    if cuts is None or list(cuts) != sorted(set(cuts)) or cuts[-1] != len(costs) or cuts[0] < 1:
        raise ValueError(f"cuts must rise strictly to {len(costs)}: {cuts}")
    return list(cuts)


def rebuild(config: ArchConfig) -> MultiExitNet:
    """The same network as `config` describes, with fresh weights (load a state dict next)."""
    return build_model(
        config.arch, config.input_shape, config.num_classes, cuts=config.cuts, **config.options
    )


register("blenet", nets.BLENET)
register("resnet", nets.RESNET)
