"""Every v2 read endpoint against a real server: metadata, health, readiness, config,
statistics, the OpenAPI document and request metrics on the metrics port."""

from __future__ import annotations

import httpx
import pytest

from tests.service.api.v2helpers import MODEL
from tests.service.conftest import LiveServer

OUTPUTS = {"label", "probabilities", "confidence", "exit_index"}


def test_server_metadata(client: httpx.Client) -> None:
    meta = client.get("/v2").json()
    assert meta["name"] == "exitserve"
    assert "binary_tensor_data" in meta["extensions"]


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready"])
def test_health(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.json() in ({"live": True}, {"ready": True})


@pytest.mark.parametrize("path", [f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/1"])
def test_model_metadata(client: httpx.Client, path: str) -> None:
    meta = client.get(path).json()
    assert meta["name"] == MODEL
    assert "1" in meta["versions"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert {o["name"] for o in meta["outputs"]} == OUTPUTS


@pytest.mark.parametrize(
    "path", [f"/v2/models/{MODEL}/ready", f"/v2/models/{MODEL}/versions/1/ready"]
)
def test_model_ready(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.json() == {"name": MODEL, "version": "1", "ready": True}


@pytest.mark.parametrize(
    "path", [f"/v2/models/{MODEL}/config", f"/v2/models/{MODEL}/versions/1/config"]
)
def test_model_config_is_tritons(client: httpx.Client, path: str) -> None:
    config = client.get(path).json()
    assert config["name"] == MODEL
    assert config["max_batch_size"] >= 1
    assert config["input"][0]["name"] == "input"
    assert {o["name"] for o in config["output"]} == OUTPUTS
    assert config["platform"]


def test_stats_count_inferences(client: httpx.Client) -> None:
    def count() -> int:
        stats = client.get(f"/v2/models/{MODEL}/versions/1/stats").json()["model_stats"]
        assert [(s["name"], s["version"]) for s in stats] == [(MODEL, "1")]
        return int(stats[0]["inference_count"])

    before = count()
    body = {
        "inputs": [
            {
                "name": "input",
                "shape": [2, 1, 28, 28],
                "datatype": "FP32",
                "data": [0.0] * (2 * 784),
            }
        ]
    }
    assert client.post(f"/v2/models/{MODEL}/infer", json=body).status_code == 200
    assert count() == before + 2
    for path in ["/v2/models/stats", f"/v2/models/{MODEL}/stats"]:
        names = [s["name"] for s in client.get(path).json()["model_stats"]]
        assert MODEL in names


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nope",
        "/v2/models/nope/ready",
        "/v2/models/nope/config",
        "/v2/models/nope/stats",
        f"/v2/models/{MODEL}/versions/9",
        f"/v2/models/{MODEL}/versions/9/ready",
        f"/v2/models/{MODEL}/versions/9/config",
        f"/v2/models/{MODEL}/versions/9/stats",
    ],
)
def test_unknown_model_or_version_is_404(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert ("nope" in response.json()["error"]) or ("9" in response.json()["error"])


def test_framework_errors_are_json(client: httpx.Client) -> None:
    missing = client.get("/v3/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"].startswith("no such endpoint")
    wrong_method = client.delete("/v2/health/ready")
    assert wrong_method.status_code == 405
    assert "GET" in wrong_method.headers["allow"]
    assert "error" in wrong_method.json()


def test_openapi_lists_every_endpoint(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    paths = set(schema["paths"])
    for path in [
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/stats",
        "/v2/models/{model_name}",
        "/v2/models/{model_name}/versions/{model_version}",
        "/v2/models/{model_name}/ready",
        "/v2/models/{model_name}/config",
        "/v2/models/{model_name}/stats",
        "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/versions/{model_version}/infer",
        "/v1/models/{model_name}:predict",
    ]:
        assert path in paths, path
    infer = schema["paths"]["/v2/models/{model_name}/infer"]["post"]
    ref = infer["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.rsplit("/", 1)[1] in schema["components"]["schemas"]
    assert "application/octet-stream" in infer["requestBody"]["content"]


def test_requests_are_counted_by_endpoint_and_code_on_the_metrics_port(
    client: httpx.Client, server: LiveServer
) -> None:
    client.get(f"/v2/models/{MODEL}")
    client.get("/v2/models/not-a-model")
    text = httpx.get(f"{server.metrics_url}/metrics", timeout=5).text
    assert 'endpoint="model_metadata",model="tiny"' in text.replace('code="200",', "")
    lines = [line for line in text.splitlines() if line.startswith("exitserve_requests_total")]
    assert any('code="404"' in line and 'model="_unknown"' in line for line in lines)
    assert not any("not-a-model" in line for line in lines), "raw names must not become labels"
    assert client.get("/metrics").status_code == 404, "metrics live on their own port only"
