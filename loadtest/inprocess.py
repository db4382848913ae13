"""The in-process limit: the same segments run directly with onnxruntime, no HTTP, no queues.

This is what the server is measured against: batched early exit in one loop (survivors of
each batch go straight to the next segment), single-sample latency, and the oracle that
knows which exit would have agreed with the final one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models.manifest import Manifest, load_manifest

Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Chain:
    """A model version's segments as plain onnxruntime sessions."""

    manifest: Manifest
    sessions: list[ort.InferenceSession]

    def run_segment(self, k: int, x: Array) -> tuple[Array | None, Array]:
        seg = self.manifest.segments[k]
        names = [seg.probs_output] + ([seg.hidden_output.name] if seg.hidden_output else [])
        outs = self.sessions[k].run(names, {seg.input.name: x})
        return (outs[1] if len(outs) > 1 else None), outs[0]


def load_chain(
    version_dir: Path,
    threads: int = 0,
    providers: Sequence[str | tuple[str, dict[str, str]]] | None = None,
) -> Chain:
    """One session per segment (CPU unless `providers` says), threads as the server's default."""
    manifest = load_manifest(version_dir)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = [
        ort.InferenceSession(
            str(version_dir / s.file), opts, providers=providers or ["CPUExecutionProvider"]
        )
        for s in manifest.segments
    ]
    return Chain(manifest, sessions)


def early_exit(
    chain: Chain, x: Array, threshold: float | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    """Confidence policy over one batch: each survivor set goes on to the next segment."""
    n, last = len(x), chain.manifest.num_exits - 1
    labels, exits = np.zeros(n, np.int64), np.full(n, last, np.int32)
    alive, hidden = np.arange(n), x
    for k, seg in enumerate(chain.manifest.segments):
        nxt, probs = chain.run_segment(k, hidden)
        t = seg.thresholds["confidence"] if threshold is None else threshold
        done = (probs.max(axis=1) >= t) | (k == last)
        labels[alive[done]] = probs[done].argmax(axis=1)
        exits[alive[done]] = k
        if nxt is None or done.all():
            break
        alive, hidden = alive[~done], nxt[~done]
    return labels, exits


def throughput(chain: Chain, x: Array, batch: int, full_depth: bool = False) -> float:
    """Samples per second over `x` in batches of `batch` (threshold 2 = never exit early)."""
    start = time.perf_counter()
    for i in range(0, len(x), batch):
        early_exit(chain, x[i : i + batch], threshold=2.0 if full_depth else None)
    return len(x) / (time.perf_counter() - start)


def single_latency_ms(chain: Chain, x: Array, repeats: int = 200) -> float:
    """Median latency of one sample through the early-exit loop."""
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        early_exit(chain, x[i % len(x) : i % len(x) + 1])
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def oracle_fraction(chain: Chain, x: Array) -> tuple[float, float]:
    """Compute fraction if each sample left at the first exit agreeing with the final one,
    beside the calibrated policy's measured fraction on the same samples."""
    preds, hidden = [], x
    for k in range(chain.manifest.num_exits):
        hidden_next, probs = chain.run_segment(k, hidden)
        preds.append(probs.argmax(axis=1))
        if hidden_next is not None:
            hidden = hidden_next
    agree = np.stack(preds) == preds[-1]  # (exits, n); the last row is all True
    cum = np.array([s.cumulative_fraction for s in chain.manifest.segments])
    oracle = float(cum[agree.argmax(axis=0)].mean())
    _, exits = early_exit(chain, x)
    return oracle, float(cum[exits].mean())
