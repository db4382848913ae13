"""Plain data passed between the HTTP layer and the data plane (no framework types)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from service.text import TextRows

PolicyKind = Literal["confidence", "entropy", "margin", "patience"]


@dataclass(frozen=True)
class PolicyOverride:
    """A request's `parameters` that change when its samples exit; None keeps the default.

    threshold applies to every exit (confidence >= t, entropy <= t, margin >= t);
    patience is the k of PABEE; max_exit caps the deepest exit (0-based);
    full_depth runs every sample to the last exit.
    """

    policy: PolicyKind | None = None
    threshold: float | None = None
    patience: int | None = None
    max_exit: int | None = None
    full_depth: bool = False


@dataclass(frozen=True)
class InferenceInput:
    """One request's samples, already decoded and checked against the model input."""

    model: str
    version: str | None
    data: npt.NDArray[np.float32] | TextRows  # (batch, *input shape), or tokenised texts
    policy: PolicyOverride = field(default_factory=PolicyOverride)
    request_id: str = ""


@dataclass(frozen=True)
class InferenceResult:
    """Rows in request order: each sample's answer and the exit that gave it."""

    model: str
    version: str
    label: npt.NDArray[np.int64]  # (batch,)
    probabilities: npt.NDArray[np.float32]  # (batch, classes)
    confidence: npt.NDArray[np.float32]  # (batch,)
    exit_index: npt.NDArray[np.int32]  # (batch,)
