"""The registry of multi-exit architectures and the one function that builds them.

An architecture is a registered pair of factories (timm's pattern): one builds the backbone
as a chain of small *units*, the other builds an exit head for a given hidden shape. The
blocks are groups of consecutive units, cut where `placement` puts the exits by counted
cost, so the same factories serve any exit layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from models import nets, textnets
from models.flops import count_chain_macs
from models.multiexit import (
    ArchConfig,
    ArchSpec,
    MultiExitNet,
    Shape,
    State,
    example_input,
    hidden_shape,
)
from models.placement import place_exits
from models.tokenize import TextEncoder

REGISTRY: dict[str, ArchSpec] = {}


def register(name: str, spec: ArchSpec) -> None:
    """Add an architecture under `name` (tests parametrise over every registered one)."""
    REGISTRY[name] = spec


def build_model(
    arch: str,
    input_shape: tuple[int, ...],
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
    if spec.modality == "text":
        input_shape = (int(opts["max_length"]),)
    if cuts is None and percentiles is None and spec.percentiles is None:
        cuts = spec.cuts
    return multi_exit(
        spec.units(input_shape, opts),
        lambda shape, classes, final: spec.head(shape, classes, final, opts),
        example_input(spec.modality, input_shape),
        num_classes,
        percentiles=percentiles if percentiles is not None else spec.percentiles,
        cuts=cuts,
        name=arch,
        options=opts,
        encoder=_encoder(spec, opts),
    )


def _encoder(spec: ArchSpec, opts: dict[str, Any]) -> TextEncoder | None:
    if spec.tokenizer is None:
        return None
    return TextEncoder(spec.tokenizer(opts), int(opts["max_length"]))


def multi_exit(
    units: Sequence[nn.Module],
    head: Callable[[Shape, int, bool], nn.Module],
    example: State,
    num_classes: int,
    *,
    percentiles: Sequence[float] | None = None,
    cuts: Sequence[int] | None = None,
    name: str = "custom",
    options: dict[str, Any] | None = None,
    encoder: TextEncoder | None = None,
) -> MultiExitNet:
    """Bring your own backbone: `units` (an ordered chain) + a head factory -> a MultiExitNet.

    `example` is one input batch: a tensor, or (input ids, attention mask) for a text
    backbone whose units pass (hidden, mask) along. Each unit is run on it once to count
    its cost, and exits go where the running cost crosses `percentiles` (or after the
    explicit unit counts `cuts`); `head(hidden_shape, num_classes, final)` builds each exit.
    A text backbone also needs its `encoder` (tokenizer file and max length).
    The result trains, calibrates and exports through the same pipeline as the built-ins.
    """
    units = list(units)
    costs, activations = count_chain_macs(units, example)
    chosen = _resolve_cuts(costs, percentiles, cuts)
    starts = [0, *chosen[:-1]]
    blocks: list[nn.Module] = [
        nn.Sequential(*units[a:b]) for a, b in zip(starts, chosen, strict=True)
    ]
    heads = [head(hidden_shape(activations[b - 1]), num_classes, b == len(units)) for b in chosen]
    text = isinstance(example, tuple)
    shape = hidden_shape(example)
    config = ArchConfig(
        name,
        shape,
        num_classes,
        tuple(chosen),
        dict(options or {}),
        tuple(costs),
        modality="text" if text else "image",
    )
    return MultiExitNet(blocks, heads, config, encoder)


def _resolve_cuts(
    costs: list[int], percentiles: Sequence[float] | None, cuts: Sequence[int] | None
) -> list[int]:
    """Explicit cuts win; else place exits at the given cost percentiles."""
    if cuts is None and percentiles is not None:
        cuts = place_exits(costs, percentiles)
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
register("minilm", textnets.MINILM)
