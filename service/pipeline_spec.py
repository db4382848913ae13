"""What a model version's pipeline needs to know about it (service/scheduler.py)."""

from __future__ import annotations

from dataclasses import dataclass

from service.settings import BatchingConfig

__all__ = ["PipelineSpec"]


@dataclass(frozen=True)
class PipelineSpec:
    """What a pipeline needs to know about its model version."""

    model: str
    version: str
    classes: int
    macs: tuple[int, ...]  # per segment
    batching: BatchingConfig
    max_queue_samples: int
    row_bytes: int = 0  # charged per admitted row besides its input (`row_state_bytes`)
    chain_batches: bool = False  # naive early exit: a batch's survivors skip the next queue
    inline_max_s: float = 0.0  # run the only request in flight inline if this quick
