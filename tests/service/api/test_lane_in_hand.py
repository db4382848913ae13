"""A small request whose body came with its head is started in the protocol's callback.

The server's own protocol (service/http_limits.py with the app's infer lane) over a
transport that records what is written; the app, its data plane and the `tiny` model are
real. What the protocol has written when `data_received` returns, and which tasks it has
started, are deterministic: no timing is involved.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from uvicorn.server import ServerState

from service.app import create_app
from service.http_lane import InferLane
from service.http_limits import LimitedHttpTools, Limits, protocol_class
from service.settings import Settings
from tests.service.api.v2helpers import MODEL, binary_request, json_request, raw_post
from tests.service.engine.conftest import run

INFER = f"/v2/models/{MODEL}/infer"


class Recorder(asyncio.Transport):
    """A connection's transport that keeps what the protocol writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def take(self) -> tuple[int, bytes]:
        """The status and body of the one response written so far; then forget it."""
        head, _, body = bytes(self.written).partition(b"\r\n\r\n")
        self.written.clear()
        return int(head.split(b" ", 2)[1]), body


@asynccontextmanager
async def connection(repository: Path, **settings: Any) -> AsyncIterator[LimitedHttpTools]:
    """One connection to a started app, through the data port's protocol class."""
    values = {"model_repository": repository, "device": "cpu", "metrics_port": 0, **settings}
    config_settings = Settings(**values)
    app = create_app(config_settings)
    await app.state.lifecycle.start()
    try:
        limits = Limits.from_settings(config_settings)
        config = uvicorn.Config(
            app,
            http=protocol_class(limits, InferLane(app)),
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,  # as served: else uvicorn hands every request to the app
            proxy_headers=False,
        )
        config.load()
        protocol = config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=ServerState(), app_state={}
        )
        assert isinstance(protocol, LimitedHttpTools)
        protocol.connection_made(Recorder())
        yield protocol
    finally:
        await app.state.lifecycle.drain()


def request(body: bytes, headers: dict[str, str] | None = None) -> bytes:
    return raw_post(INFER, body, headers)


def responses(protocol: LimitedHttpTools) -> list[bytes]:
    """Each response written so far, from its status code on."""
    return bytes(recorder(protocol).written).split(b"HTTP/1.1 ")[1:]


def recorder(protocol: LimitedHttpTools) -> Recorder:
    transport = protocol.transport
    assert isinstance(transport, Recorder)
    return transport


async def answered_by_tasks(protocol: LimitedHttpTools) -> tuple[int, bytes]:
    """Let the protocol's tasks finish (a task that reads a body hands its answer's future
    over to them); the response they wrote."""
    while protocol.tasks:
        await asyncio.gather(*protocol.tasks)
    return recorder(protocol).take()


def test_a_lone_request_is_answered_before_the_read_returns(
    tiny_repository: Path, samples: np.ndarray
) -> None:
    body, headers = binary_request(samples[:1])

    async def body_() -> None:
        # inline_max_ms at its highest: whether stage 0 is quick must not depend on timing
        async with connection(tiny_repository, inline_max_ms=100) as protocol:
            protocol.data_received(request(body, headers))  # stage 0's cost is not known yet
            assert protocol.tasks, "the first request is queued: it waits in a task"
            first = await answered_by_tasks(protocol)
            protocol.data_received(request(body, headers))
            assert not protocol.tasks
            again = recorder(protocol).take()
            assert again[0] == first[0] == 200
            assert again[1] == first[1]

    run(body_)


def test_a_bad_request_in_hand_is_refused_at_once(tiny_repository: Path) -> None:
    async def body_() -> None:
        async with connection(tiny_repository) as protocol:
            protocol.data_received(request(b'{"inputs": [}'))
            assert not protocol.tasks
            status, text = recorder(protocol).take()
            assert status == 400
            assert "error" in json.loads(text)

    run(body_)


def test_a_body_in_a_later_read_is_read_by_a_task(
    tiny_repository: Path, samples: np.ndarray
) -> None:
    whole = request(json_request(samples[:2]))
    cut = whole.index(b"\r\n\r\n") + 4 + 10  # the head and ten bytes of the body

    async def body_() -> None:
        async with connection(tiny_repository) as protocol:
            protocol.data_received(whole)
            in_hand = await answered_by_tasks(protocol)
            protocol.data_received(whole[:cut])
            assert protocol.tasks
            assert not recorder(protocol).written
            protocol.data_received(whole[cut:])
            assert await answered_by_tasks(protocol) == in_hand
            assert in_hand[0] == 200

    run(body_)


