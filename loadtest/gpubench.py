"""The GPU section of `make bench`: early exit on the CUDA execution provider.

Measured only where onnxruntime can create a CUDA session, with the GPU overlay's
settings (deploy/k8s/overlays/gpu), at three levels, round by round: the device ceiling
(segments chained on the device, see devicechain), the serving-loop ceiling (the server's
data plane in process, no HTTP) and the server under wrk; it reports server ÷ serving loop
÷ device. The section lives between markers in docs/benchmarks.md and under "gpu" in the
json, so a later run on a machine without a GPU keeps it.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import click

from loadtest import devicechain, servingloop
from loadtest.benchdoc import GEN_BEGIN, GEN_END, between, table
from loadtest.benchsteps import Load, Server, Step, labels_of, rounds, url_of, wrk_step
from loadtest.doccheck import stray_numbers
from loadtest.figures import Json, Results, finite, fmt, per_round, row_json, spread
from loadtest.server import running_server
from service.sessions import cuda_available

BEGIN, END = "<!-- gpu:begin -->", "<!-- gpu:end -->"
OVERLAY = Path(__file__).resolve().parents[1] / "deploy/k8s/overlays/gpu/config.env"
LOADS = ((256, 8), (64, 8), (1, 32))  # samples per request, concurrent clients
ONE = ", one batch in flight"  # the rows of the server with batches_in_flight 1
FD = {"full_depth": True}
EARLIER = (
    "> **From an earlier run ({date}), before the benchmark was reworked (issue 14).** Not "
    "produced by the current code and not in docs/benchmarks.json: its prose was canned "
    "text and its in-process limit copied every hidden state through the host (it is not "
    "a limit). Kept for reference until a run on a GPU replaces it."
)


def overlay_env(path: Path = OVERLAY) -> dict[str, str]:
    """The GPU overlay's EXITSERVE_* settings, so the bench measures what a GPU pod runs."""
    pairs = (
        ln.split("=", 1)
        for ln in path.read_text().splitlines()
        if "=" in ln and not ln.lstrip().startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}


@dataclass(frozen=True)
class Section:
    """This run's GPU section and its json, or None for both where no GPU was there."""

    lines: list[str] | None
    json: Json | None


def card_name() -> str:
    """The GPU's name and driver as nvidia-smi reports them (no torch on this path)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "a CUDA device (nvidia-smi unavailable)"
    name, _, driver = out.splitlines()[0].partition(",")
    return f"{name.strip()} (driver {driver.strip()})"


def measure(repo: Path, model: str, load: Load, run: Json, command: str) -> Section:
    """Every GPU comparison, or an empty Section where CUDA does not work."""
    if not cuda_available():
        return Section(None, None)
    where = Where(repo, model, overlay_env(), devicechain.CUDA)
    return measure_on(where, load, {**run, "command": command, "card": card_name()})


@dataclass(frozen=True)
class Where:
    """The model, the server's settings and the device the section measures on."""

    repo: Path
    model: str
    env: dict[str, str]
    device: devicechain.Device

    def max_batch(self) -> int:
        return int(json.loads(self.env.get("EXITSERVE_BATCHING", "{}")).get("max_batch_size", 32))


def measure_on(where: Where, load: Load, run: Json) -> Section:
    """Server (wrk), serving loop and device, both modes, every load, interleaved by round;
    beside them, at the batched loads, a server running one batch per stage at a time."""
    res, model = Results(run=run, machine={}), where.model
    click.echo(f"GPU section on {run['card']}")
    single_env = one_in_flight(where.env)
    with (
        running_server(where.repo, load.folder, env=where.env) as srv,
        running_server(where.repo, load.folder, env=single_env) as single,
    ):
        steps = {"device": _device(res, where, load)}
        for per, clients in LOADS:
            steps.update(_server_steps(res, srv, model, load, (per, clients)))
            steps[f"loop {per}"] = _loop(res, where, len(load.x), per, clients)
        for per, clients in LOADS[:2]:
            steps.update(_server_steps(res, single, model, load, (per, clients), ONE))
        rounds(steps, int(run["rounds"]))
        ee, truth = labels_of(url_of(srv, model), load.requests(64))
        fd, _ = labels_of(url_of(srv, model), load.requests(64, FD))
    res.accuracy = {"images": len(truth), "early_exit": float((ee == truth).mean())}
    res.accuracy.update(full_depth=float((fd == truth).mean()), agreement=float((ee == fd).mean()))
    return _section(res, where.env)


