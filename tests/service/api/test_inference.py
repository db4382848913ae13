"""Inference through HTTP against a real server: JSON and binary agree, answers equal the
segments run by hand, overrides work, and rows come back in request order."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import numpy.typing as npt
import orjson
import pytest

from tests.service.api.v2helpers import (
    HEADER,
    MODEL,
    Expected,
    Reference,
    binary_request,
    decode_response,
    json_request,
)

INFER = f"/v2/models/{MODEL}/infer"
F32 = npt.NDArray[np.float32]


def assert_matches(got: dict[str, np.ndarray], want: Expected) -> None:
    np.testing.assert_array_equal(got["exit_index"], want.exit_index)
    np.testing.assert_array_equal(got["label"], want.label)
    np.testing.assert_allclose(got["probabilities"], want.probabilities, atol=1e-5)
    np.testing.assert_allclose(got["confidence"], want.confidence, atol=1e-5)


def spread_threshold(reference: Reference, x: F32) -> float:
    """A confidence bar at which these samples leave at more than one exit."""
    for bar in (0.9, 0.8, 0.95, 0.7, 0.99, 0.6):
        if len(set(reference.expect(x, "confidence", bar).exit_index.tolist())) >= 2:
            return bar
    pytest.fail("no threshold spreads these samples over several exits")


def test_json_predictions_equal_the_segments_run_by_hand(
    client: httpx.Client, reference: Reference, samples: F32
) -> None:
    got = decode_response(client.post(INFER, content=json_request(samples)))
    assert_matches(got, reference.expect(samples))


def test_binary_and_json_give_identical_results(client: httpx.Client, samples: F32) -> None:
    as_json = decode_response(client.post(INFER, content=json_request(samples)))
    body, headers = binary_request(samples, parameters={"binary_data_output": True})
    response = client.post(INFER, content=body, headers=headers)
    assert response.headers["content-type"] == "application/octet-stream"
    assert int(response.headers[HEADER]) < len(response.content)
    as_binary = decode_response(response)
    assert set(as_json) == set(as_binary) == {"label", "probabilities", "confidence", "exit_index"}
    for name, arr in as_json.items():
        np.testing.assert_array_equal(arr, as_binary[name], err_msg=name)
        assert arr.dtype == as_binary[name].dtype


def test_full_depth_sends_every_sample_to_the_last_exit(
    client: httpx.Client, reference: Reference, samples: F32
) -> None:
    body = json_request(samples, parameters={"full_depth": True})
    got = decode_response(client.post(INFER, content=body))
    last = reference.manifest.num_exits - 1
    assert (got["exit_index"] == last).all()
    assert_matches(got, reference.expect(samples, full_depth=True))


def test_samples_at_different_exits_come_back_once_in_order(
    client: httpx.Client, reference: Reference, samples: F32
) -> None:
    bar = spread_threshold(reference, samples)
    want = reference.expect(samples, "confidence", bar)
    params = {"policy": "confidence", "threshold": bar}
    body = json_request(samples, id="mixed-1", parameters=params)
    response = client.post(INFER, content=body)
    assert orjson.loads(response.content)["id"] == "mixed-1"
    got = decode_response(response)
    assert len(got["label"]) == len(samples)
    assert len(set(got["exit_index"].tolist())) >= 2
    assert_matches(got, want)


def test_concurrent_requests_each_get_their_own_rows(
    client: httpx.Client, reference: Reference, samples: F32
) -> None:
    """Requests batched together by the server must not swap or mix rows."""
    bar = spread_threshold(reference, samples)
    chunks = [samples[i : i + 3] for i in range(0, len(samples), 3)]

    def send(x: F32) -> dict[str, np.ndarray]:
        params = {"policy": "confidence", "threshold": bar}
        body, headers = binary_request(x, parameters=params)
        return decode_response(client.post(INFER, content=body, headers=headers))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, chunks))
    for x, got in zip(chunks, results, strict=True):
        assert_matches(got, reference.expect(x, "confidence", bar))


def test_a_subset_of_outputs_in_the_order_asked(client: httpx.Client, samples: F32) -> None:
    outputs = [{"name": "exit_index"}, {"name": "label", "parameters": {"binary_data": True}}]
    body, headers = binary_request(samples[:5], outputs=outputs)
    response = client.post(INFER, content=body, headers=headers)
    head = orjson.loads(response.content[: int(response.headers[HEADER])])
    assert [o["name"] for o in head["outputs"]] == ["exit_index", "label"]
    assert "data" in head["outputs"][0]
    assert head["outputs"][1]["parameters"] == {"binary_data_size": 5 * 8}
    assert set(decode_response(response)) == {"exit_index", "label"}


@pytest.mark.parametrize("datatype", ["FP64", "FP16", "UINT8"])
def test_other_numeric_datatypes(client: httpx.Client, samples: F32, datatype: str) -> None:
    x = {
        "FP64": samples.astype("<f8"),
        "FP16": samples.astype("<f2"),
        "UINT8": (samples * 255).round().astype(np.uint8),
    }[datatype]
    body, headers = binary_request(x[:4], datatype)
    got = decode_response(client.post(INFER, content=body, headers=headers))
    expected_input = x[:4].astype(np.float32)
    plain = decode_response(client.post(INFER, content=json_request(expected_input)))
    np.testing.assert_array_equal(got["label"], plain["label"])


def test_versioned_infer_and_v1_predict_agree_with_v2(
    client: httpx.Client, reference: Reference, samples: F32
) -> None:
    x = samples[:6]
    want = reference.expect(x)
    versioned = client.post(f"/v2/models/{MODEL}/versions/1/infer", content=json_request(x))
    assert orjson.loads(versioned.content)["model_version"] == "1"
    assert_matches(decode_response(versioned), want)
    response = client.post(f"/v1/models/{MODEL}:predict", json={"instances": x.tolist()})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == want.label.tolist()
    assert [p["exit"] for p in predictions] == want.exit_index.tolist()
    np.testing.assert_allclose([p["confidence"] for p in predictions], want.confidence, atol=1e-5)
    np.testing.assert_allclose(
        [p["probabilities"] for p in predictions], want.probabilities, atol=1e-5
    )


def test_gzip_request_body(client: httpx.Client, reference: Reference, samples: F32) -> None:
    import gzip

    body = gzip.compress(json_request(samples[:4]))
    response = client.post(INFER, content=body, headers={"Content-Encoding": "gzip"})
    assert_matches(decode_response(response), reference.expect(samples[:4]))
