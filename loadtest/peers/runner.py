"""Install, start and stop the optional peers; the benchmark's side (main virtualenv).

Each peer has a virtualenv of its own under build/peers/<name>, made by
`python -m loadtest.peers install <name>`, so its dependencies never meet exitserve's.
The benchmark starts a peer as a process group on free ports and stops the whole group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

from loadtest.server import free_port

ROOT = Path(__file__).resolve().parents[2]
VENVS = ROOT / "build" / "peers"
READY_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class PeerKind:
    """How to install and start one peer."""

    name: str
    label: str  # as the document names it
    packages: tuple[str, ...]
    module: str
    encoding: Literal["binary", "json"] = "binary"  # the v2 bodies it reads
    # Triton's Python backend stub links the system's libpython, so its venv must use the
    # system interpreter, whose standard library matches that libpython.
    python: str = "/usr/bin/python3"

    @property
    def venv(self) -> Path:
        return VENVS / self.name

    @property
    def interpreter(self) -> Path:
        return self.venv / "bin" / "python"


PEERS = {
    "triton": PeerKind(
        "triton",
        "Triton (PyTriton), dynamic batcher",
        ("nvidia-pytriton==0.7.0", f"onnxruntime-gpu=={metadata.version('onnxruntime-gpu')}"),
        "loadtest.peers.triton_peer",
    ),
    "litserve": PeerKind(
        "litserve",
        "LitServe",
        ("litserve==0.2.19", f"onnxruntime-gpu=={metadata.version('onnxruntime-gpu')}"),
        "loadtest.peers.litserve_peer",
        encoding="json",  # LitServe parses JSON bodies only
        python=sys.executable,
    ),
}


class PeerMissing(RuntimeError):
    """A requested peer has no virtualenv yet."""


def install(kind: PeerKind) -> None:
    """Create the peer's virtualenv and install its packages (a registry download)."""
    if not kind.interpreter.exists():
        subprocess.run([kind.python, "-m", "venv", str(kind.venv)], check=True)
    pip = [str(kind.interpreter), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, *kind.packages], check=True)


@dataclass
class LivePeer:
    """A running peer: its base URL and process group."""

    kind: PeerKind
    url: str
    process: subprocess.Popen[bytes]

    def cpu_seconds(self) -> float:
        """CPU time of every live process in the peer's group (server, stubs, proxies)."""
        total = 0.0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.process.pid:  # process group id
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def exit_counts(self, model: str) -> list[float]:
        """A full-depth peer counts no exits."""
        return []


def _ready(url: str, model: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/models/{model}/ready", timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def check_installed(kind: PeerKind) -> None:
    """PeerMissing, saying how to install it, when the peer has no virtualenv."""
    if not kind.interpreter.exists():
        raise PeerMissing(f"peer {kind.name!r}: run `python -m loadtest.peers install {kind.name}`")


@contextmanager
def running_peer(kind: PeerKind, version_dir: Path, model: str, log: Path) -> Iterator[LivePeer]:
    """Start the peer on free ports, wait until the model is ready, stop its whole group."""
    check_installed(kind)
    http, grpc, metrics = free_port(), free_port(), free_port()
    cmd = [str(kind.interpreter), "-m", kind.module, "--version-dir", str(version_dir)]
    cmd += ["--model", model, "--http-port", str(http), "--grpc-port", str(grpc)]
    cmd += ["--metrics-port", str(metrics)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    peer = LivePeer(kind, f"http://127.0.0.1:{http}", proc)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _ready(peer.url, model):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"peer {kind.name!r} did not start:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield peer
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the group, then SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
