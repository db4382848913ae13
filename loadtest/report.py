"""What a load run reports: throughput, latency percentiles, errors, exits and accuracy."""

from __future__ import annotations

import os
import resource
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

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
    client_cpu: float = float("nan")  # the load generator's CPU time / wall time / cores
    server_cpu: float = float("nan")  # the server's, where the caller measured it
    machine_cpu: float = float("nan")  # every process's: other tenants show up here

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def line(self) -> str:
        """A one-line summary for the console."""
        exits = ", ".join(f"{s:.2f}" for s in self.exit_distribution)
        return (
            f"{self.requests} req ({self.ok} ok, errors {self.errors or 0}) "
            f"{self.samples_per_s:.0f} samples/s, p50 {self.p50_ms:.2f} ms, "
            f"p99 {self.p99_ms:.2f} ms, max {self.max_ms:.2f} ms, "
            f"exits [{exits}], accuracy {self.accuracy:.4f}, client CPU {self.client_cpu:.0%}"
        )


def replace_section(text: str, begin: str, end: str, section: str) -> str:
    """`text` with what lies between the markers `begin` and `end` replaced by `section`.

    Measured figures live between markers in hand-written documents, so a re-run rewrites
    them and never the prose around them. Missing markers are an error, not an append.
    """
    head, found_begin, rest = text.partition(begin)
    _, found_end, tail = rest.partition(end)
    if not (found_begin and found_end):
        raise ValueError(f"no {begin} ... {end} section to replace")
    return f"{head}{begin}\n\n{section.strip()}\n\n{end}{tail}"


def cores() -> int:
    """The cores this process may run on (the affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0))


def process_cpu_s() -> float:
    """CPU seconds this process has used, every thread, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_jiffies(stat: Path = Path("/proc/stat")) -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks, from /proc/stat."""
    fields = [int(v) for v in stat.read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def machine_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of all cores busy between two machine_jiffies readings, any process."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else float("nan")


def cpu_share(cpu_s: float, elapsed_s: float) -> float:
    """CPU seconds over a run as a share of every core the machine lends us for that time."""
    return cpu_s / max(elapsed_s, 1e-9) / cores()


def summarise(
    replies: Sequence[Reply],
    labels: Sequence[npt.NDArray[np.int64]],
    elapsed_s: float,
    client_cpu_s: float = float("nan"),
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
        client_cpu=cpu_share(client_cpu_s, elapsed_s),
    )