def test_a_compressed_body_goes_to_a_task(tiny_repository: Path, samples: np.ndarray) -> None:
    async def body_() -> None:
        async with connection(tiny_repository) as protocol:
            gz = request(gzip.compress(json_request(samples[:1])), {"Content-Encoding": "gzip"})
            protocol.data_received(gz)
            assert protocol.tasks
            assert (await answered_by_tasks(protocol))[0] == 200

    run(body_)


def test_requests_pipelined_behind_a_queued_one_are_answered_in_order(
    tiny_repository: Path, samples: np.ndarray
) -> None:
    reads = request(json_request(samples[:1])) + request(b"{") + request(json_request(samples[:2]))

    async def body_() -> None:
        async with connection(tiny_repository) as protocol:
            protocol.data_received(reads)  # the first is queued: the others wait behind it
            while protocol.tasks:
                await asyncio.gather(*protocol.tasks)
            answers = responses(protocol)
            statuses = [int(a[:3]) for a in answers]
            assert statuses == [200, 400, 200]
            assert json.loads(answers[2].partition(b"\r\n\r\n")[2])["outputs"]

    run(body_)


def test_no_idle_timer_runs_while_a_request_of_the_same_read_is_in_flight(
    tiny_repository: Path, samples: np.ndarray
) -> None:
    """The first request is answered within the read and arms uvicorn's keep-alive timer;
    the second, in the same read, goes on past stage 0: that timer must not close it."""
    one, headers = binary_request(samples[:1])
    deep = json_request(samples[:1], parameters={"full_depth": True})

    async def body_() -> None:
        async with connection(tiny_repository, inline_max_ms=100) as protocol:
            protocol.data_received(request(one, headers))  # teaches stage 0's cost
            await answered_by_tasks(protocol)
            protocol.data_received(request(one, headers) + request(deep))
            assert protocol.tasks, "the full-depth request waits past stage 0"
            assert protocol.timeout_keep_alive_task is None
            while protocol.tasks:
                await asyncio.gather(*protocol.tasks)
            statuses = [int(a[:3]) for a in responses(protocol)]
            assert statuses == [200, 200]

    run(body_)


@pytest.mark.parametrize("gzipped", [False, True], ids=["in hand", "read by a task"])
def test_a_queued_request_whose_client_hangs_up_is_dropped_and_counted(
    tiny_repository: Path, samples: np.ndarray, gzipped: bool
) -> None:
    """The protocol cancels the pending answer when the connection is lost: the rows are
    never run, nothing is written, and the request is counted as 499. Both ways in: a
    body in hand, and one the lane reads in a task (compressed)."""
    body, headers = binary_request(samples[:1])
    if gzipped:
        body, headers = gzip.compress(body), {**headers, "Content-Encoding": "gzip"}

    async def body_() -> None:
        async with connection(tiny_repository, inline_max_ms=0) as protocol:  # all queued
            protocol.data_received(request(body, headers))
            assert (await answered_by_tasks(protocol))[0] == 200
            assert _answered_samples(protocol) == 1
            protocol.data_received(request(body, headers))
            await asyncio.sleep(0)  # a task reading the body has queued the request
            assert any(not isinstance(t, asyncio.Task) for t in protocol.tasks), "queued"
            protocol.connection_lost(None)
            while protocol.tasks:
                await asyncio.gather(*protocol.tasks, return_exceptions=True)
            await asyncio.sleep(0.05)  # the stage loop has had its turns
            assert not recorder(protocol).written
            assert _answered_samples(protocol) == 1, "a gone client's row was run"
            counted = {"model": MODEL, "endpoint": "infer", "code": "499"}
            assert _registry(protocol).get_sample_value("exitserve_requests_total", counted) == 1

    run(body_)


def _registry(protocol: LimitedHttpTools) -> CollectorRegistry:
    assert protocol.lane is not None
    return protocol.lane.metrics.registry


def _answered_samples(protocol: LimitedHttpTools) -> float:
    """Samples the app has answered, over every exit."""
    families = _registry(protocol).collect()
    return sum(s.value for f in families for s in f.samples if s.name == "exitserve_samples_total")


def test_a_queued_request_cancelled_at_shutdown_is_answered_503(
    tiny_repository: Path, samples: np.ndarray
) -> None:
    """Past the graceful timeout uvicorn cancels the server's tasks: a queued request held
    among them still gets an answer."""
    body, headers = binary_request(samples[:1])

    async def body_() -> None:
        async with connection(tiny_repository, inline_max_ms=0) as protocol:
            protocol.data_received(request(body, headers))
            for task in list(protocol.tasks):
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
            await asyncio.gather(*protocol.tasks, return_exceptions=True)
            await asyncio.sleep(0)  # the answer's callback
            status, text = recorder(protocol).take()
            assert status == 503
            assert "shutting down" in json.loads(text)["error"]

    run(body_)
