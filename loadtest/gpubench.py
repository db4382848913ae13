"""The GPU section of `make bench`: early exit on the CUDA execution provider.

Filled in only where onnxruntime can create a CUDA session. The server runs with the GPU
overlay's settings (deploy/k8s/overlays/gpu), so the figures are what a GPU deployment
gets; the same host's CPU provider runs beside it for scale. The section lives between
markers in docs/benchmarks.md, so a later run on a machine without a GPU keeps it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from loadtest import inprocess
from loadtest.benchdoc import med, report_table
from loadtest.client import EncodedRequest, encode
from loadtest.generators import Bounds
from loadtest.report import Report
from loadtest.server import running_server

BEGIN, END = "<!-- gpu:begin -->", "<!-- gpu:end -->"
OVERLAY = Path(__file__).resolve().parents[1] / "deploy/k8s/overlays/gpu/config.env"
LOADS = ((256, 8), (64, 8), (1, 32))  # samples per request, concurrent clients


def overlay_env(path: Path = OVERLAY) -> dict[str, str]:
    """The GPU overlay's EXITSERVE_* settings, so the bench measures what a GPU pod runs."""
    pairs = (
        ln.split("=", 1)
        for ln in path.read_text().splitlines()
        if "=" in ln and not ln.lstrip().startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}


Measure = Callable[[str, list[EncodedRequest], int, Bounds], Report]


@dataclass
class GpuResults:
    """One run's GPU figures; `server` rows are keyed '<provider>, <load>, <policy>'."""

    card: str
    started: str
    inproc: dict[str, float] = field(default_factory=dict)
    server: dict[str, list[Report]] = field(default_factory=dict)
    accuracy: dict[str, Report] = field(default_factory=dict)


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


def _inprocess(res: GpuResults, version_dir: Path, x: np.ndarray) -> None:
    """The same segments as bare CUDA sessions, batch 256, hidden states via the host."""
    cuda = ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})  # as the server
    chain = inprocess.load_chain(version_dir, providers=[cuda])
    inprocess.throughput(chain, x[:512], 256)  # warm-up: cuDNN picks its algorithms
    for _ in range(2):
        for name, full in (("early exit", False), ("full depth", True)):
            fps = inprocess.throughput(chain, x, 256, full_depth=full)
            res.inproc[name] = max(res.inproc.get(name, 0.0), fps)


def _loads(x: np.ndarray, y: np.ndarray) -> dict[str, tuple[list[EncodedRequest], int]]:
    """One request set per LOADS entry, with and without `full_depth`."""
    out = {}
    for per, clients in LOADS:
        n = len(x) // per * per
        out[f"{per}/request"] = (
            [encode(x[i : i + per], y[i : i + per], "binary", None) for i in range(0, n, per)],
            clients,
        )
        out[f"{per}/request full"] = (
            [
                encode(x[i : i + per], y[i : i + per], "binary", {"full_depth": True})
                for i in range(0, n, per)
            ],
            clients,
        )
    return out


@dataclass(frozen=True)
class Setup:
    """What every server measurement shares."""

    repo: Path
    model: str
    loads: dict[str, tuple[list[EncodedRequest], int]]
    measure: Measure
    seconds: float
    logs: Path

    def bounds(self) -> Bounds:
        return Bounds(duration_s=self.seconds, warmup_requests=20)


def _server(
    res: GpuResults,
    setup: Setup,
    provider: str,
    env: dict[str, str],
    rounds: int,
    names: tuple[str, ...],
    then: Callable[[str], None] | None = None,
) -> None:
    """The named loads early exit vs full depth, interleaved, against one server."""
    with running_server(setup.repo, setup.logs, env=env) as srv:
        url = f"{srv.url}/v2/models/{setup.model}/infer"
        for _ in range(rounds):
            for name in names:
                for full in (False, True):
                    reqs, clients = setup.loads[name + (" full" if full else "")]
                    key = f"{provider}, {name}, {'full depth' if full else 'early exit'}"
                    rep = setup.measure(url, reqs, clients, setup.bounds())
                    click.echo(f"  {key:>48}: {rep.line()}")
                    res.server.setdefault(key, []).append(rep)
        if then:
            then(url)


def _cuda_extras(res: GpuResults, setup: Setup, url: str) -> None:
    """Concurrency 1, and every sample once in each mode for accuracy on the same images."""
    one = setup.loads["1/request"][0]
    res.server["CUDA, concurrency 1, early exit"] = [setup.measure(url, one, 1, setup.bounds())]
    for name in ("64/request", "64/request full"):
        reqs = setup.loads[name][0]
        res.accuracy[name] = setup.measure(url, reqs, 2, Bounds(600.0, len(reqs)))


