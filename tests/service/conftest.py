"""Fixtures for the service tests: a real `exitserve serve` process on a free loopback port.

`live_server` is a factory (session-scoped, so each test module starts as few servers as it
needs): `with live_server(env={...}, args=[...]) as server:` yields a `LiveServer` once
/v2/health/ready answers 200, and SIGTERMs it at the end of the block.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from loadtest.server import LiveServer, running_server

__all__ = ["LiveServer", "LiveServerFactory", "running_server"]


LiveServerFactory = Callable[..., AbstractContextManager[LiveServer]]


@pytest.fixture(scope="session")
def live_server(
    tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> LiveServerFactory:
    """Start servers on the `tiny` model: `with live_server(args=[...], env={...}) as s:`."""
    log_dir = tmp_path_factory.mktemp("server-logs")

    def start(
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        repository: Path | None = None,
    ) -> AbstractContextManager[LiveServer]:
        return running_server(repository or tiny_repository, log_dir, args, env)

    return start
