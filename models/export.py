"""Cut a trained multi-exit network into one ONNX file per segment and prove they match.

Segment k = blocks[k] + heads[k]; it outputs its hidden state (except the last), the exit's
logits and, in-graph, their softmax, so the server's policies never recompute it. After
writing, every segment is run in onnxruntime on real samples and compared with PyTorch by
maximum absolute difference; a mismatch fails the export instead of shipping a model that
answers differently from the one that was calibrated.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from torch.nn import functional as F

from models.data import FloatArray
from models.manifest import TensorSpec
from models.multiexit import MultiExitNet

OPSET = 17
INPUT_NAME = "input"
HIDDEN_IN = "hidden_in"
HIDDEN_OUT, LOGITS, PROBS = "hidden", "logits", "probs"
DEFAULT_ATOL = 1e-3


class ExportError(RuntimeError):
    """An exported segment that disagrees with PyTorch or cannot be run."""


class SegmentModule(nn.Module):
    """One served segment: a block then its exit head; softmax computed in-graph."""

    def __init__(self, block: nn.Module, head: nn.Module, last: bool) -> None:
        super().__init__()
        self.block, self.head, self.last = block, head, last

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden = self.block(x)
        logits = self.head(hidden)
        probs = F.softmax(logits, dim=1)
        return (logits, probs) if self.last else (hidden, logits, probs)


@dataclass(frozen=True)
class ExportedSegment:
    """What the manifest needs to know about one written segment file."""

    index: int
    file: str
    input: TensorSpec
    hidden_output: TensorSpec | None


def segment_modules(model: MultiExitNet) -> list[SegmentModule]:
    """The model cut into its served segments (sharing weights with `model`)."""
    last = model.num_exits - 1
    pairs = zip(model.blocks, model.heads, strict=True)
    return [SegmentModule(b, h, k == last).eval() for k, (b, h) in enumerate(pairs)]


def export_segments(model: MultiExitNet, version_dir: Path) -> list[ExportedSegment]:
    """Write `segment_<k>.onnx` for every exit; dynamic batch axis on every tensor."""
    model.eval()
    version_dir.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(2, *model.config.input_shape)
    exported = []
    for k, segment in enumerate(segment_modules(model)):
        in_name = INPUT_NAME if k == 0 else HIDDEN_IN
        outputs = [LOGITS, PROBS] if segment.last else [HIDDEN_OUT, LOGITS, PROBS]
        path = version_dir / f"segment_{k}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                segment,
                (x,),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=[in_name],
                output_names=outputs,
                dynamic_axes={name: {0: "batch"} for name in [in_name, *outputs]},
            )
        with torch.no_grad():
            hidden = segment.block(x)
        spec = TensorSpec(name=in_name, shape=list(x.shape[1:]))
        out = None if segment.last else TensorSpec(name=HIDDEN_OUT, shape=list(hidden.shape[1:]))
        exported.append(ExportedSegment(k, path.name, spec, out))
        x = hidden
    return exported


def open_session(path: Path) -> ort.InferenceSession:
    """A CPU session: parity is about the graph, not about the accelerator."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@torch.no_grad()
def check_parity(
    model: MultiExitNet, version_dir: Path, samples: FloatArray, atol: float = DEFAULT_ATOL
) -> list[float]:
    """Max abs difference per segment between onnxruntime and PyTorch; raises above `atol`.

    Each segment gets PyTorch's hidden state as input, so a fault is pinned on the segment
    that has it rather than smeared over the ones after it.
    """
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    diffs = []
    for k, segment in enumerate(segment_modules(model)):
        expected = [t.numpy() for t in segment(x)]
        path = version_dir / f"segment_{k}.onnx"
        try:
            session = open_session(path)
            got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise ExportError(f"segment {k} ({path.name}) cannot run: {exc}") from exc
        if len(got) != len(expected):
            raise ExportError(f"segment {k} has {len(got)} outputs, expected {len(expected)}")
        diff = max(float(np.max(np.abs(e - g))) for e, g in zip(expected, got, strict=True))
        if not np.isfinite(diff) or diff > atol:
            raise ExportError(f"segment {k} differs from PyTorch: max abs diff {diff:.3g} > {atol}")
        diffs.append(diff)
        x = segment.block(x)
    return diffs
