"""Cut a trained multi-exit network into one ONNX file per segment and prove they match.

Segment k = blocks[k] + heads[k]; it outputs its hidden state (except the last), the exit's
logits and, in-graph, their softmax, so the server's policies never recompute it. A text
segment also takes the attention mask (int64, batch × sequence) beside its input ids or
hidden states, and every text tensor has dynamic batch and sequence axes: the server pads
per stage batch and hands each segment the survivors' own masks. After
writing, every segment is run in onnxruntime on real samples and compared with PyTorch by
maximum absolute difference; a mismatch fails the export instead of shipping a model that
answers differently from the one that was calibrated.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import torch
from torch import nn
from torch.nn import functional as F

from models.data import FloatArray
from models.manifest import TensorSpec
from models.multiexit import MultiExitNet, State, example_input

OPSET = 17
INPUT_NAME = "input"
HIDDEN_IN = "hidden_in"
IDS_NAME, MASK_NAME = "input_ids", "attention_mask"
EXPORT_TOKENS = 7  # traced sequence length: any length works, since the axis is dynamic
HIDDEN_OUT, LOGITS, PROBS = "hidden", "logits", "probs"
DEFAULT_ATOL = 1e-3


class ExportError(RuntimeError):
    """An exported segment that disagrees with PyTorch or cannot be run."""


class SegmentModule(nn.Module):
    """One served segment: a block then its exit head; softmax computed in-graph."""

    def __init__(self, block: nn.Module, head: nn.Module, last: bool) -> None:
        super().__init__()
        self.block, self.head, self.last = block, head, last

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = self.block(inputs[0] if len(inputs) == 1 else inputs)
        logits = self.head(state)
        probs = F.softmax(logits, dim=1)
        hidden = state[0] if isinstance(state, tuple) else state
        return (logits, probs) if self.last else (hidden, logits, probs)


@dataclass(frozen=True)
class ExportedSegment:
    """What the manifest needs to know about one written segment file."""

    index: int
    file: str
    input: TensorSpec
    hidden_output: TensorSpec | None
    mask_input: TensorSpec | None = None


def segment_modules(model: MultiExitNet) -> list[SegmentModule]:
    """The model cut into its served segments (sharing weights with `model`)."""
    last = model.num_exits - 1
    pairs = zip(model.blocks, model.heads, strict=True)
    return [SegmentModule(b, h, k == last).eval() for k, (b, h) in enumerate(pairs)]


def export_segments(model: MultiExitNet, version_dir: Path) -> list[ExportedSegment]:
    """Write `segment_<k>.onnx` for every exit; dynamic batch (and sequence) axes."""
    model.eval()
    version_dir.mkdir(parents=True, exist_ok=True)
    text = model.config.modality == "text"
    state = model.example(2) if not text else example_input("text", (EXPORT_TOKENS,), 2)
    exported = []
    for k, segment in enumerate(segment_modules(model)):
        names = _input_names(k, text)
        outputs = [LOGITS, PROBS] if segment.last else [HIDDEN_OUT, LOGITS, PROBS]
        path = version_dir / f"segment_{k}.onnx"
        args = state if isinstance(state, tuple) else (state,)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                segment,
                args,
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=names,
                output_names=outputs,
                dynamic_axes=_dynamic_axes([*names, *outputs], text),
            )
        with torch.no_grad():
            nxt = segment.block(state)
        exported.append(_describe(k, path.name, args, nxt, segment.last, text))
        state = nxt
    return exported


def _input_names(k: int, text: bool) -> list[str]:
    first = IDS_NAME if text else INPUT_NAME
    return [first if k == 0 else HIDDEN_IN, *([MASK_NAME] if text else [])]


def _dynamic_axes(names: list[str], text: bool) -> dict[str, dict[int, str]]:
    """Batch everywhere; for text also the sequence axis of everything but logits/probs."""
    per_token = {IDS_NAME, MASK_NAME, HIDDEN_IN, HIDDEN_OUT} if text else set()
    return {n: {0: "batch", 1: "sequence"} if n in per_token else {0: "batch"} for n in names}


def _describe(
    k: int, file: str, args: tuple[torch.Tensor, ...], nxt: State, last: bool, text: bool
) -> ExportedSegment:
    """The manifest's view of one segment; -1 marks the dynamic sequence axis."""
    hidden = nxt[0] if isinstance(nxt, tuple) else nxt
    names = _input_names(k, text)

    def spec(name: str, tensor: torch.Tensor) -> TensorSpec:
        shape = list(tensor.shape[1:])
        if text:
            shape[0] = -1
        datatype = "INT64" if tensor.dtype == torch.int64 else "FP32"
        return TensorSpec(name=name, datatype=datatype, shape=shape)

    return ExportedSegment(
        k,
        file,
        spec(names[0], args[0]),
        None if last else spec(HIDDEN_OUT, hidden),
        spec(MASK_NAME, args[1]) if text else None,
    )


def open_session(path: Path) -> ort.InferenceSession:
    """A CPU session: parity is about the graph, not about the accelerator."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@torch.no_grad()
def check_parity(
    model: MultiExitNet,
    version_dir: Path,
    samples: FloatArray | tuple[npt.NDArray[Any], ...],
    atol: float = DEFAULT_ATOL,
) -> list[float]:
    """Max abs difference per segment between onnxruntime and PyTorch; raises above `atol`.

    `samples` are pixels, or (ids, mask) of real texts. Each segment gets PyTorch's hidden
    state (and the mask) as input, so a fault is pinned on the segment that has it rather
    than smeared over the ones after it.
    """
    model.eval()
    arrays = samples if isinstance(samples, tuple) else (samples.astype(np.float32),)
    x: tuple[torch.Tensor, ...] = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    diffs = []
    for k, segment in enumerate(segment_modules(model)):
        expected = [t.numpy() for t in segment(*x)]
        path = version_dir / f"segment_{k}.onnx"
        try:
            session = open_session(path)
            feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), x, strict=True)}
            got = session.run(None, feed)
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise ExportError(f"segment {k} ({path.name}) cannot run: {exc}") from exc
        if len(got) != len(expected):
            raise ExportError(f"segment {k} has {len(got)} outputs, expected {len(expected)}")
        diff = max(float(np.max(np.abs(e - g))) for e, g in zip(expected, got, strict=True))
        if not np.isfinite(diff) or diff > atol:
            raise ExportError(f"segment {k} differs from PyTorch: max abs diff {diff:.3g} > {atol}")
        diffs.append(diff)
        state = segment.block(x[0] if len(x) == 1 else x)
        x = state if isinstance(state, tuple) else (state,)
    return diffs
