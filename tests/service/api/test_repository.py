"""Triton's repository API behind the bearer token: 401 without it, index/unload/load with
it, never a path from the client; and shut (403) on a server without a token."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.service.api.v2helpers import MODEL, binary_request, decode_response
from tests.service.conftest import LiveServer, LiveServerFactory

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LOAD, UNLOAD = f"/v2/repository/models/{MODEL}/load", f"/v2/repository/models/{MODEL}/unload"


@pytest.fixture(scope="module")
def admin(live_server: LiveServerFactory) -> Iterator[httpx.Client]:
    """Its own server: unloading models must not disturb the other tests' server."""
    with (
        live_server(args=["--device", "cpu"], env={"EXITSERVE_ADMIN_TOKEN": TOKEN}) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        yield client


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}]
)
@pytest.mark.parametrize("path", ["/v2/repository/index", LOAD, UNLOAD])
def test_without_the_token_401(admin: httpx.Client, path: str, headers: dict[str, str]) -> None:
    response = admin.post(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "token" in response.json()["error"]


def test_unload_then_load_with_the_token(admin: httpx.Client) -> None:
    index = admin.post("/v2/repository/index", headers=AUTH).json()
    assert {"name": MODEL, "version": "1", "state": "READY"} in index
    body, headers = binary_request(np.zeros((1, 1, 28, 28), np.float32))

    assert admin.post(UNLOAD, headers=AUTH).status_code == 200
    assert admin.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers).status_code in (
        404,
        503,
    )
    assert admin.post("/v2/repository/index", headers=AUTH, json={"ready": True}).json() == []

    loaded = admin.post(LOAD, headers=AUTH, json={"parameters": {"version": "1"}})
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["versions"] == ["1"]
    response = admin.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers)
    assert len(decode_response(response)["label"]) == 1


@pytest.mark.parametrize(
    "parameters",
    [{"config": "{}"}, {"file:1/segment_0.onnx": "AAAA"}, {"version": "../../etc"}, {"version": 1}],
)
def test_no_paths_or_overrides_from_the_client(
    admin: httpx.Client, parameters: dict[str, object]
) -> None:
    response = admin.post(LOAD, headers=AUTH, json={"parameters": parameters})
    assert response.status_code == 400
    assert "parameters." in response.json()["error"]


def test_unknown_model_is_refused(admin: httpx.Client) -> None:
    assert admin.post("/v2/repository/models/nope/load", headers=AUTH).status_code in (400, 404)
    assert admin.post("/v2/repository/models/nope/unload", headers=AUTH).status_code == 404


def test_shut_without_a_configured_token(client: httpx.Client, server: LiveServer) -> None:
    """The shared server has no token: the repository API answers 403, whatever is sent."""
    response = client.post("/v2/repository/index", headers=AUTH)
    assert response.status_code == 403
    assert "EXITSERVE_ADMIN_TOKEN" in response.json()["error"]
