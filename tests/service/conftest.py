"""Fixtures for the service tests: a real `exitserve serve` process on a free loopback port.

`live_server` is a factory (session-scoped, so each test module starts as few servers as it
needs): `with live_server(env={...}, args=[...]) as server:` yields a `LiveServer` once
/v2/health/ready answers 200, and SIGTERMs it at the end of the block.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    """A running server process: its base URLs, the process and its log."""

    url: str
    metrics_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

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


def wait_ready(server: LiveServer, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll /v2/health/ready until 200; fail fast, with the log, if the process dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    pytest.fail(f"server not ready after {timeout_s} s:\n{server.log()}")


def serve_command(repository: Path, port: int, metrics_port: int, args: Sequence[str]) -> list[str]:
    return [
        sys.executable, "-m", "service.cli", "serve", "--model-repository", str(repository),
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port), *args,
    ]  # fmt: skip


@contextmanager
def running_server(
    repository: Path, log_dir: Path, args: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> Iterator[LiveServer]:
    port, metrics_port = free_port(), free_port()
    log_path = log_dir / f"server-{port}.log"
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("EXITSERVE_")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            serve_command(repository, port, metrics_port, args), stdout=log,
            stderr=subprocess.STDOUT, env={**clean_env, **(env or {})},
        )  # fmt: skip
    server = LiveServer(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}",
                        process, log_path)  # fmt: skip
    try:
        wait_ready(server)
        yield server
    finally:
        server.stop()


LiveServerFactory = Callable[..., AbstractContextManager[LiveServer]]


@pytest.fixture(scope="session")
def live_server(
    tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> LiveServerFactory:
    """Start servers on the `tiny` model: `with live_server(args=[...], env={...}) as s:`."""
    log_dir = tmp_path_factory.mktemp("server-logs")

    def start(
        args: Sequence[str] = (), env: Mapping[str, str] | None = None,
        repository: Path | None = None,
    ) -> AbstractContextManager[LiveServer]:  # fmt: skip
        return running_server(repository or tiny_repository, log_dir, args, env)

    return start
