"""The load generators run against the same real-server fixture as the service tests."""

from tests.service.conftest import live_server

__all__ = ["live_server"]