def one_in_flight(env: dict[str, str]) -> dict[str, str]:
    """The overlay's settings with one batch of each stage running at a time."""
    batching = json.loads(env.get("EXITSERVE_BATCHING", "{}"))
    return {**env, "EXITSERVE_BATCHING": json.dumps({**batching, "batches_in_flight": 1})}


def _server_steps(
    res: Results, srv: Server, model: str, load: Load, level: tuple[int, int], suffix: str = ""
) -> dict[str, Step]:
    """wrk against `srv` at one load (samples per request, clients), both modes."""
    per, clients = level
    secs = float(res.run["seconds"])
    steps = {}
    for mode, params in (("early exit", None), ("full depth", FD)):
        name = f"{per}/request, {mode}{suffix}"
        bodies = load.bodies(per, params)
        steps[name] = wrk_step(res, "gpu", name, lambda: srv, model, bodies, clients, secs)
    return steps


def _device(res: Results, where: Where, load: Load) -> Step:
    """The device ceiling at the server's largest batch, both modes, once per round."""
    chain = devicechain.load(where.repo / where.model / "1", where.device)
    batch = where.max_batch()
    rows = {"early exit": devicechain.survivors(chain, load.x, batch)}
    rows["full depth"] = [batch] * len(rows["early exit"])
    res.run["device_batch"] = batch

    def step() -> None:
        for mode, r in rows.items():
            got = devicechain.ceiling(chain, load.x, r, where.device, float(res.run["seconds"]))
            res.scalars.setdefault(f"device, {mode}", []).append(got)
            click.echo(f"  {f'device ceiling, {mode}':>34}: {got:.0f} samples/s")

    return step


def _loop(res: Results, where: Where, samples: int, per: int, clients: int) -> Step:
    """The serving-loop ceiling for one load, both modes, this round."""
    secs = float(res.run["seconds"])

    def step() -> None:
        for mode, full in (("early exit", False), ("full depth", True)):
            got = servingloop.measure(
                where.repo, where.model, where.env, per, clients, secs, samples, full
            )
            res.scalars.setdefault(f"loop, {per}/request, {mode}", []).append(got["samples_per_s"])
            click.echo(
                f"  {f'serving loop, {per}/request, {mode}':>34}: {got['samples_per_s']:.0f}"
            )

    return step


def _levels(res: Results) -> list[Json]:
    """Per load and mode: server, serving loop, device, and the ratios between them."""
    out = []
    for per, _ in LOADS:
        for mode in ("early exit", "full depth"):
            server = [r.samples_per_s for r in res.row("gpu", f"{per}/request, {mode}").reports]
            loop = res.scalars.get(f"loop, {per}/request, {mode}", [])
            device = res.scalars.get(f"device, {mode}", [])
            level = {"load": f"{per}/request", "mode": mode, "server": spread(server)}
            level.update(loop=spread(loop), device=spread(device))
            level["server_vs_loop"] = per_round(server, loop, "ratio")
            level["loop_vs_device"] = per_round(loop, device, "ratio")
            level["server_vs_device"] = per_round(server, device, "ratio")
            out.append(level)
    return out


def _in_flight(res: Results) -> list[Json]:
    """The overlay's server over the one-batch-in-flight server, round by round."""
    out = []
    for per, _ in LOADS[:2]:
        for mode in ("early exit", "full depth"):
            name = f"{per}/request, {mode}"
            two = [r.samples_per_s for r in res.row("gpu", name).reports]
            one = [r.samples_per_s for r in res.row("gpu", name + ONE).reports]
            out.append(
                {"load": f"{per}/request", "mode": mode, "ratio": per_round(two, one, "ratio")}
            )
    return out


