"""Start and stop a real `exitserve serve` process on a free loopback port.

The one way the benchmarks, the soak and the tests start a server: a subprocess, so that
what is measured or tested is the real command with its real signal handling.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

READY_TIMEOUT_S = 120.0
EXIT_SAMPLES = "exitserve_samples_total"  # samples answered, by exit
STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerFailed(RuntimeError):
    """The server died or never became ready; the message ends with its log."""


@dataclass
class LiveServer:
    """A running server process: its base URLs, the process and its log."""

    url: str
    metrics_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far, all threads (from /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def exit_counts(self, model: str) -> list[float]:
        """Samples answered so far at each exit of `model`, from the server's own metrics.

        A compiled load generator does not read answers; the server counts them anyway.
        """
        with urllib.request.urlopen(f"{self.metrics_url}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        counts: dict[int, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == EXIT_SAMPLES and s.labels.get("model") == model:
                    k = int(s.labels["exit"])
                    counts[k] = counts.get(k, 0.0) + s.value
        if not counts:
            raise ServerFailed(f"no {EXIT_SAMPLES} series for model {model!r} in /metrics")
        return [counts.get(k, 0.0) for k in range(max(counts) + 1)]

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait for the drain; SIGKILL (and a failing exit code) if it overstays."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return int(self.process.returncode)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def wait_ready(server: LiveServer, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll /v2/health/ready until 200; fail fast, with the log, if the process dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerFailed(f"server exited with {server.process.returncode}:\n{server.log()}")
        if _ready(server.url):
            return
        time.sleep(0.1)
    server.stop()
    raise ServerFailed(f"server not ready after {timeout_s} s:\n{server.log()}")


def serve_command(repository: Path, port: int, metrics_port: int, args: Sequence[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "service.cli",
        "serve",
        "--model-repository",
        str(repository),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        *args,
    ]


@contextmanager
def running_server(
    repository: Path,
    log_dir: Path,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
    source: Path | None = None,
) -> Iterator[LiveServer]:
    """Run `exitserve serve` on `repository` until the block ends, then SIGTERM it.

    The caller's EXITSERVE_* variables are dropped so only `args` and `env` configure it.
    `source`: a checkout whose code the server runs (its working directory: `python -m`
    puts that first on sys.path, ahead of PYTHONPATH); None runs this process's.
    """
    port, metrics_port = free_port(), free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{port}.log"
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("EXITSERVE_")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            serve_command(repository, port, metrics_port, args),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**clean_env, **(env or {})},
            cwd=source,
        )
    server = LiveServer(
        f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}", process, log_path
    )
    try:
        wait_ready(server, ready_timeout_s)
        yield server
    finally:
        server.stop()
