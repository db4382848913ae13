"""On a live server: a version that disagrees with its files is refused (400 naming the
problem) while traffic flows and the old version keeps answering every request; one that
is broken on disk at start is not served; 404 means "not in the repository", 503 "in the
repository but not loaded"."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from tests.service.api.v2helpers import HEADER, MODEL, binary_request
from tests.service.conftest import LiveServerFactory
from tests.service.engine.broken_versions import BREAKAGES, add_broken_version, five_labels

TOKEN = "verify-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LOAD = f"/v2/repository/models/{MODEL}/load"
MIN_ANSWERS = 20  # requests answered before the first load, so traffic surely overlaps


def _served_version(response: httpx.Response) -> str:
    length = response.headers.get(HEADER)
    head = response.content if length is None else response.content[: int(length)]
    return str(orjson.loads(head)["model_version"])


class Traffic:
    """Clients sending unversioned requests without pause; every answer is recorded."""

    def __init__(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        self.answers: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._args = (url, body, headers)
        self._threads = [threading.Thread(target=self._send) for _ in range(3)]

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def _send(self) -> None:
        url, body, headers = self._args
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                r = client.post(f"{url}/v2/models/{MODEL}/infer", content=body, headers=headers)
                self.answers.append((r.status_code, _served_version(r) if r.is_success else ""))

    def wait_for(self, count: int) -> None:
        """Until `count` answers are in (bounded by the clients' own timeouts)."""
        while len(self.answers) < count and any(t.is_alive() for t in self._threads):
            self._stop.wait(0.01)


def test_broken_versions_are_refused_under_traffic(
    live_server: LiveServerFactory, tiny_repository: Path, tmp_path: Path, mnist_samples
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repository, repo)
    body, headers = binary_request(mnist_samples[0][:4])
    with (
        live_server(
            repository=repo, args=["--device", "cpu"], env={"EXITSERVE_ADMIN_TOKEN": TOKEN}
        ) as server,
        httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as admin,
        Traffic(server.url, body, headers) as traffic,
    ):
        traffic.wait_for(MIN_ANSWERS)
        for number, (_, edit, words) in enumerate(BREAKAGES, start=2):
            add_broken_version(repo, str(number), edit)
            refused = admin.post(LOAD, json={"parameters": {"version": str(number)}})
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert f"version '{number}'" in error
            assert all(w in error for w in words), error
            assert str(tmp_path) not in error
        answered_during_loads = len(traffic.answers)
        index = admin.post("/v2/repository/index").json()
    states = {e["version"]: e["state"] for e in index}
    assert states == {"1": "READY", **{str(n): "UNAVAILABLE" for n in range(2, 2 + len(BREAKAGES))}}
    assert answered_during_loads > MIN_ANSWERS
    counts: dict[tuple[int, str], int] = {}
    for answer in traffic.answers:
        counts[answer] = counts.get(answer, 0) + 1
    assert list(counts) == [(200, "1")], counts  # zero failures, and version 1 answered all


@pytest.fixture(scope="module")
def broken_at_start(
    live_server: LiveServerFactory, tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """A server started on tiny/1, a tiny/2 with 5 labels over 10-class segments, and a
    second model (so that unloading tiny leaves the server ready)."""
    repo = tmp_path_factory.mktemp("broken-at-start") / "repo"
    shutil.copytree(tiny_repository, repo)
    add_broken_version(repo, "2", five_labels)
    other = repo / "other" / "1"
    shutil.copytree(repo / MODEL / "1", other)
    manifest = orjson.loads((other / "manifest.json").read_bytes())
    (other / "manifest.json").write_bytes(orjson.dumps({**manifest, "name": "other"}))
    with (
        live_server(
            repository=repo, args=["--device", "cpu"], env={"EXITSERVE_ADMIN_TOKEN": TOKEN}
        ) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        yield client


def test_a_version_broken_at_start_is_not_served(
    broken_at_start: httpx.Client, mnist_samples
) -> None:
    body, headers = binary_request(mnist_samples[0][:2])
    answer = broken_at_start.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert _served_version(answer) == "1"
    index = broken_at_start.post("/v2/repository/index", headers=AUTH).json()
    entry = next(e for e in index if e["version"] == "2")
    assert entry["state"] == "UNAVAILABLE"
    assert "5 labels" in entry["reason"]


def _call(client: httpx.Client, path: str) -> httpx.Response:
    if path.endswith("/ready"):
        return client.get(path)
    body, headers = binary_request(np.zeros((1, 1, 28, 28), np.float32))
    return client.post(path, content=body, headers=headers)


def test_404_for_what_the_repository_lacks_503_for_what_it_does_not_serve(
    broken_at_start: httpx.Client,
) -> None:
    for path in (f"/v2/models/{MODEL}/versions/2/infer", f"/v2/models/{MODEL}/versions/2/ready"):
        response = _call(broken_at_start, path)
        assert response.status_code == 503, (path, response.text)
        assert int(response.headers["retry-after"]) >= 1
        assert "in the model repository but not loaded" in response.json()["error"]
    for path in (
        f"/v2/models/{MODEL}/versions/9/infer",
        "/v2/models/nope/infer",
        "/v2/models/nope/ready",
    ):
        response = _call(broken_at_start, path)
        assert response.status_code == 404, (path, response.text)
        assert "retry-after" not in response.headers


def test_an_unloaded_model_answers_503_until_loaded_again(
    broken_at_start: httpx.Client, mnist_samples
) -> None:
    body, headers = binary_request(mnist_samples[0][:1])
    infer = f"/v2/models/{MODEL}/infer"
    unloaded = broken_at_start.post(f"/v2/repository/models/{MODEL}/unload", headers=AUTH)
    assert unloaded.status_code == 200, unloaded.text
    try:
        assert broken_at_start.get("/v2/health/ready").status_code == 200  # `other` serves
        gone = broken_at_start.post(infer, content=body, headers=headers)
        assert gone.status_code == 503, gone.text
        assert "retry-after" in gone.headers
        assert broken_at_start.get(f"/v2/models/{MODEL}/ready").status_code == 503
    finally:
        loaded = broken_at_start.post(LOAD, headers=AUTH, json={"parameters": {"version": "1"}})
    assert loaded.status_code == 200, loaded.text
    assert broken_at_start.post(infer, content=body, headers=headers).status_code == 200


def test_admin_413_names_the_admin_limit(broken_at_start: httpx.Client) -> None:
    big = orjson.dumps({"parameters": {"version": "1"}, "pad": "x" * 5000})
    response = broken_at_start.post(
        LOAD, headers={**AUTH, "Content-Type": "application/json"}, content=big
    )
    assert response.status_code == 413
    error = response.json()["error"]
    assert "4096 bytes" in error
    assert "admin" in error
    assert "max_body_bytes" not in error  # that setting does not govern this endpoint
