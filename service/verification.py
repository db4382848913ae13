"""Checking a version's segment files against its manifest before it may take traffic.

The manifest is a claim about the ONNX files beside it. A wrong claim (5 labels over a
10-class head, swapped segment files, an input shape the model does not take) would load
and then fail or mislabel every request, so a load compares each segment's inputs and
outputs with what onnxruntime reports, checks the chain between segments, and checks what
the warm-up run produces. Messages name the segment, the tensor and both sides, never a
path: they are shown to the admin client and in the repository index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models.manifest import Manifest, Segment, TensorSpec

ONNX_TYPES = {
    "tensor(float)": "FP32",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
}
SERVED_INPUTS = ("FP32", "FP16")  # what the protocol layer decodes into
PROB_TOLERANCE = 1e-2  # FP16 heads round a 10-class softmax's sum to about 1e-3


class VersionMismatch(ValueError):
    """The version's files disagree with its manifest, or its outputs are unusable."""


def check_signatures(manifest: Manifest, sessions: Sequence[ort.InferenceSession]) -> None:
    """Every segment's tensors as the manifest declares them, and each link of the chain."""
    if manifest.input.datatype not in SERVED_INPUTS and manifest.text is None:
        raise VersionMismatch(
            f"input.datatype: {manifest.input.datatype} inputs are not served "
            f"(only {', '.join(SERVED_INPUTS)})"
        )
    for seg, sess in zip(manifest.segments, sessions, strict=True):
        _check_segment(seg, sess, len(manifest.labels))
    for prev, seg in zip(manifest.segments, manifest.segments[1:], strict=False):
        hidden = prev.hidden_output
        if hidden is None or (hidden.datatype, hidden.shape) != (
            seg.input.datatype,
            seg.input.shape,
        ):
            raise VersionMismatch(
                f"segments[{seg.index}].input ({_spec(seg.input)}) does not take "
                f"segments[{prev.index}].hidden_output ({_spec(hidden)})"
            )


def _check_segment(seg: Segment, sess: ort.InferenceSession, classes: int) -> None:
    where = _where(seg)
    inputs = {arg.name: arg for arg in sess.get_inputs()}
    declared = [seg.input] if seg.mask_input is None else [seg.input, seg.mask_input]
    if sorted(inputs) != sorted(spec.name for spec in declared):
        raise VersionMismatch(
            f"{where}: the model's inputs are {sorted(inputs)}, the manifest names "
            f"{sorted(spec.name for spec in declared)} (segments[{seg.index}].input, mask_input)"
        )
    for field, spec in zip(("input", "mask_input"), declared, strict=False):
        _check_tensor(where, field, inputs[spec.name], spec)
    outputs = {arg.name: arg for arg in sess.get_outputs()}
    if seg.hidden_output is not None:
        arg = _output(where, outputs, "hidden_output", seg.hidden_output.name)
        _check_tensor(where, "hidden_output", arg, seg.hidden_output)
    for field, name in (("probs_output", seg.probs_output), ("logits_output", seg.logits_output)):
        _check_classes(where, field, _output(where, outputs, field, name), classes)


def _output(where: str, outputs: dict[str, Any], field: str, name: str) -> Any:
    if name not in outputs:
        raise VersionMismatch(
            f"{where}: {field} '{name}' is not an output of the model (it has {sorted(outputs)})"
        )
    return outputs[name]