def _section(res: Results, env: dict[str, str]) -> Section:
    levels = _levels(res)
    doc: Json = {
        "run": res.run,
        "batching": env.get("EXITSERVE_BATCHING", "default"),
        "levels": levels,
        "in_flight": _in_flight(res),
        "rows": [row_json(r) for r in res.tables["gpu"]],
        "accuracy": res.accuracy,
    }
    doc = finite(doc)
    return Section(render(doc), doc)


def render(g: Json) -> list[str]:
    """The GPU section's markdown from its json: a generated block inside the GPU markers."""
    lines = [
        "| load | mode | server | serving loop | device ceiling | server ÷ loop | loop ÷ device |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for lv in g["levels"]:
        lines.append(
            f"| {lv['load']} | {lv['mode']} | {fmt(lv['server'])} | {fmt(lv['loop'])} "
            f"| {fmt(lv['device'])} | {fmt(lv['server_vs_loop'], '.2f')} "
            f"| {fmt(lv['loop_vs_device'], '.2f')} |"
        )
    a = g["accuracy"]
    overlap = ", ".join(
        f"{lv['mode']} {fmt(lv['ratio'], '.2f')}× at {lv['load']}" for lv in g.get("in_flight", [])
    )
    return [
        BEGIN,
        "## GPU",
        "",
        GEN_BEGIN,
        f"Measured {g['run']['started']} on {g['run']['card']}, {g['run']['rounds']} rounds of "
        f"{g['run']['seconds']} s, with `{g['run']['command']}`; server settings from the GPU "
        f"overlay (batching `{g['batching']}`). Samples/s, medians with the range over rounds. "
        f"The device ceiling runs the segments back to back on the device, batch "
        f"{g['run']['device_batch']}, with I/O binding and one synchronisation (survivor "
        "selection free); the serving loop is the server's data plane in process without "
        "HTTP; the server is driven by wrk on the same host.",
        "",
        *lines,
        "",
        *(
            [
                f"The overlay's server against one running a batch per stage at a time (rows "
                f"marked '{ONE[2:]}'), throughput: {overlap}.",
                "",
            ]
            if overlap
            else []
        ),
        f"Accuracy on the same {a['images']} images: early exit {a['early_exit']:.4f}, full "
        f"depth {a['full_depth']:.4f}, agreement {a['agreement']:.4f}.",
        "",
        *table(g["rows"]),
        GEN_END,
        END,
    ]


def resolve(section: Section, doc_path: Path) -> tuple[str, Json | None]:
    """This run's section, else the last document's (with its json), else a 'not run' line."""
    if section.lines is not None:
        return "\n".join(section.lines), section.json
    old = doc_path.read_text() if doc_path.exists() else ""
    kept = between(old, BEGIN, END)
    if kept is None:
        return f"{BEGIN}\n## GPU\n\nNot run: no CUDA device on this machine.\n{END}", None
    if GEN_BEGIN in kept:
        old_json = doc_path.with_suffix(".json")
        previous = json.loads(old_json.read_text()) if old_json.exists() else {}
        return kept, previous.get("gpu")
    return mark_earlier(kept), None


def mark_earlier(block: str) -> str:
    """A section from before the rework, flagged as such (once) and left unchecked."""
    if "From an earlier run" in block:
        return block
    date = block.split("Measured ", 1)[1][:10] if "Measured " in block else "undated"
    head, rest = block.split("## GPU", 1)
    return f"{head}## GPU\n\n{EARLIER.format(date=date)}{rest}"


def write_gpu_only(out: Path, section: Section) -> None:
    """Splice this run's GPU section into the document and its json into the json."""
    if section.lines is None or section.json is None:
        raise click.ClickException("no CUDA device: nothing to measure for the GPU section")
    doc_json = out.with_suffix(".json")
    data = json.loads(doc_json.read_text()) if doc_json.exists() else {}
    data["gpu"] = section.json
    text = splice(out.read_text() if out.exists() else "", section.lines)
    if stray := stray_numbers(text, data):
        raise click.ClickException(f"{out}: numbers not in the json: {stray}")
    doc_json.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    out.write_text(text)


def splice(doc: str, lines: list[str]) -> str:
    """Put the GPU section into `doc`, replacing an earlier one or appending it."""
    block = "\n".join(lines)
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        return head + block + rest.split(END, 1)[1]
    return doc.rstrip("\n") + "\n\n" + block + "\n"
