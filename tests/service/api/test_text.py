"""The bundled text model served for real: BYTES in (JSON, binary, v1, tritonclient), the
reference chain's answers out, and every bad text named in a 400.

The expected answers come from models.textchain (bare onnxruntime, every exit, one batch
padded to its longest text) and the model's calibrated confidence thresholds: whatever
the server's padding per request, merging of stage batches and trimming of survivors did,
each sentence must leave where the reference says, with the reference's probabilities.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.http as triton

from models.manifest import load_manifest
from models.paths import bundled_repository
from models.textchain import text_probabilities
from tests.service.conftest import LiveServer, LiveServerFactory
from tests.service.text_samples import SENTENCES as SAMPLES

MODEL = "sentiment"
SENTENCES = [
    *SAMPLES,
    "It's not a great film, but it has its moments — très charmant, even.",
    "Meh",
]


@pytest.fixture(scope="module")
def served(
    live_server: LiveServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A repository holding only the bundled text model (a link to it, nothing copied)."""
    repo = tmp_path_factory.mktemp("text-repo")
    (repo / MODEL).symlink_to(bundled_repository() / MODEL)
    with live_server(args=["--device", "cpu"], repository=repo) as server:
        yield server


@pytest.fixture(scope="module")
def expected() -> dict[str, npt.NDArray[np.float64]]:
    """Per sentence: the exit the calibrated confidence thresholds pick, its probabilities."""
    version_dir = bundled_repository() / MODEL / "1"
    probs = text_probabilities(version_dir, SENTENCES)  # (exits, N, classes)
    bars = [s.thresholds["confidence"] for s in load_manifest(version_dir).segments]
    leaves = probs.max(axis=2) >= np.asarray(bars)[:, None]
    leaves[-1] = True
    exit_index = leaves.argmax(axis=0)
    assert set(exit_index) == set(range(len(bars)))  # every exit answers some sentence
    chosen = probs[exit_index, np.arange(len(SENTENCES))]
    return {"exit_index": exit_index, "probabilities": chosen, "label": chosen.argmax(axis=1)}


def _check(
    outputs: dict[str, npt.NDArray], want: dict[str, npt.NDArray], rows: slice = slice(None)
) -> None:
    np.testing.assert_array_equal(outputs["exit_index"], want["exit_index"][rows])
    np.testing.assert_array_equal(outputs["label"], want["label"][rows])
    np.testing.assert_allclose(outputs["probabilities"], want["probabilities"][rows], atol=1e-4)


def _json_outputs(response: httpx.Response) -> dict[str, npt.NDArray]:
    assert response.status_code == 200, response.text
    return {
        o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in response.json()["outputs"]
    }


def _infer(url: str, texts: list[str]) -> httpx.Response:
    tensor = {"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}
    return httpx.post(f"{url}/v2/models/{MODEL}/infer", json={"inputs": [tensor]}, timeout=30)


def test_json_requests_alone_and_together_answer_as_the_reference(
    served: LiveServer, expected: dict[str, npt.NDArray]
) -> None:
    _check(_json_outputs(_infer(served.url, SENTENCES)), expected)
    # one sentence per request, all at once: stage batches merge rows of every length
    with ThreadPoolExecutor(len(SENTENCES)) as pool:
        replies = list(pool.map(lambda t: _infer(served.url, [t]), SENTENCES))
    for i, reply in enumerate(replies):
        _check(_json_outputs(reply), expected, slice(i, i + 1))


def test_binary_bytes_and_v1_strings(served: LiveServer, expected: dict[str, npt.NDArray]) -> None:
    raw = b"".join(struct.pack("<I", len(b)) + b for b in (t.encode() for t in SENTENCES))
    tensor = {"name": "text", "datatype": "BYTES", "shape": [len(SENTENCES), 1]}
    tensor["parameters"] = {"binary_data_size": len(raw)}
    head = httpx.Request("POST", "/", json={"inputs": [tensor]}).content
    reply = httpx.post(
        f"{served.url}/v2/models/{MODEL}/infer",
        content=head + raw,
        headers={"Inference-Header-Content-Length": str(len(head))},
        timeout=30,
    )
    _check(_json_outputs(reply), expected)
    v1 = httpx.post(f"{served.url}/v1/models/{MODEL}:predict", json={"instances": SENTENCES[:3]})
    assert v1.status_code == 200, v1.text
    labels = [p["label"] for p in v1.json()["predictions"]]
    assert labels == list(expected["label"][:3])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([""], "element 0 is empty"),
        (["fine", "   "], "element 1 is empty"),
        (["fine", 3], r"inputs\[0\].data\[1\]: must be a string"),
        (["x" * 20_000], "element 0 is 20000 long; the limit is 16384"),
    ],
)
def test_bad_texts_get_a_400_naming_the_element(
    served: LiveServer, data: list[object], message: str
) -> None:
    tensor = {"name": "text", "datatype": "BYTES", "shape": [len(data)], "data": data}
    reply = httpx.post(f"{served.url}/v2/models/{MODEL}/infer", json={"inputs": [tensor]})
    assert reply.status_code == 400
    assert re.search(message, reply.json()["error"]), reply.text


def test_invalid_utf8_and_wrong_datatype(served: LiveServer) -> None:
    raw = struct.pack("<I", 2) + b"\xff\xfe"
    tensor = {
        "name": "text",
        "datatype": "BYTES",
        "shape": [1],
        "parameters": {"binary_data_size": 6},
    }
    head = httpx.Request("POST", "/", json={"inputs": [tensor]}).content
    headers = {"Inference-Header-Content-Length": str(len(head))}
    reply = httpx.post(f"{served.url}/v2/models/{MODEL}/infer", content=head + raw, headers=headers)
    assert reply.status_code == 400
    assert "element 0 is not valid UTF-8" in reply.json()["error"]
    wrong = {"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}
    reply = httpx.post(f"{served.url}/v2/models/{MODEL}/infer", json={"inputs": [wrong]})
    assert reply.status_code == 400
    assert "inputs[0].datatype: this model takes text as BYTES" in reply.json()["error"]


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_sends_bytes(
    served: LiveServer, expected: dict[str, npt.NDArray], binary: bool
) -> None:
    client = triton.InferenceServerClient(
        url=re.sub(r"^https?://", "", served.url), network_timeout=30.0
    )
    try:
        meta = client.get_model_metadata(MODEL)
        assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        assert meta["labels"] == ["fresh", "rotten"]
        tensor = triton.InferInput("text", [len(SENTENCES)], "BYTES")
        tensor.set_data_from_numpy(
            np.array([t.encode() for t in SENTENCES], dtype=object), binary_data=binary
        )
        outputs = [
            triton.InferRequestedOutput(n, binary_data=binary)
            for n in ("label", "exit_index", "probabilities")
        ]
        result = client.infer(MODEL, [tensor], outputs=outputs)
        _check({n: result.as_numpy(n) for n in ("label", "exit_index", "probabilities")}, expected)
    finally:
        client.close()
