"""The CPU comparisons of `make bench`, each a set of steps interleaved over the rounds."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import click

from loadtest import inprocess, servingloop
from loadtest.benchpeers import compare_peers
from loadtest.benchsteps import (
    Load,
    Step,
    closed,
    inprocess_step,
    labels_of,
    one_by_one,
    oracle_step,
    poisson,
    python_step,
    rounds,
    single_latency_step,
    url_of,
    warm,
    wrk_step,
)
from loadtest.figures import Results, Row
from loadtest.server import LiveServer, running_server

CPU_ENV = {"EXITSERVE_DEVICE": "cpu"}  # the CPU provider, GPU host or not
STATIC_ENV = {**CPU_ENV, "EXITSERVE_FIDELITY": '{"enabled": false}'}  # calibrated thresholds
SWEEP = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999)
SCHEDULING = ("stage", "naive", "none")
SINGLE_CLIENTS, BATCH_CLIENTS, INPROC_BATCH = 32, 4, 32
FD = {"full_depth": True}
EE1, FD1 = "early exit, 1/request", "full depth, 1/request"
EE32, FD32 = "early exit, 32/request", "full depth, 32/request"
EE1_PY = "early exit, 1/request, Python client"
C1, C1_PY, C1_NO_INLINE = "c=1, wrk", "c=1, http.client", "c=1, http.client, inline_max_ms=0"
ROLES = {
    "ee1": ("saturation", EE1),
    "fd1": ("saturation", FD1),
    "ee32": ("saturation", EE32),
    "fd32": ("saturation", FD32),
    "ee1_python": ("saturation", EE1_PY),
    "c1": ("c1", C1),
    "c1_python": ("c1", C1_PY),
    "c1_no_inline": ("c1", C1_NO_INLINE),
}


def run_cpu(
    res: Results, repo: Path, model: str, load: Load, peers: tuple[str, ...] = ()
) -> dict[str, tuple[str, str]]:
    """Every CPU comparison; returns which row plays which role in the targets."""
    n, secs = res.run["rounds"], res.run["seconds"]
    res.run.update(inproc_batch=INPROC_BATCH, loop_32=BATCH_CLIENTS, loop_1=SINGLE_CLIENTS)
    with ExitStack() as stack:
        srv = stack.enter_context(running_server(repo, load.folder, env=CPU_ENV))
        warm(srv, model, load.bodies(1))
        click.echo("saturation, ceilings and the oracle")
        rounds(saturation_steps(res, repo, model, load, lambda: srv), n)
        same_images(res, url_of(srv, model), load)
        fixed_load(res, srv, model, load, secs, n)
        plain_env = {**CPU_ENV, "EXITSERVE_INLINE_MAX_MS": "0"}
        plain = stack.enter_context(running_server(repo, load.folder, env=plain_env))
        warm(plain, model, load.bodies(1))
        click.echo("concurrency 1")
        rounds(latency_steps(res, repo, model, load, (srv, plain)), n)
        click.echo("threshold sweep")
        rounds(sweep_steps(res, model, load, srv), n)
        res.accuracy["sweep"] = sweep_accuracy(url_of(srv, model), load)
        if peers:
            compare_peers(res, peers, repo, model, load, srv)
    click.echo("scheduling modes")
    rounds(scheduling_steps(res, repo, model, load), n)
    return ROLES


def saturation_steps(
    res: Results, repo: Path, model: str, load: Load, srv: Callable[[], LiveServer]
) -> dict[str, Step]:
    secs, folds = res.run["seconds"], res.run["rounds"]
    sat, single = "saturation", load.requests(1)
    chain = inprocess.load_chain(repo / model / "1")
    steps = {
        EE1: wrk_step(res, sat, EE1, srv, model, load.bodies(1), SINGLE_CLIENTS, secs),
        FD1: wrk_step(res, sat, FD1, srv, model, load.bodies(1, FD), SINGLE_CLIENTS, secs),
        EE32: wrk_step(res, sat, EE32, srv, model, load.bodies(32), BATCH_CLIENTS, secs),
        FD32: wrk_step(res, sat, FD32, srv, model, load.bodies(32, FD), BATCH_CLIENTS, secs),
        EE1_PY: python_step(
            res,
            sat,
            Row(EE1_PY, "Python (aiohttp)", SINGLE_CLIENTS, 1),
            srv,
            model,
            closed(single, SINGLE_CLIENTS, secs),
        ),
        "in process": inprocess_step(res, chain, load.x, INPROC_BATCH),
        "oracle": oracle_step(res, chain, load.x, folds),
    }
    for per, clients in ((32, BATCH_CLIENTS), (1, SINGLE_CLIENTS)):
        steps[f"loop {per}"] = loop_step(res, repo, model, per, clients)
    return steps


def loop_step(res: Results, repo: Path, model: str, per: int, clients: int) -> Step:
    """The serving-loop ceiling in a process of its own, the server's CPU settings."""

    def step() -> None:
        got = servingloop.measure(
            repo, model, CPU_ENV, per, clients, res.run["seconds"], res.run["samples"]
        )
        res.scalars.setdefault(f"loop_ee_{per}", []).append(got["samples_per_s"])
        res.run["provider"] = got["provider"]
        click.echo(f"  {f'serving loop, {per}/request':>34}: {got['samples_per_s']:.0f}")

    return step


