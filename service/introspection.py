"""The JSON documents that describe the server and its models (v2 and Triton formats).

Pure functions of a manifest, settings and the metrics registry: the statistics are read
back from the same Prometheus series the server exports, so `/stats` and `/metrics`
can never disagree, plus Metrics' per-version Triton totals for what has no series.
"""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

from models.manifest import Manifest
from service.metrics import Metrics, TritonTotals
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
    "BYTES": "TYPE_STRING",
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


def _input(manifest: Manifest) -> tuple[str, str, list[int]]:
    """(name, v2 datatype, shape without batch) of what a request sends: a text model takes
    one UTF-8 string per sample (BYTES) and tokenises it itself."""
    if manifest.text is not None:
        return manifest.text.input_name, manifest.text.datatype, []
    spec = manifest.input
    return spec.name, spec.datatype, list(spec.shape)


def model_metadata(manifest: Manifest, versions: list[str]) -> dict[str, Any]:
    """v2 model metadata; shapes carry -1 for the batch axis. `labels` (an extension field)
    names the classes that `label` indexes, in order."""
    name, dtype, shape = _input(manifest)
    return {
        "name": manifest.name,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": [{"name": name, "datatype": dtype, "shape": [-1, *shape]}],
        "outputs": [
            {"name": name, "datatype": dtype, "shape": [-1, *shape]}
            for name, dtype, shape in _outputs(len(manifest.labels))
        ],
        "labels": list(manifest.labels),
    }


def model_config(
    manifest: Manifest, batching: BatchingConfig, max_batch_size: int, on_gpu: bool
) -> dict[str, Any]:
    """Triton's model configuration JSON (dims exclude the batch axis)."""
    request_input = _config_input(*_input(manifest))
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
        "input": [request_input],
        "output": outputs,
        "dynamic_batching": {
            "max_queue_delay_microseconds": int(batching.max_queue_delay_ms * 1000),
            "preferred_batch_size": [batching.max_batch_size],
        },
        "instance_group": [{"kind": "KIND_GPU" if on_gpu else "KIND_CPU", "count": 1}],
        "parameters": _parameters(manifest),
    }


def _config_input(name: str, dtype: str, shape: list[int]) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "data_type": TRITON_TYPES[dtype]}
    entry["format"] = "FORMAT_NONE"
    entry["dims"] = shape or [1]
    if not shape:
        entry["reshape"] = {"shape": []}
    return entry


def _parameters(manifest: Manifest) -> dict[str, dict[str, str]]:
    policy = manifest.default_policy
    values = {
        "exits": str(manifest.num_exits),
        "policy": policy,
        "thresholds": json.dumps([s.thresholds.get(policy) for s in manifest.segments]),
        "cumulative_fraction": json.dumps([s.cumulative_fraction for s in manifest.segments]),
        "version": manifest.version,
        "labels": json.dumps(list(manifest.labels)),
    }
    return {key: {"string_value": value} for key, value in values.items()}


def version_stats(metrics: Metrics, manifest: Manifest, last_inference_ms: int) -> dict[str, Any]:
    """Triton statistics for one version, with Triton's semantics mapped onto stages.

    An *execution* is one segment run: a stage batch at any stage (survivors of several
    stage-k batches form one stage-k+1 batch, so a request is not tied to one execution).
    - inference_count: samples answered; execution_count: segment runs, every stage.
    - success / fail: inference requests answered 200 / with an error (timed out, failed
      segment, unloaded, refused as overloaded, client gone), timed from admission at
      stage 0 to the answer (HTTP parsing and serialising are outside it).
    - queue, compute_input, compute_infer, compute_output: as in Triton, `count` is the
      success count and `ns` sums per request, over every stage batch that carried its
      rows: the wait in the stage queue, the batch's assembly, its segment run, and its
      exit decisions / answers / survivor gather. So avg(queue + compute) is a request's
      time in the stages; a batch's time is credited to each request in it. (A request
      larger than a batch, which Triton would refuse, has its later batches' waits
      overlap its earlier batches: its credited times can exceed its success time.)
    Durations of requests that fail after their first batch stay in the sums.
    - batch_stats: per segment-run batch size, count = runs and ns = the runs' own
      (machine) time, so their counts sum to execution_count.
    """
    m, v = manifest.name, manifest.version
    stages = [str(k) for k in range(manifest.num_exits)]

    def total(series: str, label: str) -> float:
        return sum(metrics.value(series, {"model": m, "version": v, label: k}) for k in stages)

    ok, failed = _outcomes(metrics, m, v)
    totals = metrics.triton.get((m, v)) or TritonTotals()
    phases = [_duration(ok[0], seconds) for seconds in totals.phases]
    return {
        "name": m,
        "version": v,
        "last_inference": last_inference_ms,
        "inference_count": int(total("exitserve_samples_total", "exit")),
        "execution_count": int(total("exitserve_batch_size_count", "stage")),
        "inference_stats": {
            "success": _duration(*ok),
            "fail": _duration(*failed),
            "queue": _duration(ok[0], total("exitserve_queue_wait_seconds_sum", "stage")),
            "compute_input": phases[0],
            "compute_infer": phases[1],
            "compute_output": phases[2],
            "cache_hit": _duration(0, 0.0),
            "cache_miss": _duration(0, 0.0),
        },
        "batch_stats": [_batch_stat(size, row) for size, row in sorted(totals.sizes.items())],
    }


def _outcomes(metrics: Metrics, model: str, version: str) -> tuple[list[float], list[float]]:
    """[count, seconds] of the version's inference requests answered 200, and of the rest."""
    ok, failed = [0.0, 0.0], [0.0, 0.0]
    for metric in metrics.inference_latency.collect():
        for s in metric.samples:
            labels = s.labels
            if labels.get("model") != model or labels.get("version") != version:
                continue
            into = ok if labels.get("code") == "200" else failed
            if s.name.endswith("_count"):
                into[0] += s.value
            elif s.name.endswith("_sum"):
                into[1] += s.value
    return ok, failed


def _batch_stat(size: int, row: list[float]) -> dict[str, Any]:
    runs = row[0]
    return {
        "batch_size": size,
        "compute_input": _duration(runs, row[1]),
        "compute_infer": _duration(runs, row[2]),
        "compute_output": _duration(runs, row[3]),
    }


def _duration(count: float, seconds: float) -> dict[str, int]:
    return {"count": int(count), "ns": int(seconds * 1e9)}
