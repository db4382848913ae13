"""The measurements `make bench` interleaves: each one a callable run once per round.

A step appends what it measured to the Results; `rounds` runs every step of a comparison
once per round, in turn, so all configurations share the machine's drift.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import click
import numpy as np
import numpy.typing as npt

from loadtest import inprocess
from loadtest.client import EncodedRequest, Encoding, encode
from loadtest.figures import Results, Row
from loadtest.generators import Bounds, answers, closed_loop, open_loop, sequential
from loadtest.report import (
    Report,
    cpu_share,
    machine_jiffies,
    machine_share,
    process_cpu_s,
)
from loadtest.wrk import Bodies, run_wrk, write_bodies

Step = Callable[[], None]


class Server(Protocol):
    """What a measurement needs of whatever answers: exitserve, or a peer."""

    url: str

    def cpu_seconds(self) -> float: ...

    def exit_counts(self, model: str) -> list[float]: ...


Array = npt.NDArray[np.float32]
Params = Mapping[str, object] | None  # a request's v2 `parameters`


def rounds(steps: dict[str, Step], count: int) -> None:
    """Every step once per round, in the same order each round."""
    for r in range(count):
        click.echo(f" round {r + 1}/{count}")
        for step in steps.values():
            step()


@dataclass(frozen=True)
class Load:
    """The samples a run uses, encoded once, and where wrk's copies of them live."""

    x: Array
    y: npt.NDArray[np.int64]
    folder: Path

    def requests(
        self, per: int, params: Params = None, encoding: Encoding = "binary"
    ) -> list[EncodedRequest]:
        n, xs, ys, p = len(self.x) // per * per, self.x, self.y, dict(params or {})
        return [encode(xs[i : i + per], ys[i : i + per], encoding, p) for i in range(0, n, per)]

    def bodies(self, per: int, params: Params = None, encoding: Encoding = "binary") -> Bodies:
        """A rotating set of real images: nothing the server could cache between requests."""
        return write_bodies(self.requests(per, params, encoding), self.folder)


def url_of(srv: Server, model: str) -> str:
    return f"{srv.url}/v2/models/{model}/infer"


def _exits(before: list[float], after: list[float]) -> list[float]:
    diff = [a - (before[k] if k < len(before) else 0.0) for k, a in enumerate(after)]
    total = sum(diff)
    return [d / total for d in diff] if total else []


def observed(srv: Server, model: str, run: Callable[[], Report]) -> Report:
    """A run with the server's CPU share and (when the client reads none) its exit counts."""
    exits, busy = srv.exit_counts(model), machine_jiffies()
    cpu, start = srv.cpu_seconds(), time.perf_counter()
    rep = run()
    server = cpu_share(srv.cpu_seconds() - cpu, time.perf_counter() - start)
    machine = machine_share(busy, machine_jiffies())
    dist = rep.exit_distribution or _exits(exits, srv.exit_counts(model))
    return replace(rep, server_cpu=server, machine_cpu=machine, exit_distribution=dist)


def warm(
    srv: Server, model: str, bodies: Bodies, connections: int = 8, seconds: float = 1.0
) -> None:
    """Load before the first measurement on a fresh server (not recorded)."""
    run_wrk(url_of(srv, model), bodies, connections, seconds)


def wrk_step(
    res: Results,
    table: str,
    name: str,
    srv: Callable[[], Server],
    model: str,
    bodies: Bodies,
    connections: int,
    seconds: float,
) -> Step:
    row = res.add(table, Row(name, "wrk", connections, bodies.samples_per_request))

    def step() -> None:
        s = srv()
        rep = observed(s, model, lambda: run_wrk(url_of(s, model), bodies, connections, seconds))
        click.echo(f"  {name:>34}: {rep.line()}")
        row.reports.append(rep)

    return step


def python_step(
    res: Results,
    table: str,
    row: Row,
    srv: Callable[[], Server],
    model: str,
    run: Callable[[str], Report],
) -> Step:
    res.add(table, row)

    def step() -> None:
        s = srv()
        rep = observed(s, model, lambda: run(url_of(s, model)))
        click.echo(f"  {row.name:>34}: {rep.line()}")
        row.reports.append(rep)

    return step


def closed(
    reqs: Sequence[EncodedRequest], concurrency: int, seconds: float
) -> Callable[[str], Report]:
    bounds = Bounds(duration_s=seconds, warmup_requests=20)
    return lambda url: asyncio.run(closed_loop(url, reqs, concurrency, bounds, progress=False))


def poisson(reqs: Sequence[EncodedRequest], rate: float, seconds: float) -> Callable[[str], Report]:
    bounds = Bounds(duration_s=seconds, warmup_requests=20)
    return lambda url: asyncio.run(open_loop(url, reqs, rate, bounds, progress=False))


def one_by_one(reqs: Sequence[EncodedRequest], seconds: float) -> Callable[[str], Report]:
    bounds = Bounds(duration_s=seconds, warmup_requests=50)
    return lambda url: sequential(url, reqs, bounds)


def labels_of(url: str, reqs: Sequence[EncodedRequest]) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true labels of every sample, each sent once (Python client)."""
    replies = answers(url, reqs)
    if any(r.status != 200 for r in replies):
        codes = sorted({r.status for r in replies if r.status != 200})
        raise RuntimeError(f"accuracy pass: the server answered {codes}")
    predicted = np.array([p for r in replies for p in r.labels], dtype=np.int64)
    return predicted, np.concatenate([r.labels for r in reqs])


def inprocess_step(res: Results, chain: inprocess.Chain, x: Array, batch: int) -> Step:
    """The bare onnxruntime chain's batched throughput, and its CPU per sample."""
    sc = res.scalars

    def step() -> None:
        cpu = process_cpu_s()
        ee = inprocess.throughput(chain, x, batch)
        sc.setdefault("inproc_ee_cpu_ms", []).append((process_cpu_s() - cpu) / len(x) * 1e3)
        sc.setdefault("inproc_ee", []).append(ee)
        fd = inprocess.throughput(chain, x[: max(batch, len(x) // 4)], batch, full_depth=True)
        sc.setdefault("inproc_fd", []).append(fd)
        click.echo(f"  {'in process, batched':>34}: early exit {ee:.0f}, full depth {fd:.0f}")

    return step


def oracle_step(res: Results, chain: inprocess.Chain, x: Array, folds: int) -> Step:
    """Oracle and policy compute fractions, one disjoint fold of the samples per round."""
    fold = iter(range(folds))
    sc = res.scalars

    def step() -> None:
        oracle, policy = inprocess.oracle_fraction(chain, x[next(fold) :: folds])
        sc.setdefault("oracle", []).append(oracle)
        sc.setdefault("policy", []).append(policy)

    return step


def single_latency_step(res: Results, chain: inprocess.Chain, x: Array, repeats: int) -> Step:
    def step() -> None:
        ms = inprocess.single_latency_ms(chain, x, repeats=repeats)
        res.scalars.setdefault("inproc_single_ms", []).append(ms)
        click.echo(f"  {'in process, single sample':>34}: p50 {ms:.2f} ms")

    return step
