"""`make bench`: what early exits buy, measured side by side, written to docs/benchmarks.md
and docs/benchmarks.json.

Every comparison runs its configurations in turn, round after round, in one run, so
drift in the machine's speed hits all of them; ratios are taken round by round. Load for
throughput and latency comes from wrk, a compiled client (installed by `make system-deps`);
the Python client checks answers and drives the open-loop load.

    python -m loadtest.bench --quick     # a one-round smoke run (writes under build/)
    python -m loadtest.bench --render-only   # the markdown again from docs/benchmarks.json
    python -m loadtest.peers install triton litserve   # then: --peers triton --peers litserve
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from loadtest import benchcpu, gpubench
from loadtest.benchdoc import document, write_doc
from loadtest.benchsteps import Load
from loadtest.benchtext import plot
from loadtest.doccheck import stray_numbers
from loadtest.fidelitydoc import fidelity_plot
from loadtest.figures import Json, Results, to_json
from loadtest.machine import facts
from loadtest.peers.runner import PEERS, check_installed
from loadtest.sections import SECTIONS, Options, run_sections, splice
from loadtest.wrk import wrk_path
from models.data import load_mnist
from models.paths import bundled_repository

QUICK = {"seconds": 1.0, "rounds": 1, "samples": 512, "phase_samples": 2000, "sentences": 300}
QUICK_OUT = Path("build/bench-quick/benchmarks.md")


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=None, help="the markdown file")
@click.option("--repository", type=click.Path(path_type=Path), default=None)
@click.option("--model", default="mnist", show_default=True)
@click.option("--seconds", default=6.0, show_default=True, help="per measurement")
@click.option("--rounds", default=5, show_default=True, help="interleaved rounds per comparison")
@click.option("--samples", default=4000, show_default=True, help="MNIST test samples used")
@click.option(
    "--quick",
    is_flag=True,
    help=f"smoke run: {QUICK['rounds']} round of {QUICK['seconds']} s on {QUICK['samples']} "
    f"samples, written to {QUICK_OUT} unless --out says otherwise; not figures to cite",
)
@click.option(
    "--peers",
    multiple=True,
    type=click.Choice(sorted(PEERS)),
    help="also measure this optional peer (install: python -m loadtest.peers install NAME)",
)
@click.option(
    "--phase-samples", default=6000, show_default=True, help="fidelity: samples per drift phase"
)
@click.option(
    "--sentences", type=int, default=None, help="text: test sentences used (default: all)"
)
@click.option("--gpu-only", is_flag=True, help="run only the GPU section and splice it in")
@click.option(
    "--only",
    multiple=True,
    type=click.Choice(list(SECTIONS)),
    help="run only this section (repeatable) and splice it into the existing json",
)
@click.option(
    "--render-only", is_flag=True, help="measure nothing: rewrite the markdown from its json"
)
def main(
    out: Path | None,
    repository: Path | None,
    model: str,
    seconds: float,
    rounds: int,
    samples: int,
    quick: bool,
    peers: tuple[str, ...],
    phase_samples: int,
    sentences: int | None,
    gpu_only: bool,
    only: tuple[str, ...],
    render_only: bool,
) -> None:
    """Run every comparison and rewrite the benchmarks document and its json."""
    if render_only:
        rerender(out or Path("docs/benchmarks.md"))
        return
    wrk_path()  # no light client, no figures: fail before anything runs
    for name in peers:
        check_installed(PEERS[name])
    if quick:
        seconds, rounds, samples = QUICK["seconds"], int(QUICK["rounds"]), int(QUICK["samples"])
        phase_samples, sentences = int(QUICK["phase_samples"]), int(QUICK["sentences"])
    out = out or (QUICK_OUT if quick else Path("docs/benchmarks.md"))
    repo = repository or bundled_repository()
    test = load_mnist("t10k")
    x, y = test.x[:samples], test.y[:samples]
    flags = f"--seconds {seconds:g} --rounds {rounds} --samples {samples}"
    flags += f" --phase-samples {phase_samples}"
    flags += f" --sentences {sentences}" if sentences else ""
    options = Options(phase_samples, sentences)
    flags += "".join(f" --peers {p}" for p in peers)
    run = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "mode": "quick" if quick else "full",
        "seconds": seconds,
        "rounds": rounds,
        "samples": samples,
        "model": model,
    }
    with tempfile.TemporaryDirectory() as tmp:
        load = Load(x, y, Path(tmp))
        if gpu_only:
            command = f"python -m loadtest.bench --gpu-only {flags}"
            gpubench.write_gpu_only(out, gpubench.measure(repo, model, load, run, command))
            click.echo(f"wrote the GPU section of {out}")
            return
        if only:
            command = f"python -m loadtest.bench {''.join(f'--only {n} ' for n in only)}{flags}"
            res = Results(run={**run, "command": command}, machine=facts())
            run_sections(res, only, repo, load, options)
            block, gpu_json = gpubench.resolve(gpubench.Section(None, None), out)
            render({**splice(out, res, only), "gpu": gpu_json}, out, block)
            return
        command = (
            f"python -m loadtest.bench --quick --out {out}"
            if quick
            else f"make bench  # python -m loadtest.bench {flags}"
        )
        res = Results(run={**run, "command": command}, machine=facts())
        roles = benchcpu.run_cpu(res, repo, model, load, peers)
        run_sections(res, tuple(SECTIONS), repo, load, options)
        gpu = gpubench.measure(repo, model, load, run, command)
    finish(res, roles, gpu, out)


def finish(
    res: Results, roles: dict[str, tuple[str, str]], gpu: gpubench.Section, out: Path
) -> None:
    """Fold into json, render, check every generated number against the json, write."""
    res.run["roles"] = {k: v[1] for k, v in roles.items()}
    block, gpu_json = gpubench.resolve(gpu, out)
    doc = to_json(res, roles, gpu_json)
    render(doc, out, block)


def rerender(out: Path) -> None:
    """The markdown again from the json beside it (after a change to the wording)."""
    doc = json.loads(out.with_suffix(".json").read_text())
    block, gpu_json = gpubench.resolve(gpubench.Section(None, None), out)
    render({**doc, "gpu": gpu_json}, out, block)


def render(doc: Json, out: Path, gpu_block: str) -> None:
    """Write the json and the markdown, after checking every generated number is in the json."""
    out.parent.mkdir(parents=True, exist_ok=True)
    images = plot(doc, out.parent)
    fidelity_plot(doc, out.parent)
    old = out.read_text() if out.exists() else ""
    stray = stray_numbers(document(doc, old, images, gpu_block), doc)
    if stray:
        raise click.ClickException(f"{out}: numbers not in the json: {stray}")
    write_doc(doc, out, images, gpu_block)
    click.echo(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
