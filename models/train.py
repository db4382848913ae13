"""Train a multi-exit network and read out every exit's softmax.

Joint: one optimiser on a weighted sum of all exits' losses, so early exits shape the shared
features. Layer-wise: block k and its head are trained on exit k's loss while blocks before
it stay frozen (weights and batch-norm statistics), moving forward one block at a time.
Heads: only the exit heads learn, on a frozen (pretrained) backbone, whose answers stay
untouched (Apparate's way). Two-stage: fine-tune backbone and final exit on the final loss,
then train the early heads on the frozen result (DeeBERT's way). With `distill` > 0 the
early exits also learn the final exit's softmax (its soft labels carry more than the label).
Runs are reproducible from the seed: weights, shuffling and the LR schedule all derive
from it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from models.batches import Inputs, as_state, batch_tensors, model_inputs
from models.data import Dataset, TextDataset
from models.multiexit import MultiExitNet

ParamGroups = list[dict[str, Any]]
TrainData = tuple[Inputs, npt.NDArray[np.int64]]  # model inputs and labels

LossFn = Callable[[tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor]
log = logging.getLogger(__name__)

# Optimiser steps a run gets when no epoch count is given: the one-cycle schedule needs a few
# hundred steps to converge (2 epochs of 1,300 digits, 22 steps, left the final exit at 24%;
# 110 steps reach 98%), and large data sets still get at least one full pass.
TARGET_STEPS = 500
MAX_AUTO_EPOCHS = 200
SUMMARY_LINES = 10  # per-epoch summary lines per run, at most


@dataclass(frozen=True)
class TrainConfig:
    """How to train; `exit_weights` None means every exit's loss counts equally.

    `epochs` None means "choose from the data": see `auto_epochs`.
    """

    mode: Literal["joint", "layerwise", "heads", "two_stage"] = "joint"
    epochs: int | None = None
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    exit_weights: tuple[float, ...] | None = None
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    progress: bool = True
    # share of an early exit's loss taken by matching the final exit's softmax (0: labels only)
    distill: float = 0.0
    # learning rate of the heads when it should differ from the backbone's (fine-tuning)
    head_lr: float | None = None


@dataclass
class TrainResult:
    """Loss history: one mean per epoch (per stage and epoch for layer-wise) and per step."""

    epoch_losses: list[float] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    epochs: int = 0


def auto_epochs(samples: int, batch_size: int) -> int:
    """Enough epochs for about TARGET_STEPS optimiser steps (at least one pass)."""
    per_epoch = max(1, math.ceil(samples / batch_size))
    return max(1, min(MAX_AUTO_EPOCHS, math.ceil(TARGET_STEPS / per_epoch)))


def resolve_epochs(config: TrainConfig, samples: int) -> TrainConfig:
    """`config` with its epoch count fixed: the given one, else chosen from the data size."""
    if config.epochs is not None:
        return config
    return replace(config, epochs=auto_epochs(samples, config.batch_size))


def pick_device(requested: str) -> torch.device:
    """CUDA when asked for or ("auto") when present; CPU is the target otherwise."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def resolve_weights(config: TrainConfig, num_exits: int) -> list[float]:
    """The per-exit loss weights, checked against the number of exits."""
    weights = list(config.exit_weights) if config.exit_weights else [1.0] * num_exits
    if len(weights) != num_exits or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"need {num_exits} non-negative exit weights, got {weights}")
    return weights


def fit_normalisation(model: MultiExitNet, data: Dataset | TextDataset) -> None:
    """Set the in-graph normalisation to the training data's per-channel mean and std."""
    if not isinstance(data, Dataset) or not model.has_normalize:
        return  # text, or a bring-your-own backbone that normalises its own way
    mean = data.x.mean(axis=(0, 2, 3), dtype=np.float64)
    std = data.x.std(axis=(0, 2, 3), dtype=np.float64)
    model.normalize.set_stats(mean.tolist(), std.tolist())


