"""The metrics port: /metrics from a second uvicorn server in the app's own event loop.

prometheus_client's `start_http_server` runs a thread per connection with no deadline, so
a client that never finishes its request head holds a thread for ever, and any number of
them. Here the metrics port speaks the data port's protocol (`service.http_limits`): the
same header cap, head/body deadlines, connection cap and keep-alive limits.

uvicorn's `Server.startup()`/`shutdown()` are used rather than `serve()`: `serve()` would
install its own SIGTERM/SIGINT handlers over the data port's drain. `startup()` expects
`serve()` to have set `server.lifespan`; with lifespan off that is uvicorn's no-op class.
The socket is bound here, so a port in use raises OSError (uvicorn would `sys.exit`).
"""

from __future__ import annotations

import logging
import socket

import uvicorn
from prometheus_client import CollectorRegistry, make_asgi_app

from service.http_limits import Limits, protocol_class
from service.settings import Settings

log = logging.getLogger(__name__)
# Scrapes in progress get this long to finish on shutdown; idle and half-sent ones close at once.
SHUTDOWN_GRACE_S = 5


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv4 or IPv6, whichever `host` resolves to)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family, backlog=128)


def metrics_config(settings: Settings, registry: CollectorRegistry) -> uvicorn.Config:
    """uvicorn settings for the metrics port, limits as on the data port.

    `log_config`/`log_level` are None so that building this config leaves the logging the
    data port's config set up alone (uvicorn applies them to process-wide loggers).
    """
    config = uvicorn.Config(
        make_asgi_app(registry),
        http=protocol_class(Limits.from_settings(settings)),
        ws="none",
        lifespan="off",
        log_config=None,
        log_level=None,
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=settings.keep_alive_timeout_s,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    config.load()
    return config


class MetricsPort:
    """Open and close the metrics port; both calls are idempotent."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.settings, self.registry = settings, registry
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None

    async def start(self) -> None:
        if self._server is not None:
            return
        config = metrics_config(self.settings, self.registry)
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        sock = listen(self.settings.host, self.settings.metrics_port)
        try:
            await server.startup(sockets=[sock])
        except BaseException:
            sock.close()
            raise
        self._server, self._socket = server, sock
        log.info("metrics on http://%s:%d/metrics", self.settings.host, self.settings.metrics_port)

    async def stop(self) -> None:
        """Stop accepting, close idle and half-sent connections, let scrapes finish."""
        server, sock = self._server, self._socket
        self._server = self._socket = None
        if server is not None and sock is not None:
            await server.shutdown(sockets=[sock])
