"""Where stage batching matters: many samples go deep, one sample per request.

Two workloads, each under stage, naive and no batching (a fresh server per mode and
round, rounds interleaved across modes): the bundled `mnist` with a stricter confidence
threshold, and `fashion` (the same network on Fashion-MNIST, exits hit later) with its
calibrated thresholds. Each server climbs a ladder of open-loop Poisson rates until p99
passes the bound; at one common rate the scrapes around the run give per-stage batch-size
histograms and segment runs per sample. Fidelity control is off, so the thresholds stay
put and no shadow rows ride the stages.

    python -m loadtest.benchdeep --quick   # a smoke run, printed and written under build/
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from loadtest.batchscrape import Batches, between, past_first_pct, pooled, scrape, settled
from loadtest.benchcpu import SCHEDULING, STATIC_ENV
from loadtest.benchsteps import Load, Params, Step, poisson, rounds, url_of, warm
from loadtest.client import EncodedRequest
from loadtest.deepdoc import deep_section
from loadtest.figures import Json, Results, finite, per_round, spread
from loadtest.machine import facts
from loadtest.report import Report
from loadtest.server import LiveServer, running_server
from models.data import load_fashion_mnist, load_mnist
from models.paths import (
    BENCH_DEEP_MODEL,
    DEFAULT_MODEL,
    bundled_bench_repository,
    bundled_repository,
)

__all__ = ["Ladder", "deep_section", "run_deep"]

STRICT_THRESHOLD = 0.9999  # on mnist: most samples pass the first exit (sweep in benchmarks.md)
P99_BOUND_MS = 50.0
RATES = (50.0, 100.0, 150.0, 200.0, 300.0, 400.0, 600.0, 800.0, 1200.0, 1600.0)
HIST_RATE = 150.0  # requests/s at which every mode's batches are compared
QUICK = {"seconds": 1.0, "rounds": 1, "samples": 512}
QUICK_OUT = Path("build/bench-deep-quick/deep.json")


@dataclass(frozen=True)
class Ladder:
    """The open-loop rates to climb (requests/s, one sample each), the p99 bound they are
    held to, the rate whose batches are compared, and how long each rate runs."""

    rates: tuple[float, ...] = RATES
    bound_ms: float = P99_BOUND_MS
    hist_rate: float = HIST_RATE
    seconds: float = 3.0

    def __post_init__(self) -> None:
        if self.hist_rate not in self.rates:
            raise ValueError(f"hist_rate {self.hist_rate} is not one of the rates {self.rates}")
        if list(self.rates) != sorted(set(self.rates)):
            raise ValueError(f"rates must increase: {self.rates}")


@dataclass(frozen=True)
class Workload:
    """A model, the request parameters that set its policy, and the samples it is sent."""

    name: str
    repo: Path
    model: str
    params: Params
    load: Load


@dataclass
class Climb:
    """One server's ladder: a point per rate run, and what the server batched at each."""

    hist_rate: float
    points: list[Json] = field(default_factory=list)
    by_rate: dict[float, Batches] = field(default_factory=dict)

    @property
    def batches(self) -> Batches | None:
        """At the rate every mode is compared at."""
        return self.by_rate.get(self.hist_rate)

    def at_limit(self) -> Batches | None:
        """At the highest rate that held the bound."""
        return self.by_rate.get(self.limit()["rate"])

    def limit(self) -> Json:
        """The highest rate that held the bound (and every rate below it); zeros if none."""
        best: Json = {"rate": 0.0, "samples_per_s": 0.0, "p99_ms": None}
        for p in self.points:
            if not p["held"]:
                break
            best = p
        return best


