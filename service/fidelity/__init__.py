"""Fidelity control (issue 11): keep early answers faithful to the last exit under drift.

Beside the data path, never in it: the scheduler shadows a sampled share of early answers
to the last exit and records the comparisons; a periodic task calls `step`, which may
return a new immutable `ExitPolicy` to swap in. See controller.py for the loop.
"""

from service.fidelity.config import FidelityConfig, default_target
from service.fidelity.controller import FidelityController
from service.fidelity.records import Adjustment, Snapshot, ThresholdChange
from service.fidelity.scale import surety

__all__ = [
    "Adjustment",
    "FidelityConfig",
    "FidelityController",
    "Snapshot",
    "ThresholdChange",
    "default_target",
    "surety",
]