def same_images(res: Results, url: str, load: Load) -> None:
    """Both modes on every sample once: accuracy on the same images, and agreement."""
    per = 100 if len(load.x) >= 100 else 1
    ee, truth = labels_of(url, load.requests(per))
    fd, _ = labels_of(url, load.requests(per, FD))
    acc_ee, acc_fd = float((ee == truth).mean()), float((fd == truth).mean())
    res.accuracy.update(
        images=len(truth),
        per_request=per,
        early_exit=acc_ee,
        full_depth=acc_fd,
        loss_pp=(acc_fd - acc_ee) * 100,
        agreement=float((ee == fd).mean()),
    )


def fixed_load(res: Results, srv: LiveServer, model: str, load: Load, secs: float, n: int) -> None:
    """Open loop at half the full-depth saturation rate: Python's job (wrk has no schedule)."""
    fd_rates = [r.requests_per_s for r in res.row("saturation", FD1).reports]
    rate = max(1, round(0.5 * statistics.median(fd_rates)))  # 1: a run that got no answers
    client = f"Python (open loop, Poisson, {rate} req/s)"
    click.echo(f"fixed load {rate} req/s")
    steps = {
        name: python_step(
            res, "fixed", Row(name, client, 0, 1), lambda: srv, model, poisson(reqs, rate, secs)
        )
        for name, reqs in (("early exit", load.requests(1)), ("full depth", load.requests(1, FD)))
    }
    rounds(steps, n)


def latency_steps(
    res: Results, repo: Path, model: str, load: Load, servers: tuple[LiveServer, LiveServer]
) -> dict[str, Step]:
    """wrk, http.client, and http.client against a server without inline runs."""
    (srv, plain), secs, single = servers, res.run["seconds"], load.requests(1)
    chain = inprocess.load_chain(repo / model / "1")
    return {
        "in process": single_latency_step(res, chain, load.x, 1000),
        C1: wrk_step(res, "c1", C1, lambda: srv, model, load.bodies(1), 1, secs),
        C1_PY: python_step(
            res, "c1", Row(C1_PY, "http.client", 1, 1), lambda: srv, model, one_by_one(single, secs)
        ),
        C1_NO_INLINE: python_step(
            res,
            "c1",
            Row(C1_NO_INLINE, "http.client", 1, 1),
            lambda: plain,
            model,
            one_by_one(single, secs),
        ),
    }


def sweep_steps(res: Results, model: str, load: Load, srv: LiveServer) -> dict[str, Step]:
    secs = max(1.0, res.run["seconds"] / 2)
    return {
        f"{t}": wrk_step(
            res,
            "sweep",
            f"{t}",
            lambda: srv,
            model,
            load.bodies(1, {"threshold": t}),
            SINGLE_CLIENTS,
            secs,
        )
        for t in SWEEP
    }


def sweep_accuracy(url: str, load: Load) -> dict[str, float]:
    per = 100 if len(load.x) >= 100 else 1
    out = {}
    for t in SWEEP:
        predicted, truth = labels_of(url, load.requests(per, {"threshold": t}))
        out[f"{t}"] = float((predicted == truth).mean())
    return out


def scheduling_steps(res: Results, repo: Path, model: str, load: Load) -> dict[str, Step]:
    """One server per mode and round, started for the measurement and stopped after it."""
    bodies, secs = load.bodies(1), res.run["seconds"]
    steps: dict[str, Step] = {}
    for mode in SCHEDULING:
        holder: list[LiveServer] = []
        inner = wrk_step(
            res, "scheduling", mode, _first(holder), model, bodies, SINGLE_CLIENTS, secs
        )

        def step(mode: str = mode, holder: list[LiveServer] = holder, inner: Step = inner) -> None:
            env = {**CPU_ENV, "EXITSERVE_SCHEDULING": mode}
            with running_server(repo, load.folder, env=env) as srv:
                holder[:] = [srv]
                warm(srv, model, bodies)
                inner()

        steps[mode] = step
    return steps


def _first(holder: list[LiveServer]) -> Callable[[], LiveServer]:
    """The server a scheduling step has just started (each round starts a fresh one)."""
    return lambda: holder[0]