def run_deep(
    res: Results,
    repo: Path,
    load: Load,
    bench_repo: Path | None = None,
    ladder: Ladder | None = None,
    threshold: float = STRICT_THRESHOLD,
) -> None:
    """Both workloads under every scheduling mode; folds into res.extra["deep"].

    `repo` holds `mnist` and `load` its test samples (as `make bench` has them);
    `bench_repo` holds `fashion` (default: models/bench-repository); Fashion-MNIST's test
    samples are read here, as many as `load` has. Rounds: res.run["rounds"].
    """
    ladder = ladder or Ladder(seconds=max(1.0, float(res.run["seconds"]) / 2))
    folded = []
    for w in workloads(repo, load, bench_repo or bundled_bench_repository(), threshold):
        click.echo(f"deep exits: {w.name}")
        climbs: dict[str, list[Climb]] = {mode: [] for mode in SCHEDULING}
        steps = {mode: mode_step(w, mode, ladder, climbs[mode]) for mode in SCHEDULING}
        rounds(steps, res.run["rounds"])
        folded.append(fold_workload(w.name, w.model, w.params, climbs))
    res.extra["deep"] = deep_json(ladder, res.run["rounds"], folded)


def workloads(repo: Path, load: Load, bench_repo: Path, threshold: float) -> list[Workload]:
    """`mnist` held to `threshold` on `load`; `fashion` as calibrated, as many samples."""
    fashion, n = load_fashion_mnist("t10k"), len(load.x)
    strict = {"threshold": threshold}
    return [
        Workload(f"mnist, threshold {threshold}", repo, DEFAULT_MODEL, strict, load),
        Workload(
            "fashion, calibrated thresholds",
            bench_repo,
            BENCH_DEEP_MODEL,
            None,
            Load(fashion.x[:n], fashion.y[:n], load.folder / BENCH_DEEP_MODEL),
        ),
    ]


def deep_json(ladder: Ladder, n_rounds: int, workloads: list[Json]) -> Json:
    """What deep_section renders: the ladder's settings and every workload's figures."""
    doc: Json = finite(
        {
            "p99_bound_ms": ladder.bound_ms,
            "rates": list(ladder.rates),
            "hist_rate": ladder.hist_rate,
            "rate_seconds": ladder.seconds,
            "rounds": n_rounds,
            "modes": list(SCHEDULING),
            "workloads": workloads,
        }
    )
    return doc


def mode_step(w: Workload, mode: str, ladder: Ladder, sink: list[Climb]) -> Step:
    """A fresh server in `mode`, warmed, then the ladder; the climb goes to `sink`."""
    bodies = w.load.bodies(1, w.params)
    reqs = w.load.requests(1, w.params)

    def step() -> None:
        env = {**STATIC_ENV, "EXITSERVE_SCHEDULING": mode}
        with running_server(w.repo, w.load.folder, env=env) as srv:
            warm(srv, w.model, bodies)
            got = climb(srv, w.model, reqs, ladder)
        lim = got.limit()
        click.echo(
            f"  {mode:>6}: {lim['rate']:.0f} req/s held p99 <= {ladder.bound_ms:g} ms "
            f"({lim['samples_per_s']:.0f} samples/s); {_batch_line(got.batches)}"
        )
        sink.append(got)

    return step


def climb(srv: LiveServer, model: str, reqs: Sequence[EncodedRequest], ladder: Ladder) -> Climb:
    """Rate after rate until one breaks the bound, always as far as the common rate; each
    rate's batches from the scrapes around its run."""
    url, got = url_of(srv, model), Climb(ladder.hist_rate)
    settled(srv.metrics_url, model)  # the warm-up's last answers are not this climb's
    for rate in ladder.rates:
        before = scrape(srv.metrics_url, model)
        rep = poisson(reqs, rate, ladder.seconds)(url)
        after = scrape(srv.metrics_url, model)
        got.points.append(point(rate, rep, ladder.bound_ms))
        got.by_rate[rate] = between(before, after)
        if not got.points[-1]["held"] and rate >= ladder.hist_rate:
            break
    return got


def point(rate: float, rep: Report, bound_ms: float) -> Json:
    """One rate's figures; `held`: every request answered, and p99 within the bound."""
    errors = sum(rep.errors.values()) + rep.requests - rep.ok
    return {
        "rate": rate,
        "samples_per_s": rep.samples_per_s,
        "p99_ms": rep.p99_ms,
        "errors": errors,
        "client_cpu_pct": rep.client_cpu * 100,
        "held": bool(errors == 0 and rep.ok > 0 and rep.p99_ms <= bound_ms),
    }