def _batches(
    inputs: Inputs,
    labels: npt.NDArray[np.int64],
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor]]:
    y = torch.from_numpy(labels)
    order = torch.randperm(len(labels), generator=generator)
    for start in range(0, len(labels), batch_size):
        idx = order[start : start + batch_size]
        yield tuple(t.to(device) for t in batch_tensors(inputs, idx.numpy())), y[idx].to(device)


def _run_epochs(
    params: Sequence[nn.Parameter] | ParamGroups,
    loss_fn: LossFn,
    data: TrainData,
    config: TrainConfig,
    device: torch.device,
    label: str,
    result: TrainResult,
) -> None:
    """AdamW with a one-cycle schedule: converges in the few epochs a CPU can afford.

    `params` may be parameter groups, each with its own peak `lr`. One progress bar for
    the whole run stays on screen when it ends, and a summary line per epoch (at most
    SUMMARY_LINES of them) is logged, so a finished run still shows its course.
    """
    inputs, labels = data
    epochs = config.epochs or auto_epochs(len(labels), config.batch_size)
    generator = torch.Generator().manual_seed(config.seed + len(result.epoch_losses))
    per_epoch = -(-len(labels) // config.batch_size)
    groups = params if params and isinstance(params[0], dict) else [{"params": list(params)}]
    peaks = [float(g.get("lr", config.lr)) for g in groups]  # type: ignore[union-attr, arg-type]
    optimiser = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, peaks, total_steps=epochs * per_epoch)
    every = math.ceil(epochs / SUMMARY_LINES)
    bar = tqdm(total=epochs * per_epoch, desc=label, disable=not config.progress, leave=True)
    with bar, logging_redirect_tqdm():
        for epoch in range(1, epochs + 1):
            bar.set_description(f"{label} epoch {epoch}/{epochs}")
            batches = _batches(inputs, labels, config.batch_size, generator, device)
            losses = [_step(loss_fn, xb, yb, optimiser, schedule, bar) for xb, yb in batches]
            result.step_losses.extend(losses)
            result.epoch_losses.append(float(np.mean(losses)))
            if epoch % every == 0 or epoch == epochs:
                log.info("%s epoch %d/%d: mean loss %.4f", label, epoch, epochs, np.mean(losses))


def _step(
    loss_fn: LossFn,
    xb: tuple[torch.Tensor, ...],
    yb: torch.Tensor,
    optimiser: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    bar: tqdm[None],
) -> float:
    """One optimisation step; returns its loss."""
    loss = loss_fn(xb, yb)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    optimiser.step()
    schedule.step()
    value = float(loss.detach())
    bar.set_postfix(loss=f"{value:.3f}", refresh=False)
    bar.update()
    return value


def train(model: MultiExitNet, data: Dataset | TextDataset, config: TrainConfig) -> TrainResult:
    """Train `model` in place on `data` as `config` says; returns the loss history."""
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = pick_device(config.device)
    config = resolve_epochs(config, len(data))
    fit_normalisation(model, data)
    # NCHW on purpose: torch 2.13's CPU channels_last backward intermittently deadlocks or
    # dies with SIGBUS on narrow nets (seen with a 4-channel stem); it saved only ~10%.
    model.to(device)
    result = TrainResult(device=str(device), epochs=config.epochs or 0)
    started = time.monotonic()
    arrays: TrainData = (model_inputs(model, data), data.y)
    if config.mode == "joint":
        _train_joint(model, arrays, config, device, result)
    elif config.mode == "layerwise":
        _train_layerwise(model, arrays, config, device, result)
    else:
        from models.modes import train_heads, train_two_stage

        run = train_heads if config.mode == "heads" else train_two_stage
        run(model, arrays, config, device, result)
    model.to(torch.device("cpu"))
    model.eval()
    result.seconds = time.monotonic() - started
    return result


