"""`make bench`: what early exits buy, measured side by side, written to docs/benchmarks.md.

Every comparison interleaves its configurations round by round in one run, and reports
ratios, so drift in the machine's speed hits both sides alike.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np

from loadtest import gpubench, inprocess
from loadtest.benchdoc import (
    C1,
    C1_ASYNC,
    C1_NO_INLINE,
    EE_1,
    EE_32,
    FD_1,
    FD_32,
    Results,
    write_doc,
)
from loadtest.client import EncodedRequest, encode
from loadtest.generators import Bounds, closed_loop, open_loop, sequential
from loadtest.report import Report
from loadtest.server import running_server
from models.data import load_mnist
from models.paths import bundled_repository
from service.sessions import cuda_available

SCHEDULING = ("stage", "naive", "none")
CPU_ENV = {"EXITSERVE_DEVICE": "cpu"}  # sections 1-5 are about the CPU provider, GPU host or not
SWEEP = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999)


def _requests(
    x: np.ndarray, y: np.ndarray, batch: int, params: dict[str, object] | None
) -> list[EncodedRequest]:
    n = len(x) // batch * batch
    return [
        encode(x[i : i + batch], y[i : i + batch], "binary", params) for i in range(0, n, batch)
    ]


def _median(reports: list[Report], key: str) -> float:
    return float(statistics.median(float(getattr(r, key)) for r in reports))


def interleave(configs: dict[str, Callable[[], Report]], rounds: int) -> dict[str, list[Report]]:
    """Run each configuration once per round, alternating, so they share the machine's drift."""
    out: dict[str, list[Report]] = {name: [] for name in configs}
    for _ in range(rounds):
        for name, fn in configs.items():
            report = fn()
            click.echo(f"  {name:>24}: {report.line()}")
            out[name].append(report)
    return out


def measure_closed(
    url: str, reqs: list[EncodedRequest], concurrency: int, bounds: Bounds
) -> Report:
    return asyncio.run(closed_loop(url, reqs, concurrency, bounds, progress=False))


def saturation(
    url: str, reqs: list[EncodedRequest], concurrency: int, seconds: float
) -> Callable[[], Report]:
    bounds = Bounds(duration_s=seconds, warmup_requests=20)
    return lambda: measure_closed(url, reqs, concurrency, bounds)


def fixed_load(
    url: str, reqs: list[EncodedRequest], rate: float, seconds: float
) -> Callable[[], Report]:
    bounds = Bounds(duration_s=seconds, warmup_requests=20)
    return lambda: asyncio.run(open_loop(url, reqs, rate, bounds, progress=False))


def accuracy_pass(url: str, reqs: list[EncodedRequest]) -> Report:
    """Every sample exactly once, so both configurations are scored on the same images."""
    bounds = Bounds(duration_s=600.0, max_requests=len(reqs))
    return asyncio.run(closed_loop(url, reqs, 2, bounds, progress=False))


def bench_server(
    res: Results,
    repo: Path,
    model: str,
    x: np.ndarray,
    y: np.ndarray,
    seconds: float,
    rounds: int,
    logs: Path,
) -> None:
    """Comparisons 1, 2 and 5 against one server: only request parameters change."""
    with running_server(repo, logs, env=CPU_ENV) as srv:
        url = f"{srv.url}/v2/models/{model}/infer"
        single = _requests(x, y, 1, None)
        full = _requests(x, y, 1, {"full_depth": True})
        click.echo("1. early exit vs full depth, saturation (closed loop)")
        res.saturation = interleave(
            {
                EE_1: saturation(url, single, 32, seconds),
                FD_1: saturation(url, full, 32, seconds),
                EE_32: saturation(url, _requests(x, y, 32, None), 4, seconds),
                FD_32: saturation(url, _requests(x, y, 32, {"full_depth": True}), 4, seconds),
            },
            rounds,
        )
        res.accuracy = {
            "early exit": accuracy_pass(url, _requests(x, y, 100, None)),
            "full depth": accuracy_pass(url, _requests(x, y, 100, {"full_depth": True})),
        }
        rate = 0.5 * _median(res.saturation[FD_1], "requests_per_s")
        res.fixed_rate = rate
        click.echo(f"1b. fixed load {rate:.0f} req/s (open loop, Poisson)")
        res.fixed = interleave(
            {
                "early exit": fixed_load(url, single, rate, seconds),
                "full depth": fixed_load(url, full, rate, seconds),
            },
            rounds,
        )
        bench_latency(res, repo, model, url, single, x, seconds, rounds, logs)
        click.echo("5. threshold sweep")
        res.sweep = interleave(
            {
                f"{t}": saturation(url, _requests(x, y, 1, {"threshold": t}), 32, seconds / 2)
                for t in SWEEP
            },
            1,
        )


