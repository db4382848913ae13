"""Interleaved A/B between two checkouts: did a change make the server faster here?

`python -m loadtest.ab BASE [CHANGED]` runs one server from each tree (a git revision is
checked out into a temporary worktree; a directory is used as it is) and drives both with
wrk, round after round, alternating which arm goes first. On a shared two-core machine
whose speed drifts by half between minutes, only such paired rounds compare like with like.

Each server runs with its tree as its working directory, and the tool checks before any
load that Python started there imports that tree's `service`. Setting PYTHONPATH is not
enough: `python -m` puts the working directory ahead of it, so an A/B started from one
checkout with PYTHONPATH pointing at another runs the same code twice.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import click

from loadtest.benchsteps import Load, url_of, warm
from loadtest.report import Report
from loadtest.server import LiveServer, running_server
from loadtest.wrk import Bodies, run_wrk
from models.data import load_mnist
from models.paths import bundled_repository

ROOT = Path(__file__).resolve().parent.parent


class WrongTree(click.ClickException):
    """A server started in the tree would not run that tree's code."""


def imported_from(tree: Path) -> Path:
    """Where Python started in `tree`, as a server is, finds the `service` package."""
    probe = "import service, sys; sys.stdout.write(service.__file__)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=tree, capture_output=True, text=True)
    if out.returncode != 0:
        raise WrongTree(f"{tree}: cannot import service: {out.stderr.strip()[-300:]}")
    return Path(out.stdout).resolve()


def verify(tree: Path) -> None:
    """WrongTree unless a server started in `tree` would run `tree`'s own code."""
    found = imported_from(tree)
    if not found.is_relative_to(tree.resolve()):
        raise WrongTree(f"a server started in {tree} would run {found.parent}, not {tree}")


@contextmanager
def checkout(ref: str) -> Iterator[Path]:
    """A directory as it is, else a git revision in a temporary worktree (removed after)."""
    if Path(ref).is_dir():
        yield Path(ref).resolve()
        return
    folder = Path(tempfile.mkdtemp(prefix="exitserve-ab-")) / "tree"
    git = ["git", "-C", str(ROOT), "worktree"]
    subprocess.run([*git, "add", "--detach", str(folder), ref], check=True, capture_output=True)
    try:
        yield folder
    finally:
        subprocess.run([*git, "remove", "--force", str(folder)], check=False, capture_output=True)
        shutil.rmtree(folder.parent, ignore_errors=True)


@dataclass
class Arm:
    """One tree's server and what each configuration measured on it, round by round."""

    label: str
    server: LiveServer
    runs: dict[str, list[Report]] = field(default_factory=dict)


def measure(
    arms: Sequence[Arm],
    loads: dict[str, tuple[Bodies, int]],
    model: str,
    rounds: int,
    seconds: float,
) -> None:
    """Every configuration on every arm once per round; the first arm alternates."""
    for r in range(rounds):
        order = list(arms) if r % 2 == 0 else list(arms)[::-1]
        for name, (bodies, connections) in loads.items():
            for arm in order:
                rep = run_wrk(url_of(arm.server, model), bodies, connections, seconds)
                arm.runs.setdefault(name, []).append(rep)
                click.echo(f" round {r + 1}/{rounds} {name} {arm.label}: {rep.line()[:90]}")


