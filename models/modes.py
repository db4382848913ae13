"""The training modes for a pretrained backbone: heads only, and two-stage.

Heads only leaves the backbone exactly as pretrained (eval mode, no gradients) and trains
every exit head on its frozen features, so the final exit answers as the backbone's own
representation allows. Two-stage first fine-tunes the backbone with the final head alone,
then freezes it and trains the early heads, which then never pull the shared features
towards their own needs (DeeBERT). Both run through `train._run_epochs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch.nn import functional as F

from models.batches import as_state
from models.multiexit import MultiExitNet
from models.train import (
    TrainConfig,
    TrainData,
    TrainResult,
    _run_epochs,
    exit_losses,
    param_groups,
    resolve_weights,
)


def train_heads(
    model: MultiExitNet,
    data: TrainData,
    config: TrainConfig,
    device: torch.device,
    result: TrainResult,
    heads: Sequence[int] | None = None,
) -> None:
    """Train `heads` (all by default) on the frozen backbone; every other weight stays put."""
    chosen = list(range(model.num_exits)) if heads is None else list(heads)
    weights = resolve_weights(config, model.num_exits)
    model.eval().requires_grad_(False)
    for k in chosen:
        model.heads[k].train().requires_grad_(True)

    def loss_fn(xb: tuple[torch.Tensor, ...], yb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            states, state = [], as_state(xb)
            for block in model.blocks:
                state = block(state)
                states.append(state)
        logits = [head(s) for head, s in zip(model.heads, states, strict=True)]
        losses = exit_losses(logits, yb, config.distill)
        total = sum((weights[k] * losses[k] for k in chosen), torch.zeros((), device=device))
        return total / sum(weights[k] for k in chosen)

    groups = param_groups(model, config, chosen)
    _run_epochs(groups, loss_fn, data, config, device, "heads", result)
    model.requires_grad_(True)


def train_two_stage(
    model: MultiExitNet,
    data: TrainData,
    config: TrainConfig,
    device: torch.device,
    result: TrainResult,
) -> None:
    """Fine-tune the backbone with the final exit only, then the early heads on top of it."""
    model.train().requires_grad_(False)
    model.blocks.requires_grad_(True)
    model.heads[-1].requires_grad_(True)

    def final_loss(xb: tuple[torch.Tensor, ...], yb: torch.Tensor) -> torch.Tensor:
        state = as_state(xb)
        for block in model.blocks:
            state = block(state)
        return F.cross_entropy(model.heads[-1](state), yb)

    groups = param_groups(model, config, [model.num_exits - 1])
    _run_epochs(groups, final_loss, data, config, device, "two-stage: final", result)
    early = list(range(model.num_exits - 1))
    if early:
        heads_config = replace(config, exit_weights=None)
        train_heads(model, data, heads_config, device, result, heads=early)
    model.requires_grad_(True)
