"""What fidelity control needs to remember about rows in flight: their trail.

Per row: its surety and label at every early exit it passed, the exit that answered it
and the chance it is observed (0 = not evidence: a request with overrides; 1 = a row
under the default policy that runs to the last exit anyway; the shadow fraction = an
early answer sent on as a shadow). Columns of numpy arrays that ride in a packet and
are gathered with its rows, so nothing is per row in Python. Packets of a version
without fidelity control carry no trail at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass
class Trail:
    """Columns for the rows of one packet or batch, in row order."""

    surety: FloatArray  # (rows, early exits)
    label: IntArray  # (rows, early exits)
    answered: IntArray  # (rows,) the exit whose answer the client got (last = not early)
    inclusion: FloatArray  # (rows,) chance the row is observed; 0 = not evidence

    @classmethod
    def fresh(cls, rows: int, early: int, observed: bool) -> Trail:
        """Rows entering stage 0: nothing seen yet, answered at the last exit so far."""
        return cls(
            np.zeros((rows, early), np.float64),
            np.full((rows, early), -1, np.int64),
            np.full(rows, early, np.int64),
            np.full(rows, 1.0 if observed else 0.0, np.float64),
        )

    def __len__(self) -> int:
        return len(self.answered)

    def take(self, idx: IntArray) -> Trail:
        return Trail(self.surety[idx], self.label[idx], self.answered[idx], self.inclusion[idx])

    @classmethod
    def concat(cls, parts: list[Trail]) -> Trail:
        if len(parts) == 1:
            return parts[0]
        return cls(
            np.concatenate([p.surety for p in parts]),
            np.concatenate([p.label for p in parts]),
            np.concatenate([p.answered for p in parts]),
            np.concatenate([p.inclusion for p in parts]),
        )
