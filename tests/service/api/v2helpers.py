"""Test helpers for the API tests: v2 request bodies, response decoding, and the tiny
model's segments run by hand with onnxruntime (the reference the server must match).

The reference runs every segment on every sample and applies the exit rule per exit: what
the server must answer, whatever its batching did.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import orjson

from models.manifest import Manifest, load_manifest

MODEL = "tiny"
BODY_LIMIT = 2 << 20  # small enough for a test to cross, large enough for 64 JSON samples
MAX_SAMPLES = 64
HEADER = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class Expected:
    """What the server should answer per sample."""

    label: npt.NDArray[np.int64]
    probabilities: npt.NDArray[np.float32]
    confidence: npt.NDArray[np.float32]
    exit_index: npt.NDArray[np.int32]


@dataclass(frozen=True)
class Reference:
    """The tiny model's segments as plain onnxruntime sessions."""

    manifest: Manifest
    sessions: list[ort.InferenceSession]

    def exit_probs(self, x: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        """Every exit's probabilities for every sample (full depth)."""
        out, hidden = [], x
        for seg, session in zip(self.manifest.segments, self.sessions, strict=True):
            names = [seg.probs_output] + ([seg.hidden_output.name] if seg.hidden_output else [])
            results = session.run(names, {seg.input.name: hidden})
            out.append(results[0])
            hidden = results[1] if len(results) > 1 else hidden
        return out

    def expect(
        self,
        x: npt.NDArray[np.float32],
        policy: str | None = None,
        threshold: float | None = None,
        full_depth: bool = False,
    ) -> Expected:
        """Each sample leaves at the first exit whose rule fires (default: the manifest's)."""
        kind = policy or self.manifest.default_policy
        probs = self.exit_probs(x)
        last = len(probs) - 1
        exits = np.full(len(x), last, np.int32)
        for k in reversed(range(0 if full_depth else last)):
            bar = self.manifest.segments[k].thresholds[kind] if threshold is None else threshold
            exits[exit_rule(kind, probs[k], bar)] = k
        chosen = np.stack([probs[k][i] for i, k in enumerate(exits)])
        return Expected(chosen.argmax(1).astype(np.int64), chosen, chosen.max(1), exits)


def exit_rule(kind: str, probs: npt.NDArray[np.float32], bar: float) -> npt.NDArray[np.bool_]:
    """The three threshold policies, written out independently of service.policies."""
    if kind == "confidence":
        return np.asarray(probs.max(axis=1) >= bar)
    if kind == "entropy":
        logs = np.log(np.clip(probs, 1e-12, 1.0))
        return np.asarray(-(probs * logs).sum(axis=1) <= bar)
    top = np.sort(probs, axis=1)
    return np.asarray(top[:, -1] - top[:, -2] >= bar)


def load_reference(version_dir: Path) -> Reference:
    manifest = load_manifest(version_dir)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sessions = [
        ort.InferenceSession(str(version_dir / s.file), opts, providers=["CPUExecutionProvider"])
        for s in manifest.segments
    ]
    return Reference(manifest, sessions)


def json_request(x: np.ndarray, **extra: Any) -> bytes:
    tensor = {
        "name": "input",
        "shape": list(x.shape),
        "datatype": "FP32",
        "data": x.reshape(-1).tolist(),
    }
    return orjson.dumps({"inputs": [tensor], **extra})


def binary_request(
    x: np.ndarray, datatype: str = "FP32", **extra: Any
) -> tuple[bytes, dict[str, str]]:
    raw = np.ascontiguousarray(x).tobytes()
    tensor = {
        "name": "input",
        "shape": list(x.shape),
        "datatype": datatype,
        "parameters": {"binary_data_size": len(raw)},
    }
    head = orjson.dumps({"inputs": [tensor], **extra})
    return head + raw, {HEADER: str(len(head)), "Content-Type": "application/octet-stream"}


V2_DTYPES = {"FP32": "<f4", "INT64": "<i8", "INT32": "<i4"}


def decode_response(response: httpx.Response) -> dict[str, np.ndarray]:
    """Output name -> array, from a JSON or a binary v2 response."""
    assert response.status_code == 200, response.text
    length = response.headers.get(HEADER)
    body = response.content
    head = orjson.loads(body if length is None else body[: int(length)])
    offset, arrays = int(length or 0), {}
    for out in head["outputs"]:
        dtype = V2_DTYPES[out["datatype"]]
        if "data" in out:
            arr = np.asarray(out["data"], dtype=dtype)
        else:
            size = out["parameters"]["binary_data_size"]
            arr = np.frombuffer(body[offset : offset + size], dtype=dtype)
            offset += size
        arrays[out["name"]] = arr.reshape(out["shape"])
    assert offset == (len(body) if length is not None else 0)
    return arrays


INFLIGHT = re.compile(r'^exitserve_inflight_requests\{model="tiny"\} (\S+)$', re.M)


def inflight(metrics_url: str) -> float:
    """The server's own count of accepted, unanswered requests (from its metrics port)."""
    match = INFLIGHT.search(httpx.get(f"{metrics_url}/metrics", timeout=5).text)
    return float(match.group(1)) if match else 0.0


def wait_for_inflight(metrics_url: str, count: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while inflight(metrics_url) < count:
        assert time.monotonic() < deadline, f"never saw {count} requests in flight"
        time.sleep(0.02)


def raw_post(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 POST as bytes on the wire."""
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return head.encode() + b"\r\n" + body
