"""Measure what a model version costs in onnxruntime: per-sample time for each exit depth.

Torch-free. Used to size the bundled model (a full-depth pass must cost a few ms of one
core, or serving benchmarks measure HTTP instead of compute) and quoted in docs/models.md.
Run as `python -m models.timing models/repository/mnist/1`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.manifest import load_manifest


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def per_sample_ms(
    version_dir: Path, batch: int = 32, threads: int = 1, repeats: int = 20
) -> list[float]:
    """Milliseconds per sample to reach each exit (cumulative), median over `repeats` runs."""
    manifest = load_manifest(version_dir)
    sessions = [_session(version_dir / s.file, threads) for s in manifest.segments]
    x = np.random.default_rng(0).random((batch, *manifest.input.shape), dtype=np.float32)
    inputs = []
    for session, segment in zip(sessions, manifest.segments, strict=True):
        inputs.append(x)
        if segment.hidden_output is not None:
            x = session.run([segment.hidden_output.name], {segment.input.name: x})[0]
    stage_ms = []
    for session, segment, feed in zip(sessions, manifest.segments, inputs, strict=True):
        session.run(None, {segment.input.name: feed})  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            session.run(None, {segment.input.name: feed})
            times.append(time.perf_counter() - start)
        stage_ms.append(1000.0 * float(np.median(times)) / batch)
    return [float(v) for v in np.cumsum(stage_ms)]


def main(argv: list[str]) -> None:
    """Print the cumulative per-sample time to each exit for the given version folders."""
    for folder in argv or ["models/repository/mnist/1"]:
        ms = per_sample_ms(Path(folder))
        steps = ", ".join(f"exit {k + 1}: {v:.2f}" for k, v in enumerate(ms))
        print(f"{folder}: ms/sample (1 thread, batch 32): {steps}")


if __name__ == "__main__":
    main(sys.argv[1:])