def bench_latency(
    res: Results,
    repo: Path,
    model: str,
    url: str,
    single: list[EncodedRequest],
    x: np.ndarray,
    seconds: float,
    rounds: int,
    logs: Path,
) -> None:
    """Concurrency 1 against the in-process single-sample latency, measured round by round
    beside it: the lightest client, the asyncio one, and a server without inline runs."""
    click.echo("2. concurrency 1")
    bounds = Bounds(duration_s=seconds, warmup_requests=50)
    chain = inprocess.load_chain(repo / model / "1")
    env = {**CPU_ENV, "EXITSERVE_INLINE_MAX_MS": "0"}
    inproc: list[float] = []
    with running_server(repo, logs, env=env) as plain:
        other = f"{plain.url}/v2/models/{model}/infer"
        for _ in range(rounds):
            inproc.append(inprocess.single_latency_ms(chain, x, repeats=1000))
            click.echo(f"  {'in-process single sample':>24}: p50 {inproc[-1]:.2f} ms")
            for name, reps in interleave(
                {
                    C1: lambda: sequential(url, single, bounds),
                    C1_ASYNC: saturation(url, single, 1, seconds),
                    C1_NO_INLINE: lambda: sequential(other, single, bounds),
                },
                1,
            ).items():
                res.c1.setdefault(name, []).extend(reps)
    res.inproc_single_ms = statistics.median(inproc)


def bench_scheduling(
    res: Results,
    repo: Path,
    model: str,
    x: np.ndarray,
    y: np.ndarray,
    seconds: float,
    rounds: int,
    logs: Path,
) -> None:
    """Comparison 3: one server per scheduling mode, run one at a time, interleaved."""
    single = _requests(x, y, 1, None)
    configs: dict[str, Callable[[], Report]] = {}
    for mode in SCHEDULING:

        def run(mode: str = mode) -> Report:
            env = {**CPU_ENV, "EXITSERVE_SCHEDULING": mode}
            with running_server(repo, logs, env=env) as srv:
                return saturation(f"{srv.url}/v2/models/{model}/infer", single, 32, seconds)()

        configs[mode] = run
    try:
        res.scheduling = interleave(configs, rounds)
    except (RuntimeError, TimeoutError) as exc:
        res.notes.append(f"scheduling comparison not run: {exc}")


def bench_inprocess(res: Results, version_dir: Path, x: np.ndarray) -> None:
    """Comparisons 2 and 4: the in-process limit and the oracle."""
    chain = inprocess.load_chain(version_dir)
    res.inproc_ee = inprocess.throughput(chain, x, 32)
    res.inproc_fd = inprocess.throughput(chain, x[: len(x) // 4], 32, full_depth=True)
    res.oracle_fraction, res.policy_fraction = inprocess.oracle_fraction(chain, x)


def gpu_section(
    repo: Path,
    model: str,
    data: tuple[np.ndarray, np.ndarray],
    seconds: float,
    rounds: int,
    logs: Path,
    out: Path,
    command: str,
) -> list[str]:
    """Measured where CUDA works; elsewhere an earlier run's section is kept, if any."""
    if not cuda_available():
        return gpubench.kept_section(out) or [
            gpubench.BEGIN,
            "## GPU",
            "",
            "Not run: no CUDA device on this machine.",
            gpubench.END,
        ]
    res = gpubench.run_gpu(repo, model, *data, measure_closed, seconds, rounds, logs)
    return gpubench.section(res, command, len(os.sched_getaffinity(0)))


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("docs/benchmarks.md"))
@click.option("--repository", type=click.Path(path_type=Path), default=None)
@click.option("--model", default="mnist", show_default=True)
@click.option("--seconds", default=6.0, show_default=True, help="per measurement")
@click.option("--rounds", default=2, show_default=True)
@click.option("--samples", default=4000, show_default=True, help="MNIST test samples used")
@click.option("--gpu-only", is_flag=True, help="run only the GPU section and splice it in")
def main(
    out: Path,
    repository: Path | None,
    model: str,
    seconds: float,
    rounds: int,
    samples: int,
    gpu_only: bool,
) -> None:
    """Run every comparison and rewrite the benchmarks document."""
    repo = repository or bundled_repository()
    test = load_mnist("t10k")
    x, y = test.x[:samples], test.y[:samples]
    flags = f"--seconds {seconds} --rounds {rounds} --samples {samples}"
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        if gpu_only:
            command = f"python -m loadtest.bench --gpu-only {flags}"
            gpu = gpu_section(repo, model, (x, y), seconds, rounds, logs, out, command)
            out.write_text(gpubench.splice(out.read_text() if out.exists() else "", gpu))
            click.echo(f"wrote the GPU section of {out}")
            return
        res = run_cpu(repo, model, x, y, seconds, rounds, logs)
        res.gpu = gpu_section(
            repo,
            model,
            (x, y),
            seconds,
            rounds,
            logs,
            out,
            f"make bench  # python -m loadtest.bench {flags}",
        )
    write_doc(res, out, command=f"make bench  # python -m loadtest.bench {flags}")
    click.echo(f"wrote {out}")


def run_cpu(
    repo: Path, model: str, x: np.ndarray, y: np.ndarray, seconds: float, rounds: int, logs: Path
) -> Results:
    """Comparisons 1 to 5 on the CPU execution provider."""
    res = Results(
        machine=f"{platform.processor() or platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} cores, {platform.system()}",
        started=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    click.echo("4./2. in-process limit and oracle")
    bench_inprocess(res, repo / model / "1", x)
    bench_server(res, repo, model, x, y, seconds, rounds, logs)
    bench_scheduling(res, repo, model, x, y, seconds, rounds, logs)
    return res


if __name__ == "__main__":
    main()
