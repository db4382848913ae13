"""The device ceiling: a model's segments run back to back on the device, nothing else.

Inputs are already resident on the device, every output is bound to a preallocated device
buffer with I/O binding, runs are queued without synchronising (onnxruntime's
`disable_synchronize_execution_providers`) and the clock stops after one synchronisation.
Full depth chains each segment's hidden output straight into the next segment. Early
exit runs segment k on as many rows as the policy lets through on these samples, from
resident copies of their real hidden states: selecting the survivors costs nothing here,
so this is a ceiling, not a serving mode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from loadtest import inprocess

Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Device:
    """Where the chain runs: onnxruntime's providers and its OrtValue device name."""

    providers: list[str | tuple[str, dict[str, str]]]
    name: str  # "cuda" or "cpu"


CUDA = Device([("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})], "cuda")
CPU = Device(["CPUExecutionProvider"], "cpu")


def survivors(chain: inprocess.Chain, x: Array, batch: int) -> list[int]:
    """Rows segment k sees in a batch of `batch`, from the policy's exits on `x`."""
    _, exits = inprocess.early_exit(chain, x)
    return [max(1, round(batch * float((exits >= k).mean()))) for k in range(len(chain.sessions))]


def _value(a: Array, device: Device) -> ort.OrtValue:
    return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), device.name, 0)


def bind(chain: inprocess.Chain, x: Array, rows: list[int], device: Device) -> list[ort.IOBinding]:
    """One binding per segment, inputs and outputs resident; chained where rows match."""
    bindings, hidden, prev_out = [], x, None
    for k, seg in enumerate(chain.manifest.segments):
        n = rows[k]
        nxt, probs = chain.run_segment(k, hidden[:n])  # real values, and the output shapes
        b = chain.sessions[k].io_binding()
        chained = prev_out is not None and n == rows[k - 1]
        b.bind_ortvalue_input(seg.input.name, prev_out if chained else _value(hidden[:n], device))
        prev_out = None
        if nxt is not None and seg.hidden_output is not None:
            prev_out = _value(np.zeros_like(nxt), device)
            b.bind_ortvalue_output(seg.hidden_output.name, prev_out)
        b.bind_ortvalue_output(seg.probs_output, _value(np.zeros_like(probs), device))
        bindings.append(b)
        if nxt is None or k + 1 >= len(rows):
            break
        hidden = nxt
    return bindings


def ceiling(
    chain: inprocess.Chain, x: Array, rows: list[int], device: Device, seconds: float
) -> float:
    """Samples per second through the bound chain: runs queued, one synchronisation."""
    bindings = bind(chain, x, rows, device)
    opts = ort.RunOptions()
    opts.add_run_config_entry("disable_synchronize_execution_providers", "1")

    def once() -> None:
        run_queued(chain, bindings, opts)

    once()
    bindings[-1].synchronize_outputs()
    start, repeats = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:  # the host only queues; the clock below counts
        for _ in range(16):
            once()
        repeats += 16
    for b in bindings:
        b.synchronize_outputs()
    return rows[0] * repeats / (time.perf_counter() - start)


def run_queued(chain: inprocess.Chain, bindings: list[ort.IOBinding], opts: ort.RunOptions) -> None:
    """Queue every bound segment once; the caller synchronises."""
    for sess, b in zip(chain.sessions, bindings, strict=False):
        sess.run_with_iobinding(b, opts)


def last_probs(bindings: list[ort.IOBinding]) -> Array:
    """The last segment's probabilities after a synchronised run, on the host."""
    bindings[-1].synchronize_outputs()
    return np.asarray(bindings[-1].get_outputs()[-1].numpy(), dtype=np.float32)


def load(version_dir: Path, device: Device) -> inprocess.Chain:
    return inprocess.load_chain(version_dir, providers=device.providers)