def summary(base: Arm, changed: Arm) -> str:
    """A markdown table: medians with ranges, and the changed arm's paired ratio; with
    full depth measured, each arm's early-exit / full-depth ratio too (issue 14's)."""
    lines = [
        f"| configuration | {base.label} samples/s | {changed.label} samples/s | ratio "
        f"(paired) | faster rounds | {base.label} p50 ms | {changed.label} p50 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, a_runs in base.runs.items():
        a, b = _rates(a_runs), _rates(changed.runs[name])
        p50s = [_spread([r.p50_ms for r in arm.runs[name]], ".3f") for arm in (base, changed)]
        lines.append(_row(name, a, b, ".0f", p50s))
    for name in base.runs:
        if name.startswith("early exit, ") and (deep := _full_depth(name)) in base.runs:
            a, b = (_per_round(arm.runs[name], arm.runs[deep]) for arm in (base, changed))
            label = f"early exit / full depth, {name.removeprefix('early exit, ')}"
            lines.append(_row(label, a, b, ".3f", ["n/a", "n/a"]))
    return "\n".join(lines)


def _row(name: str, a: list[float], b: list[float], spec: str, p50s: list[str]) -> str:
    ratios = [y / x for x, y in zip(a, b, strict=True) if x]
    wins = sum(y > x for x, y in zip(a, b, strict=True))
    return (
        f"| {name} | {_spread(a, spec)} | {_spread(b, spec)} | {_spread(ratios, '.3f')} | "
        f"{wins} of {len(a)} | {p50s[0]} | {p50s[1]} |"
    )


def _rates(runs: Sequence[Report]) -> list[float]:
    return [r.samples_per_s for r in runs]


def _full_depth(early: str) -> str:
    return "full depth, " + early.removeprefix("early exit, ")


def _per_round(early: Sequence[Report], deep: Sequence[Report]) -> list[float]:
    """Early exit over full depth, round by round (one arm)."""
    pairs = zip(early, deep, strict=True)
    return [e.samples_per_s / d.samples_per_s if d.samples_per_s else 0.0 for e, d in pairs]


def _spread(values: Sequence[float], spec: str) -> str:
    if not values:
        return "n/a"
    mid, lo, hi = statistics.median(values), min(values), max(values)
    return f"{mid:{spec}} ({lo:{spec}}–{hi:{spec}})"


def workloads(
    load: Load, connections: Sequence[int], per_request: int, full_depth: bool
) -> dict[str, tuple[Bodies, int]]:
    """Early exit (and full depth when asked) at each concurrency."""
    modes = {"early exit": load.bodies(per_request)}
    if full_depth:
        modes["full depth"] = load.bodies(per_request, {"full_depth": True})
    return {
        f"{mode}, {c} × {per_request}": (bodies, c)
        for mode, bodies in modes.items()
        for c in connections
    }


@click.command()
@click.argument("base")
@click.argument("changed", default=str(ROOT))
@click.option("--rounds", default=6, show_default=True)
@click.option("--seconds", default=3.0, show_default=True, help="per measurement")
@click.option("--connections", "-c", multiple=True, type=int, default=(1, 32), show_default=True)
@click.option("--per-request", default=1, show_default=True, help="samples per request")
@click.option("--full-depth", is_flag=True, help="also measure every sample to the last exit")
@click.option("--env", "env_pairs", multiple=True, help="KEY=VALUE for both servers")
@click.option("--samples", default=4000, show_default=True, help="MNIST test images used")
def main(
    base: str,
    changed: str,
    rounds: int,
    seconds: float,
    connections: tuple[int, ...],
    per_request: int,
    full_depth: bool,
    env_pairs: tuple[str, ...],
    samples: int,
) -> None:
    """Compare BASE with CHANGED (default: this working tree): each a git revision or a
    directory. The bundled `mnist` model; servers on CPU unless --env says otherwise."""
    env = {"EXITSERVE_DEVICE": "cpu", **dict(p.split("=", 1) for p in env_pairs)}
    test = load_mnist("t10k")
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="exitserve-ab-")))
        load = Load(test.x[:samples], test.y[:samples], tmp)
        loads = workloads(load, connections, per_request, full_depth)
        arms = []
        for label, ref in (("base", base), ("changed", changed)):
            tree = stack.enter_context(checkout(ref))
            verify(tree)
            server = stack.enter_context(
                running_server(bundled_repository(), tmp / label, (), env, source=tree)
            )
            for bodies, _ in loads.values():
                warm(server, "mnist", bodies)
            arms.append(Arm(label, server))
        measure(arms, loads, "mnist", rounds, seconds)
    click.echo(f"\nbase: {base}; changed: {changed}\n\n{summary(arms[0], arms[1])}")


if __name__ == "__main__":
    main()
