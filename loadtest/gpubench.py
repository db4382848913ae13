"""The GPU section of `make bench`: early exit on the CUDA execution provider.

Filled in only where onnxruntime can create a CUDA session. The server runs with the GPU
overlay's settings (deploy/k8s/overlays/gpu), so the figures are what a GPU deployment
gets; the same host's CPU provider runs beside it for scale. The section lives between
markers in docs/benchmarks.md, so a later run on a machine without a GPU keeps it.
"""

from __future__ import annotations

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
GPU_ENV = {
    "EXITSERVE_DEVICE": "cuda",
    "EXITSERVE_BATCHING": '{"max_batch_size": 64, "max_queue_delay_ms": 2.0}',
}
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
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "a CUDA device (nvidia-smi unavailable)"
    name, _, driver = out.splitlines()[0].partition(",")
    return f"{name.strip()} (driver {driver.strip()})"


def _inprocess(res: GpuResults, version_dir: Path, x: np.ndarray) -> None:
    """The same segments as bare CUDA sessions, batch 256, hidden states via the host."""
    chain = inprocess.load_chain(version_dir, providers=["CUDAExecutionProvider"])
    inprocess.throughput(chain, x[:512], 256)  # warm-up: cuDNN picks its algorithms
    for _ in range(2):
        for name, full in (("early exit", False), ("full depth", True)):
            fps = inprocess.throughput(chain, x, 256, full_depth=full)
            res.inproc[name] = max(res.inproc.get(name, 0.0), fps)


def _loads(x: np.ndarray, y: np.ndarray) -> dict[str, tuple[list[EncodedRequest], int]]:
    """Request sets: 64 samples per request (8 clients) and 1 sample (32 clients)."""
    out = {}
    for per, clients in ((64, 8), (1, 32)):
        n = len(x) // per * per
        out[f"{per}/request"] = ([encode(x[i : i + per], y[i : i + per], "binary", None)
                                  for i in range(0, n, per)], clients)  # fmt: skip
        out[f"{per}/request full"] = ([encode(x[i : i + per], y[i : i + per], "binary",
                                              {"full_depth": True})
                                       for i in range(0, n, per)], clients)  # fmt: skip
    return out


def _server(res: GpuResults, provider: str, env: dict[str, str], repo: Path, model: str,
            data: tuple[np.ndarray, np.ndarray], measure: Measure, seconds: float,
            rounds: int, logs: Path) -> None:  # fmt: skip
    """Each load early exit vs full depth, interleaved, against one server."""
    loads = _loads(*data)
    with running_server(repo, logs, env=env) as srv:
        url = f"{srv.url}/v2/models/{model}/infer"
        for _ in range(rounds):
            for name, (reqs, clients) in loads.items():
                key = f"{provider}, {name.replace(' full', '')}, " + (
                    "full depth" if name.endswith("full") else "early exit"
                )
                rep = measure(url, reqs, clients, Bounds(duration_s=seconds, warmup_requests=20))
                click.echo(f"  {key:>40}: {rep.line()}")
                res.server.setdefault(key, []).append(rep)
        if provider == "CUDA":
            one = loads["1/request"][0]
            res.server["CUDA, concurrency 1, early exit"] = [
                measure(url, one, 1, Bounds(duration_s=seconds, warmup_requests=20))
            ]
            for name in ("64/request", "64/request full"):
                reqs = loads[name][0]
                bounds = Bounds(duration_s=600.0, max_requests=len(reqs))
                res.accuracy[name] = measure(url, reqs, 2, bounds)


def run_gpu(repo: Path, model: str, x: np.ndarray, y: np.ndarray, measure: Measure,
            seconds: float, rounds: int, logs: Path) -> GpuResults:  # fmt: skip
    """Every GPU comparison; the CPU provider on the same host once, for scale."""
    res = GpuResults(card_name(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    click.echo(f"GPU: {res.card}")
    _inprocess(res, repo / model / "1", x)
    _server(res, "CUDA", GPU_ENV, repo, model, (x, y), measure, seconds, rounds, logs)
    _server(res, "CPU", {"EXITSERVE_DEVICE": "cpu"}, repo, model, (x, y), measure,
            seconds, 1, logs)  # fmt: skip
    return res


def section(res: GpuResults, command: str, cores: int) -> list[str]:
    """The GPU section's markdown, markers included."""
    ee, fd = res.inproc.get("early exit", 0.0), res.inproc.get("full depth", 0.0)
    acc = {k: r.accuracy for k, r in res.accuracy.items()}
    s_ee = med(res.server.get("CUDA, 64/request, early exit", []), "samples_per_s")
    s_fd = med(res.server.get("CUDA, 64/request, full depth", []), "samples_per_s")
    same = res.accuracy["64/request"].ok * 64 if "64/request" in res.accuracy else 0
    return [
        BEGIN, "## GPU", "",
        f"Measured {res.started} on {res.card}, {cores} CPU cores, with:", "",
        "```bash", command, "```", "",
        f"Server settings: the GPU overlay's (`{GPU_ENV['EXITSERVE_BATCHING']}`, "
        "CUDA execution provider, hidden states kept on the device between segments). "
        "The load generator runs on the same host.", "",
        f"- In-process limit (bare CUDA sessions, batch 256, hidden states via the host): "
        f"early exit {ee:.0f} samples/s, full depth {fd:.0f} samples/s "
        f"({ee / fd if fd else float('nan'):.2f}×).",
        f"- Server, 64 samples per request: early exit {s_ee:.0f} vs full depth "
        f"{s_fd:.0f} samples/s ({s_ee / s_fd if s_fd else float('nan'):.2f}×); accuracy "
        f"on the same {same} images: "
        f"{acc.get('64/request', float('nan')):.4f} vs "
        f"{acc.get('64/request full', float('nan')):.4f}.", "",
        *report_table(res.server), "", END,
    ]  # fmt: skip


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
