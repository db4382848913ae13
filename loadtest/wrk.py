"""Closed-loop load from wrk, a compiled client, so the figure is the server's, not Python's.

On a small machine a Python load generator takes most of the cores the server needs: it
measured a third of what wrk finds. wrk cannot check answers, so the Python generators stay
for correctness (labels, accuracy on the same images) and for open-loop schedules; wrk gives
throughput and latency. Its own CPU use, read from the kernel's accounting of the finished
process, is reported beside every figure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest.client import HEADER_LENGTH, EncodedRequest
from loadtest.report import Report, cpu_share

SCRIPT = Path(__file__).with_name("wrk.lua")
INSTALL_HINT = "wrk is not installed: `make system-deps` (as root) or `apt-get install wrk`"


class WrkMissing(RuntimeError):
    """wrk is not on PATH; the benchmark cannot measure without a light client."""


def wrk_path() -> str:
    """The wrk binary; WrkMissing (with how to install it) when there is none."""
    found = shutil.which("wrk")
    if found is None:
        raise WrkMissing(INSTALL_HINT)
    return found


def wrk_version() -> str:
    """wrk's version as it prints it (wrk has no --version; its usage line names it)."""
    out = subprocess.run([wrk_path(), "-v"], capture_output=True, text=True, timeout=10)
    match = re.search(r"wrk (\S+)", out.stdout + out.stderr)
    return match.group(1) if match else "unknown"


@dataclass(frozen=True)
class Bodies:
    """Request bodies written once for wrk's script: one data file and its index."""

    data: Path
    index: Path
    samples_per_request: int


def write_bodies(reqs: Sequence[EncodedRequest], folder: Path) -> Bodies:
    """Write v2 bodies, binary or JSON (any number; wrk rotates through them in order)."""
    if not reqs:
        raise ValueError("wrk needs at least one request body")
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="bodies-", suffix=".bin", dir=folder)
    data, index = Path(name), Path(name).with_suffix(".idx")
    lines, offset = [], 0
    with os.fdopen(fd, "wb") as out:
        for r in reqs:
            out.write(r.body)
            lines.append(f"{offset} {len(r.body)} {r.headers.get(HEADER_LENGTH, '0')}")
            offset += len(r.body)
    index.write_text("\n".join(lines) + "\n")
    return Bodies(data, index, len(reqs[0].labels))


def run_wrk(
    url: str, bodies: Bodies, connections: int, seconds: float, timeout_s: float = 10.0
) -> Report:
    """One wrk run (one thread, `connections` kept-alive connections) as a Report."""
    duration = max(1, round(seconds))  # wrk takes whole seconds
    cmd = [
        *(wrk_path(), "-t1", f"-c{connections}", f"-d{duration}s", f"--timeout={timeout_s:g}s"),
        *("-s", str(SCRIPT), url, "--", str(bodies.data), str(bodies.index)),
    ]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # the finished child's own CPU time
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text, errors = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {errors or text}")
    summary = _summary(text)
    return _report(summary, bodies.samples_per_request, usage.ru_utime + usage.ru_stime)


def _summary(text: str) -> dict[str, int]:
    """The JSON line the script's done() prints, among wrk's own report."""
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            parsed: dict[str, int] = json.loads(line)
            return parsed
    raise RuntimeError(f"wrk printed no summary:\n{text}")


def _report(s: dict[str, int], per_request: int, cpu_s: float) -> Report:
    elapsed = s["duration_us"] / 1e6
    socket = s["connect"] + s["read"] + s["write"] + s["timeout"]
    ok = s["requests"] - s["status"]
    errors = {k: v for k, v in (("non-2xx", s["status"]), ("socket", socket)) if v}
    return Report(
        requests=s["requests"],
        ok=ok,
        elapsed_s=elapsed,
        requests_per_s=ok / elapsed,
        samples_per_s=ok * per_request / elapsed,
        p50_ms=s["p50_us"] / 1000.0,
        p95_ms=s["p95_us"] / 1000.0,
        p99_ms=s["p99_us"] / 1000.0,
        max_ms=s["max_us"] / 1000.0,
        errors=errors,
        client_cpu=cpu_share(cpu_s, elapsed),
    )
