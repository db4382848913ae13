"""What a load run reports: throughput, latency percentiles, errors, exits and accuracy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import numpy.typing as npt

from loadtest.client import Reply


@dataclass(frozen=True)
class Report:
    """One run's figures; latencies in milliseconds."""

    requests: int
    ok: int
    elapsed_s: float
    requests_per_s: float
    samples_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int] = field(default_factory=dict)
    exit_distribution: list[float] = field(default_factory=list)
    accuracy: float = float("nan")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def line(self) -> str:
        """A one-line summary for the console."""
        exits = ", ".join(f"{s:.2f}" for s in self.exit_distribution)
        return (
            f"{self.requests} req ({self.ok} ok, errors {self.errors or 0}) "
            f"{self.samples_per_s:.0f} samples/s, p50 {self.p50_ms:.2f} ms, "
            f"p99 {self.p99_ms:.2f} ms, max {self.max_ms:.2f} ms, "
            f"exits [{exits}], accuracy {self.accuracy:.4f}"
        )


def summarise(
    replies: Sequence[Reply], labels: Sequence[npt.NDArray[np.int64]], elapsed_s: float
) -> Report:
    """Fold replies (and the true labels of what each one sent) into a Report."""
    ok = [(r, y) for r, y in zip(replies, labels, strict=True) if r.status == 200]
    lat = np.array([r.latency_s for r in replies] or [0.0]) * 1000.0
    errors = Counter(str(r.status) for r in replies if r.status != 200)
    exits = np.array([e for r, _ in ok for e in r.exits], dtype=np.int64)
    dist = np.bincount(exits).astype(float) / max(1, exits.size) if exits.size else np.array([])
    predicted = np.array([p for r, _ in ok for p in r.labels], dtype=np.int64)
    truth = np.concatenate([y for _, y in ok]) if ok else np.array([], dtype=np.int64)
    accuracy = float((predicted == truth).mean()) if truth.size else float("nan")
    elapsed = max(elapsed_s, 1e-9)
    return Report(
        requests=len(replies),
        ok=len(ok),
        elapsed_s=elapsed_s,
        requests_per_s=len(ok) / elapsed,
        samples_per_s=int(truth.size) / elapsed,
        p50_ms=float(np.percentile(lat, 50)),
        p95_ms=float(np.percentile(lat, 95)),
        p99_ms=float(np.percentile(lat, 99)),
        max_ms=float(lat.max()),
        errors=dict(errors),
        exit_distribution=[float(d) for d in dist],
        accuracy=accuracy,
    )
