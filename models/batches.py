"""What a model reads, in batches: pixels, or (ids, mask) cut to each batch's longest text.

Shared by training, evaluation and export checks, so that all three feed a model the same
way; text is tokenised by the model's own encoder, as the server will.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from models.data import Dataset, TextDataset
from models.multiexit import MultiExitNet, State

Inputs = tuple[npt.NDArray[np.generic], ...]


def model_inputs(model: MultiExitNet, data: Dataset | TextDataset | npt.NDArray[Any]) -> Inputs:
    """The arrays the model reads: pixels, or (ids, mask) from the model's own tokenizer."""
    if isinstance(data, TextDataset):
        if model.encoder is None:
            raise ValueError(f"{model.config.arch} is not a text model; it cannot read texts")
        return model.encoder.encode(data.texts)
    return (data.x,) if isinstance(data, Dataset) else (np.asarray(data),)


def batch_tensors(inputs: Inputs, idx: npt.NDArray[Any] | torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Rows `idx` of every input; a text batch is cut to its own longest text (padding is per
    batch, as the server does it, so short batches cost less)."""
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(a[np.asarray(idx)])) for a in inputs)
    if len(tensors) == 2 and tensors[1].ndim == 2:
        length = max(1, int(tensors[1].sum(dim=1).max()))
        tensors = tuple(t[:, :length] for t in tensors)
    return tensors


def as_state(tensors: tuple[torch.Tensor, ...]) -> State:
    """What block 0 takes: the tensor itself, or the (ids, mask) tuple."""
    return tensors[0] if len(tensors) == 1 else tensors