def run_gpu(
    repo: Path,
    model: str,
    x: np.ndarray,
    y: np.ndarray,
    measure: Measure,
    seconds: float,
    rounds: int,
    logs: Path,
) -> GpuResults:
    """Every GPU comparison; exhaustive cuDNN search and the same host's CPU once each."""
    res = GpuResults(card_name(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    click.echo(f"GPU: {res.card}")
    _inprocess(res, repo / model / "1", x)
    setup, env = Setup(repo, model, _loads(x, y), measure, seconds, logs), overlay_env()
    names = tuple(f"{per}/request" for per, _ in LOADS)
    _server(res, setup, "CUDA", env, rounds, names, lambda url: _cuda_extras(res, setup, url))
    exhaustive = {**env, "EXITSERVE_CUDNN_CONV_ALGO_SEARCH": "EXHAUSTIVE"}
    _server(res, setup, "CUDA exhaustive search", exhaustive, 1, names[:1])
    waiting = {**env, "EXITSERVE_BATCHING": _with(env, survivor_delay_ms=None)}
    _server(res, setup, "CUDA, survivors wait too", waiting, 1, names[:2])
    _server(res, setup, "CPU", {"EXITSERVE_DEVICE": "cpu"}, 1, ("256/request", "1/request"))
    return res


def _with(env: dict[str, str], **changes: object) -> str:
    """The overlay's EXITSERVE_BATCHING JSON with some fields changed."""
    return json.dumps({**json.loads(env.get("EXITSERVE_BATCHING", "{}")), **changes})


def _speed(res: GpuResults, provider: str, load: str) -> tuple[float, float, str]:
    """Early exit and full depth samples/s for one server row pair, and their ratio."""
    ee, fd = (
        med(res.server.get(f"{provider}, {load}, {mode}", []), "samples_per_s")
        for mode in ("early exit", "full depth")
    )
    return ee, fd, f"{ee / fd:.2f}×" if fd else "n/a"


def _reading(res: GpuResults) -> list[str]:
    """What this run's figures say, written from the figures."""
    in_ee, in_fd = res.inproc.get("early exit", 0.0), res.inproc.get("full depth", 0.0)
    big, mid, one = (_speed(res, "CUDA", f"{n}/request") for n in ("256", "64", "1"))
    ex = _speed(res, "CUDA exhaustive search", "256/request")
    wait_big, wait_mid = (
        _speed(res, "CUDA, survivors wait too", f"{n}/request") for n in ("256", "64")
    )
    rps = [
        med(res.server.get(f"CUDA, 64/request, {m}", []), "requests_per_s")
        for m in ("early exit", "full depth")
    ]
    bound = (
        f" At 64 per request both modes answer about {rps[0]:.0f} requests/s: per-request "
        "CPU work (HTTP, decoding, the load generator on the same host) bounds the server "
        "there, not the GPU."
        if min(rps) and max(rps) / min(rps) < 1.15
        else ""
    )
    acc = {k: r.accuracy for k, r in res.accuracy.items()}
    same = res.accuracy["64/request"].ok * 64 if "64/request" in res.accuracy else 0
    return [
        f"- In-process limit (bare CUDA sessions, batch 256, hidden states copied through the "
        f"host): early exit {in_ee:.0f}, full depth {in_fd:.0f} samples/s "
        f"({in_ee / in_fd if in_fd else float('nan'):.2f}×).",
        f"- Server, early exit vs full depth: {big[0]:.0f} vs {big[1]:.0f} samples/s "
        f"({big[2]}) with 256 samples per request, {mid[0]:.0f} vs {mid[1]:.0f} ({mid[2]}) "
        f"with 64, {one[0]:.0f} vs {one[1]:.0f} ({one[2]}) with one.{bound}",
        *_verdict(big, _speed(res, "CPU", "256/request")),
        f"- Accuracy on the same {same} images (64 per request, each once): early exit "
        f"{acc.get('64/request', float('nan')):.4f}, full depth "
        f"{acc.get('64/request full', float('nan')):.4f}.",
        f"- Survivors waiting for their batch to fill at later stages too (the first "
        f"stage's 2 ms): early exit {wait_big[0]:.0f} samples/s with 256 per request and "
        f"{wait_mid[0]:.0f} with 64, against {big[0]:.0f} and {mid[0]:.0f} when they go on "
        "at once (`survivor_delay_ms: 0` in the overlay).",
        f"- cuDNN's exhaustive algorithm search (onnxruntime's default) benchmarks every new "
        f"input shape, and early exit makes batches of every size: with it early exit ran at "
        f"{ex[0]:.0f} samples/s against {big[0]:.0f} with the heuristic search, so "
        "`cudnn_conv_algo_search` defaults to HEURISTIC.",
    ]


def _verdict(gpu: tuple[float, float, str], cpu: tuple[float, float, str]) -> list[str]:
    """Whether early exit paid on this GPU, against the same host's CPU provider."""
    if not gpu[1] or gpu[0] / gpu[1] >= 1.5:
        return []
    return [
        f"- With 256 samples per request early exit does not pay on this GPU ({gpu[2]}), "
        f"while it does on the same host's CPU provider ({cpu[2]}): at {gpu[1]:.0f} "
        "samples/s full depth, per-request CPU work rather than the model bounds the "
        "server, and a request waits for its survivors' later stages. Early exit pays on a "
        "GPU where the model's compute is the bottleneck.",
    ]


def section(res: GpuResults, command: str, cores: int) -> list[str]:
    """The GPU section's markdown, markers included."""
    env = overlay_env()
    return [
        BEGIN,
        "## GPU",
        "",
        f"Measured {res.started} on {res.card}, {cores} CPU cores, with:",
        "",
        "```bash",
        command,
        "```",
        "",
        "Server settings: the GPU overlay's (`deploy/k8s/overlays/gpu/config.env`: batching "
        f"`{env.get('EXITSERVE_BATCHING', 'default')}`, CUDA execution provider, hidden "
        "states kept on the device between segments). The load generator runs on the same "
        "host; figures are medians over rounds.",
        "",
        *_reading(res),
        "",
        *report_table(res.server),
        "",
        END,
    ]


def splice(doc: str, lines: list[str]) -> str:
    """Put the GPU section into `doc`, replacing an earlier one or appending it."""
    block = "\n".join(lines)
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        return head + block + rest.split(END, 1)[1]
    return doc.rstrip("\n") + "\n\n" + block + "\n"


def kept_section(doc_path: Path) -> list[str] | None:
    """An earlier run's GPU section, kept when this machine has no GPU."""
    doc = doc_path.read_text() if doc_path.exists() else ""
    if BEGIN not in doc or END not in doc:
        return None
    return [BEGIN + doc.split(BEGIN, 1)[1].split(END, 1)[0] + END]