def exit_losses(logits: list[torch.Tensor], yb: torch.Tensor, distill: float) -> list[torch.Tensor]:
    """Each exit's loss; early exits mix in KL to the final exit's (detached) softmax."""
    losses = [F.cross_entropy(z, yb) for z in logits]
    if distill <= 0:
        return losses
    teacher = F.softmax(logits[-1].detach(), dim=1)
    for k, z in enumerate(logits[:-1]):
        kl = F.kl_div(F.log_softmax(z, dim=1), teacher, reduction="batchmean")
        losses[k] = (1 - distill) * losses[k] + distill * kl
    return losses


def param_groups(model: MultiExitNet, config: TrainConfig, heads: Sequence[int]) -> ParamGroups:
    """The backbone at `lr`, the chosen heads at `head_lr` (a pretrained backbone wants a
    learning rate small enough not to forget, fresh heads one large enough to learn)."""
    head_lr = config.head_lr or config.lr
    groups: ParamGroups = [
        {"params": [p for k in heads for p in model.heads[k].parameters()], "lr": head_lr}
    ]
    backbone = [p for p in model.blocks.parameters() if p.requires_grad]
    if backbone:
        groups.insert(0, {"params": backbone, "lr": config.lr})
    return groups


def _train_joint(
    model: MultiExitNet,
    data: TrainData,
    config: TrainConfig,
    device: torch.device,
    result: TrainResult,
) -> None:
    weights = resolve_weights(config, model.num_exits)
    model.train()

    def loss_fn(xb: tuple[torch.Tensor, ...], yb: torch.Tensor) -> torch.Tensor:
        losses = exit_losses(model(*xb), yb, config.distill)
        return sum(
            (w * loss for w, loss in zip(weights, losses, strict=True)),
            torch.zeros((), device=device),
        ) / sum(weights)

    groups = param_groups(model, config, range(model.num_exits))
    _run_epochs(groups, loss_fn, data, config, device, "joint", result)


def _train_layerwise(
    model: MultiExitNet,
    data: TrainData,
    config: TrainConfig,
    device: torch.device,
    result: TrainResult,
) -> None:
    for k in range(model.num_exits):
        train_stage(model, k, data, config, result, device)
    model.requires_grad_(True)


def train_stage(
    model: MultiExitNet,
    k: int,
    data: Dataset | TrainData,
    config: TrainConfig,
    result: TrainResult | None = None,
    device: torch.device | None = None,
) -> TrainResult:
    """One layer-wise step: train block k with exit k on top of frozen blocks 0..k-1.

    The frozen blocks stay in eval mode so their batch-norm statistics do not drift, and
    block k with its head is left frozen afterwards, ready for stage k+1.
    """
    result = result if result is not None else TrainResult()
    arrays = (model_inputs(model, data), data.y) if isinstance(data, Dataset) else data
    frozen = nn.Sequential(*model.blocks[:k]).eval().requires_grad_(False)
    stage = nn.Sequential(model.blocks[k], model.heads[k]).train().requires_grad_(True)

    def loss_fn(xb: tuple[torch.Tensor, ...], yb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            hidden = frozen(as_state(xb))
        return F.cross_entropy(stage(hidden), yb)

    label = f"layerwise {k + 1}/{model.num_exits}"
    device = device if device is not None else torch.device("cpu")
    _run_epochs(list(stage.parameters()), loss_fn, arrays, config, device, label, result)
    stage.eval().requires_grad_(False)
    return result


@torch.no_grad()
def exit_probabilities(
    model: MultiExitNet,
    data: Dataset | TextDataset | npt.NDArray[Any],
    batch_size: int = 512,
) -> npt.NDArray[np.float32]:
    """Softmax of every exit for every sample: shape (exits, N, classes), float32."""
    model.eval()
    inputs = model_inputs(model, data)
    chunks = []
    for start in range(0, len(inputs[0]), batch_size):
        idx = np.arange(start, min(start + batch_size, len(inputs[0])))
        logits = model(*batch_tensors(inputs, idx))
        chunks.append(torch.stack([F.softmax(z, dim=1) for z in logits]).numpy())
    return np.concatenate(chunks, axis=1).astype(np.float32)
