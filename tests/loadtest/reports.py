"""Made-up load reports for tests of what is computed from them."""

from __future__ import annotations

from loadtest.report import Report


def report(rate: float, p50: float = 1.0, exits: tuple[float, ...] = (0.9, 0.1)) -> Report:
    return Report(
        requests=int(rate),
        ok=int(rate),
        elapsed_s=1.0,
        requests_per_s=rate,
        samples_per_s=rate,
        p50_ms=p50,
        p95_ms=p50 * 2,
        p99_ms=p50 * 3,
        max_ms=p50 * 4,
        exit_distribution=list(exits),
        client_cpu=0.0123,
        server_cpu=0.6789,
        machine_cpu=0.91,
    )