def _check_tensor(where: str, field: str, arg: Any, spec: TensorSpec) -> None:
    """dtype, rank, a dynamic batch axis, and every fixed dimension against the manifest."""
    got_type = ONNX_TYPES.get(arg.type, arg.type)
    if got_type != spec.datatype:
        raise VersionMismatch(
            f"{where}: {field} '{arg.name}' is {got_type} in the model, "
            f"{spec.datatype} in the manifest"
        )
    dims = list(arg.shape)
    fixed_differ = any(
        isinstance(d, int) and d != w for d, w in zip(dims[1:], spec.shape, strict=False)
    )
    if len(dims) != len(spec.shape) + 1 or fixed_differ:
        raise VersionMismatch(
            f"{where}: {field} '{arg.name}' has shape {_dims(dims)} in the model, "
            f"the manifest says {_dims(['batch', *spec.shape])}"
        )
    if isinstance(dims[0], int):
        raise VersionMismatch(
            f"{where}: {field} '{arg.name}' has a fixed batch axis ({dims[0]}); "
            "the server batches requests, so export it with a dynamic one"
        )


def _check_classes(where: str, field: str, arg: Any, classes: int) -> None:
    if ONNX_TYPES.get(arg.type) not in ("FP32", "FP16"):
        raise VersionMismatch(f"{where}: {field} '{arg.name}' must be FP32 or FP16, not {arg.type}")
    dims = list(arg.shape)
    if len(dims) != 2:
        raise VersionMismatch(
            f"{where}: {field} '{arg.name}' has shape {_dims(dims)}, expected [batch, classes]"
        )
    if isinstance(dims[1], int) and dims[1] != classes:
        raise VersionMismatch(
            f"labels: the manifest lists {classes} labels, but {where} {field} "
            f"'{arg.name}' has {dims[1]} classes"
        )


def check_output(
    seg: Segment,
    classes: int,
    rows: int,
    probs: npt.NDArray[Any],
    hidden_shape: tuple[int, ...] | None,
) -> None:
    """What one warm-up run of a segment produced: shapes, and real probabilities."""
    where = f"{_where(seg)} warm-up with {rows} rows"
    if probs.shape != (rows, classes):
        raise VersionMismatch(
            f"{where}: probs_output '{seg.probs_output}' has shape {list(probs.shape)}, "
            f"expected [{rows}, {classes}] ({classes} labels)"
        )
    if not np.isfinite(probs).all():
        raise VersionMismatch(f"{where}: probs_output '{seg.probs_output}' holds NaN or inf")
    sums = probs.astype(np.float64).sum(axis=1)
    in_range = probs.min() >= -PROB_TOLERANCE and probs.max() <= 1 + PROB_TOLERANCE
    if not in_range or np.abs(sums - 1.0).max() > PROB_TOLERANCE:
        raise VersionMismatch(
            f"{where}: probs_output '{seg.probs_output}' does not hold probabilities "
            "(every row must lie in [0, 1] and sum to 1: is it the softmax?)"
        )
    expected = None if seg.hidden_output is None else (rows, *seg.hidden_output.shape)
    if not _fits(hidden_shape, expected):
        raise VersionMismatch(
            f"{where}: hidden_output has shape {_dims(hidden_shape)}, expected {_dims(expected)}"
        )


def _fits(got: tuple[int, ...] | None, expected: tuple[int, ...] | None) -> bool:
    """Shapes equal, a -1 (a text model's sequence axis) matching any length."""
    if got is None or expected is None:
        return got == expected
    return len(got) == len(expected) and all(
        w in (-1, g) for g, w in zip(got, expected, strict=True)
    )


def warm_up_input(manifest: Manifest, rows: int) -> npt.NDArray[Any]:
    """A real-shaped input in the pixel range, fixed so that a failure reproduces."""
    rng = np.random.default_rng(0)
    dtype = np.float16 if manifest.input.datatype == "FP16" else np.float32
    return rng.random((rows, *manifest.input.shape), dtype=np.float32).astype(dtype)


def _where(seg: Segment) -> str:
    return f"segments[{seg.index}] ({seg.file})"


def _spec(spec: TensorSpec | None) -> str:
    return "none" if spec is None else f"{spec.datatype} {_dims(['batch', *spec.shape])}"


def _dims(dims: Sequence[object] | None) -> str:
    if dims is None:
        return "none"
    return "[" + ", ".join("batch" if d is None else str(d) for d in dims) + "]"
