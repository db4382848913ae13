"""Rolling a model forward on a live server under load: nothing fails, nothing is mixed up.

Clients send requests without pause while the repository API loads a new version, is
refused a broken one, and unloads the old one; every single request must get its 200.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import httpx
import numpy as np

from tests.service.api.v2helpers import MODEL, binary_request, decode_response
from tests.service.conftest import LiveServerFactory

TOKEN = "reload-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _add_version(repo: Path, version: str, *, break_segment: bool = False) -> None:
    """Copy version 1 as `version`; optionally truncate a segment to make it unloadable."""
    src, dst = repo / MODEL / "1", repo / MODEL / version
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["version"] = version
    (dst / "manifest.json").write_text(json.dumps(manifest))
    if break_segment:
        segment = dst / manifest["segments"][1]["file"]
        segment.write_bytes(segment.read_bytes()[:100])


def _hammer(
    url: str,
    body: bytes,
    headers: dict[str, str],
    stop: threading.Event,
    statuses: list[int],
    labels: list[np.ndarray],
) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            response = client.post(f"{url}/v2/models/{MODEL}/infer", content=body, headers=headers)
            statuses.append(response.status_code)
            if response.status_code == 200:
                labels.append(decode_response(response)["label"])


def test_reload_under_load_fails_no_request(
    live_server: LiveServerFactory, tiny_repository: Path, tmp_path: Path, mnist_samples
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repository, repo)
    body, headers = binary_request(mnist_samples[0][:8])
    stop, statuses, labels = threading.Event(), [], []
    with live_server(repository=repo, env={"EXITSERVE_ADMIN_TOKEN": TOKEN}) as server:
        admin = httpx.Client(base_url=server.url, headers=AUTH, timeout=60)
        args = (server.url, body, headers, stop, statuses, labels)
        clients = [threading.Thread(target=_hammer, args=args) for _ in range(3)]
        for c in clients:
            c.start()
        try:
            _add_version(repo, "2")
            loaded = admin.post(
                f"/v2/repository/models/{MODEL}/load", json={"parameters": {"version": "2"}}
            )
            assert loaded.status_code == 200, loaded.text
            _add_version(repo, "3", break_segment=True)
            broken = admin.post(
                f"/v2/repository/models/{MODEL}/load", json={"parameters": {"version": "3"}}
            )
            assert broken.status_code == 400
            assert "version '3'" in broken.json()["error"]
            assert str(repo) not in broken.text  # no filesystem paths leak
            unloaded = admin.post(
                f"/v2/repository/models/{MODEL}/unload", json={"parameters": {"version": "1"}}
            )
            assert unloaded.status_code == 200, unloaded.text
            versions = httpx.get(f"{server.url}/v2/models/{MODEL}").json()["versions"]
        finally:
            stop.set()
            for c in clients:
                c.join(timeout=60)
    assert versions == ["2"]
    assert len(statuses) > 10, "the load never ran"
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert all((got == labels[0]).all() for got in labels)  # the same weights in every version
