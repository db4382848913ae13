"""Start and stop a real `exitserve serve` process on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A running server: its base URL, metrics URL and process."""

    url: str
    metrics_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_ready(url: str, timeout_s: float, process: subprocess.Popen[bytes]) -> None:
    """Poll /v2/health/ready until 200; fail early if the process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"server at {url} not ready after {timeout_s} s")


@contextmanager
def running_server(
    repository: Path, log_dir: Path, env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (), ready_timeout_s: float = 120.0,
) -> Iterator[ServerProcess]:  # fmt: skip
    """Run `exitserve serve` against `repository` until the block ends, then SIGTERM it."""
    port, metrics_port = free_port(), free_port()
    cmd = [
        sys.executable, "-m", "service.cli", "serve", "--model-repository", str(repository),
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port), *args,
    ]  # fmt: skip
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})  # fmt: skip
    server = ServerProcess(
        f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}", proc, log_path
    )
    try:
        wait_ready(server.url, ready_timeout_s, proc)
        yield server
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGTERM, wait for the drain, SIGKILL only if it overstays."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return int(proc.returncode)
