"""`make soak`: a bounded soak on loopback; memory and latency per window, and their trends.

A leak or a queue that never drains shows as a slope: we fit one over the windows after
warm-up and report it beside the figures, in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from loadtest.client import encode
from loadtest.generators import Bounds, open_loop
from loadtest.report import Report, replace_section
from loadtest.server import running_server
from models.data import load_mnist
from models.paths import bundled_repository

BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"


@dataclass(frozen=True)
class Window:
    """One soak window: when, how much memory the server held, how it answered."""

    t_s: float
    rss_mb: float
    report: Report


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def slope_per_min(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (seconds), per minute."""
    if len(xs) < 2:
        return 0.0
    return float(np.polyfit(np.array(xs), np.array(ys), 1)[0] * 60.0)


def soak(minutes: float, window_s: float, rate: float, model: str) -> list[Window]:
    """Open-loop load at `rate` req/s for `minutes`, one report per window."""
    test = load_mnist("t10k")
    reqs = [encode(test.x[i : i + 4], test.y[i : i + 4], "binary", None) for i in range(0, 4000, 4)]
    windows: list[Window] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(bundled_repository(), Path(tmp)) as srv,
    ):
        url = f"{srv.url}/v2/models/{model}/infer"
        start = time.monotonic()
        while time.monotonic() - start < minutes * 60:
            bounds = Bounds(duration_s=window_s, timeout_s=10.0)
            report = asyncio.run(open_loop(url, reqs, rate, bounds, progress=False))
            windows.append(Window(time.monotonic() - start, rss_mb(srv.process.pid), report))
            click.echo(f"{windows[-1].t_s:6.0f}s rss {windows[-1].rss_mb:.0f} MB  {report.line()}")
    return windows


def render(windows: list[Window], minutes: float, rate: float) -> str:
    """The soak section of docs/reliability.md."""
    steady = windows[1:] or windows
    ts = [w.t_s for w in steady]
    lines = [
        f"Command: `make soak` (python -m loadtest.soak --minutes {minutes} "
        f"--rate {rate}); bundled `mnist` model, 4 samples per binary request, open loop.",
        "",
        "| t (s) | RSS MB | requests | errors | p50 ms | p99 ms | samples/s |",
        "| ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for w in windows:
        r = w.report
        lines.append(
            f"| {w.t_s:.0f} | {w.rss_mb:.1f} | {r.requests} | {r.errors or 0} | "
            f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.samples_per_s:.0f} |"
        )
    rss_slope = slope_per_min(ts, [w.rss_mb for w in steady])
    p99_slope = slope_per_min(ts, [w.report.p99_ms for w in steady])
    lines += [
        "",
        f"Trend after the first window: RSS {rss_slope:+.2f} MB/min, p99 {p99_slope:+.3f} ms/min.",
    ]
    return "\n".join(lines)


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("docs/reliability.md"))
@click.option("--minutes", default=3.0, show_default=True)
@click.option("--window", default=15.0, show_default=True, help="seconds per window")
@click.option("--rate", default=60.0, show_default=True, help="requests per second")
@click.option("--model", default="mnist", show_default=True)
def main(out: Path, minutes: float, window: float, rate: float, model: str) -> None:
    """Soak the server and write the figures between the soak markers of `out`."""
    section = render(soak(minutes, window, rate, model), minutes, rate)
    text = out.read_text() if out.exists() else f"# Reliability\n\n## Soak\n\n{BEGIN}\n{END}\n"
    out.write_text(replace_section(text, BEGIN, END, section))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
