"""The JSON documents that describe the server and its models (v2 and Triton formats).

Pure functions of a manifest, settings and the metrics registry: the statistics are read
back from the same Prometheus series the server exports, so `/stats` and `/metrics`
can never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import metadata
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from models.manifest import Manifest
from service.metrics import Metrics
from service.settings import BatchingConfig

PLATFORM = "onnxruntime_onnx"
EXTENSIONS = [
    "binary_tensor_data",
    "parameters",
    "statistics",
    "model_configuration",
    "model_repository",
]
TRITON_TYPES = {
    "FP32": "TYPE_FP32",
    "FP16": "TYPE_FP16",
    "INT64": "TYPE_INT64",
    "INT32": "TYPE_INT32",
}


def server_metadata() -> dict[str, Any]:
    try:
        version = metadata.version("exitserve")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"name": "exitserve", "version": version, "extensions": list(EXTENSIONS)}


def _outputs(classes: int) -> list[tuple[str, str, list[int]]]:
    """(name, v2 datatype, shape without batch) of every output the server answers with."""
    return [
        ("label", "INT64", []),
        ("probabilities", "FP32", [classes]),
        ("confidence", "FP32", []),
        ("exit_index", "INT32", []),
    ]


def model_metadata(manifest: Manifest, versions: list[str]) -> dict[str, Any]:
    """v2 model metadata; shapes carry -1 for the batch axis."""
    spec = manifest.input
    return {
        "name": manifest.name,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": [{"name": spec.name, "datatype": spec.datatype, "shape": [-1, *spec.shape]}],
        "outputs": [
            {"name": name, "datatype": dtype, "shape": [-1, *shape]}
            for name, dtype, shape in _outputs(len(manifest.labels))
        ],
    }


def model_config(
    manifest: Manifest, batching: BatchingConfig, max_batch_size: int, on_gpu: bool
) -> dict[str, Any]:
    """Triton's model configuration JSON (dims exclude the batch axis)."""
    spec = manifest.input
    outputs: list[dict[str, Any]] = []
    for name, dtype, shape in _outputs(len(manifest.labels)):
        entry: dict[str, Any] = {"name": name, "data_type": TRITON_TYPES[dtype]}
        entry["dims"] = shape or [1]
        if not shape:
            entry["reshape"] = {"shape": []}
        outputs.append(entry)
    return {
        "name": manifest.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "version_policy": {"all": {}},
        "max_batch_size": max_batch_size,
        "input": [
            {
                "name": spec.name,
                "data_type": TRITON_TYPES[spec.datatype],
                "format": "FORMAT_NONE",
                "dims": list(spec.shape),
            }
        ],
        "output": outputs,
        "dynamic_batching": {
            "max_queue_delay_microseconds": int(batching.max_queue_delay_ms * 1000),
            "preferred_batch_size": [batching.max_batch_size],
        },
        "instance_group": [{"kind": "KIND_GPU" if on_gpu else "KIND_CPU", "count": 1}],
        "parameters": _parameters(manifest),
    }


def _parameters(manifest: Manifest) -> dict[str, dict[str, str]]:
    policy = manifest.default_policy
    values = {
        "exits": str(manifest.num_exits),
        "policy": policy,
        "thresholds": json.dumps([s.thresholds.get(policy) for s in manifest.segments]),
        "cumulative_fraction": json.dumps([s.cumulative_fraction for s in manifest.segments]),
        "version": manifest.version,
    }
    return {key: {"string_value": value} for key, value in values.items()}


def version_stats(metrics: Metrics, manifest: Manifest, last_inference_ms: int) -> dict[str, Any]:
    """Triton statistics for one version, read from the exported series.

    Request counts and latency are recorded by the HTTP layer per model (not per version);
    samples, batches, queue and compute times are per version.
    """
    m, v = manifest.name, manifest.version
    stages = [str(k) for k in range(manifest.num_exits)]

    def total(series: str, label: str) -> float:
        return sum(metrics.value(series, {"model": m, "version": v, label: k}) for k in stages)

    ok = _sum(metrics.requests, "exitserve_requests_total", m, lambda c: c.startswith("2"))
    failed = _sum(metrics.requests, "exitserve_requests_total", m, lambda c: not c.startswith("2"))
    latency = _sum(metrics.request_latency, "exitserve_request_duration_seconds_sum", m)
    return {
        "name": m,
        "version": v,
        "last_inference": last_inference_ms,
        "inference_count": int(total("exitserve_samples_total", "exit")),
        "execution_count": int(total("exitserve_batch_size_count", "stage")),
        "inference_stats": {
            "success": _duration(ok, latency),
            "fail": _duration(failed, 0.0),
            "queue": _duration(
                total("exitserve_queue_wait_seconds_count", "stage"),
                total("exitserve_queue_wait_seconds_sum", "stage"),
            ),
            "compute_input": _duration(0, 0.0),
            "compute_infer": _duration(
                total("exitserve_segment_compute_seconds_count", "segment"),
                total("exitserve_segment_compute_seconds_sum", "segment"),
            ),
            "compute_output": _duration(0, 0.0),
            "cache_hit": _duration(0, 0.0),
            "cache_miss": _duration(0, 0.0),
        },
        "batch_stats": [],
    }


def _duration(count: float, seconds: float) -> dict[str, int]:
    return {"count": int(count), "ns": int(seconds * 1e9)}


def _sum(
    family: MetricWrapperBase, sample: str, model: str, code: Callable[[str], bool] | None = None
) -> float:
    """Sum a family's samples for one model, optionally only those whose code passes."""
    value = 0.0
    for metric in family.collect():
        for s in metric.samples:
            if s.name != sample or s.labels.get("model") != model:
                continue
            if code is None or code(s.labels.get("code", "")):
                value += s.value
    return value