def _batch_line(b: Batches | None) -> str:
    if b is None or not b.samples:
        return "no batches measured"
    means = ", ".join(f"{r / c:.1f}" if c else "-" for r, c in zip(b.rows, b.runs, strict=True))
    return (
        f"mean batch per stage [{means}], rows/sample {b.rows_per_sample():.2f}, "
        f"runs/sample {b.runs_per_sample():.2f}"
    )


def fold_workload(name: str, model: str, params: Params, climbs: dict[str, list[Climb]]) -> Json:
    """Every mode's rounds as spreads and pooled histograms, and stage's ratio to each."""
    modes = {mode: fold_mode(cs) for mode, cs in climbs.items()}
    stage = [c.limit()["samples_per_s"] for c in climbs.get("stage", [])]
    for mode, cs in climbs.items():
        if mode != "stage":
            mine = [c.limit()["samples_per_s"] for c in cs]
            modes[mode]["stage_over_this"] = per_round(stage, mine, "ratio")
    return {"name": name, "model": model, "params": dict(params or {}), "modes": modes}


def fold_mode(climbs: Sequence[Climb]) -> Json:
    """One mode's rounds: the limit's spread, the per-sample counts, pooled histograms."""
    limits = [c.limit() for c in climbs]
    measured = _measured(c.batches for c in climbs)
    limit = _measured(c.at_limit() for c in climbs)
    return {
        "max_rate": spread([lim["rate"] for lim in limits]),
        "samples_per_s": spread([lim["samples_per_s"] for lim in limits]),
        "p99_ms": spread([lim["p99_ms"] for lim in limits if lim["p99_ms"] is not None]),
        "rows_per_sample": spread([b.rows_per_sample() for b in measured]),
        "runs_per_sample": spread([b.runs_per_sample() for b in measured]),
        "limit_runs_per_sample": spread([b.runs_per_sample() for b in limit]),
        "limit_mean_batch": [s["mean_batch"] for s in pooled(limit)["stages"]],
        **pooled(measured),
        "past_first_pct": past_first_pct(measured),
        "ladders": [c.points for c in climbs],
    }


def _measured(batches: Iterable[Batches | None]) -> list[Batches]:
    return [b for b in batches if b is not None and b.samples]


@click.command()
@click.option("--quick", is_flag=True, help="one round, 1 s per rate, four rates, 512 samples")
@click.option("--rounds", "n_rounds", default=3, show_default=True)
@click.option("--seconds", default=6.0, show_default=True, help="per rate: half of this")
@click.option("--samples", default=4000, show_default=True)
@click.option("--bound-ms", default=P99_BOUND_MS, show_default=True, help="the p99 bound")
@click.option("--threshold", default=STRICT_THRESHOLD, show_default=True, help="mnist's")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="json written here")
def main(
    quick: bool,
    n_rounds: int,
    seconds: float,
    samples: int,
    bound_ms: float,
    threshold: float,
    out: Path | None,
) -> None:
    """The deep-exit scenario alone: prints its section and writes its json."""
    if quick:
        n_rounds, seconds, samples = int(QUICK["rounds"]), QUICK["seconds"], int(QUICK["samples"])
    rates = (50.0, 100.0, 200.0, 400.0) if quick else RATES
    ladder = Ladder(rates, bound_ms, 100.0 if quick else HIST_RATE, max(1.0, seconds / 2))
    run = {"seconds": seconds, "rounds": n_rounds, "samples": samples}
    res = Results(run=run, machine=facts())
    test = load_mnist("t10k")
    with tempfile.TemporaryDirectory() as tmp:
        load = Load(test.x[:samples], test.y[:samples], Path(tmp))
        run_deep(res, bundled_repository(), load, ladder=ladder, threshold=threshold)
    doc: Json = {"run": run, "machine": res.machine, "derived": res.extra}
    out = out or QUICK_OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    click.echo("\n".join(deep_section(doc)))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
