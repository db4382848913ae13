"""Running one model version's segments, on the host or with hidden states on the device.

Two paths. Plain: numpy in, numpy out (the CPU default). Bound: I/O binding with
OrtValues, where each segment's hidden output stays where the provider put it and only
the exit's probabilities are copied to the host; survivors' rows are picked and merged by
tiny Gather/Concat graphs on the same provider. CUDA uses the bound path; `io_binding=on`
forces it on CPU too, so that the tests exercise it without a GPU.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models.manifest import Manifest, Segment
from service.ort_graphs import ELEM_TYPES, concat_model, gather_model
from service.sessions import Placement, ProviderError, choose_placement, create_session
from service.settings import Settings
from service.text import TextRows, Tokens, concat_rows, length_groups
from service.verification import VersionMismatch, check_output, check_signatures, warm_up_input

log = logging.getLogger(__name__)

Tensor: TypeAlias = npt.NDArray[Any] | ort.OrtValue
Hidden: TypeAlias = Tensor | TextRows
WARM_TEXT = "a short warm-up text, "
MAX_CONCAT_ARITY = 8  # wider merges are done in rounds, so few graphs are ever built


@dataclass(frozen=True)
class SegmentOutput:
    """An exit's probabilities on the host, and the hidden state for the next segment."""

    probs: npt.NDArray[np.float32]
    hidden: Hidden | None


class ModelRuntime:
    """The sessions of one model version; thread-safe, as onnxruntime's `run` is."""

    def __init__(self, manifest: Manifest, version_dir: Path, settings: Settings) -> None:
        self.manifest = manifest
        self.placement: Placement = choose_placement(settings)
        mode = settings.io_binding
        bindable = manifest.text is None  # text rows carry a mask and vary in width: host
        self.bound = bindable and (
            mode == "on" or (mode == "auto" and self.placement.device_type != "cpu")
        )
        self._settings = settings
        self._graphs: dict[tuple[int, ...], ort.InferenceSession] = {}
        self._graphs_lock = threading.Lock()
        self._label = f"model '{manifest.name}' version '{manifest.version}'"
        self._sessions = [self._open(version_dir, seg) for seg in manifest.segments]
        check_signatures(manifest, self._sessions)
        self.tokens = None if manifest.text is None else self._tokens(version_dir)
        log.info("%s: %s, io_binding=%s", self._label, self.placement.provider, self.bound)

    def _open(self, version_dir: Path, seg: Segment) -> ort.InferenceSession:
        """Segment k's session; a file onnxruntime cannot read is named, not traced."""
        try:
            return create_session(
                version_dir / seg.file, self._settings, self.placement, self._where(seg)
            )
        except ProviderError:
            raise
        except Exception as exc:  # onnxruntime raises its own classes, one per failure kind
            raise VersionMismatch(
                f"segments[{seg.index}] ({seg.file}) is not a valid ONNX model for onnxruntime"
            ) from exc

    def _tokens(self, version_dir: Path) -> Tokens:
        try:
            return Tokens(self.manifest, version_dir)
        except Exception as exc:  # the tokenizers library raises its own exception kinds
            text = self.manifest.text
            file = text.tokenizer_file if text else "?"
            raise VersionMismatch(f"text.tokenizer_file ({file}) cannot be loaded: {exc}") from exc

    @property
    def num_segments(self) -> int:
        return len(self._sessions)

    def run(self, k: int, x: Hidden) -> SegmentOutput:
        """Run segment k on a batch; stage 0 takes a host array, later ones `hidden`."""
        seg = self.manifest.segments[k]
        if isinstance(x, TextRows):
            return self._run_text(k, seg, x)
        if self.bound:
            return self._run_bound(k, seg, x)
        names = (
            [seg.probs_output]
            if seg.hidden_output is None
            else [seg.hidden_output.name, seg.probs_output]
        )
        feed = x.numpy() if isinstance(x, ort.OrtValue) else x
        outs = self._sessions[k].run(names, {seg.input.name: feed})
        probs = np.asarray(outs[-1], dtype=np.float32)
        return SegmentOutput(probs=probs, hidden=None if len(outs) == 1 else outs[0])

    def _run_text(self, k: int, seg: Segment, x: TextRows) -> SegmentOutput:
        """A text batch, split by length first where padding would waste compute; the
        outputs come back in the batch's row order."""
        groups = length_groups(x)
        if groups is None:
            return self._run_text_once(k, seg, x)
        parts = [self._run_text(k, seg, x.take(rows)) for rows in groups]
        order = np.concatenate(groups)
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        probs = np.concatenate([p.probs for p in parts])[back]
        hiddens = [p.hidden for p in parts if isinstance(p.hidden, TextRows)]
        hidden = concat_rows(hiddens).take(back) if hiddens else None
        return SegmentOutput(probs, hidden)

    def _run_text_once(self, k: int, seg: Segment, x: TextRows) -> SegmentOutput:
        """Ids (segment 0) or hidden states, with the mask every segment takes."""
        assert seg.mask_input is not None  # verified at load for every text model
        names = [seg.probs_output]
        if seg.hidden_output is not None:
            names.insert(0, seg.hidden_output.name)
        feed = {seg.input.name: x.data, seg.mask_input.name: x.mask}
        outs = self._sessions[k].run(names, feed)
        probs = np.asarray(outs[-1], dtype=np.float32)
        return SegmentOutput(probs, None if len(outs) == 1 else TextRows(outs[0], x.mask))

    def _run_bound(self, k: int, seg: Segment, x: Hidden) -> SegmentOutput:
        dev, dev_id = self.placement.device_type, self.placement.device_id
        value = (
            x
            if isinstance(x, ort.OrtValue)
            else ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), dev, dev_id)
        )
        binding = self._sessions[k].io_binding()
        binding.bind_ortvalue_input(seg.input.name, value)
        if seg.hidden_output is not None:
            binding.bind_output(seg.hidden_output.name, dev, dev_id)
        binding.bind_output(seg.probs_output, "cpu")
        self._sessions[k].run_with_iobinding(binding)
        outs = binding.get_outputs()
        probs = np.asarray(outs[-1].numpy(), dtype=np.float32)
        return SegmentOutput(probs=probs, hidden=outs[0] if len(outs) == 2 else None)

    def take(self, x: Hidden, rows: npt.NDArray[np.int64]) -> Hidden:
        """Rows `rows` of x, in that order, where x lives."""
        if isinstance(x, TextRows):
            return x.take(rows)
        if not isinstance(x, ort.OrtValue):
            return x[rows]
        sess = self._graph(_elem_type(x), len(x.shape()))
        binding = sess.io_binding()
        binding.bind_ortvalue_input("data", x)
        binding.bind_cpu_input("indices", np.ascontiguousarray(rows, dtype=np.int64))
        binding.bind_output("out", self.placement.device_type, self.placement.device_id)
        sess.run_with_iobinding(binding)
        out: ort.OrtValue = binding.get_outputs()[0]
        return out

    def concat(self, xs: Sequence[Hidden]) -> Hidden:
        """The rows of every x, in order, as one batch."""
        if len(xs) == 1:
            return xs[0]
        texts = [x for x in xs if isinstance(x, TextRows)]
        if texts:
            return concat_rows(texts)
        if not any(isinstance(x, ort.OrtValue) for x in xs):
            return np.concatenate([x for x in xs if isinstance(x, np.ndarray)], axis=0)
        parts: list[Tensor] = [x for x in xs if not isinstance(x, TextRows)]
        while len(parts) > 1:
            step = MAX_CONCAT_ARITY
            parts = [self._concat_bound(parts[i : i + step]) for i in range(0, len(parts), step)]
        return parts[0]

    def _concat_bound(self, xs: Sequence[Tensor]) -> Tensor:
        if len(xs) == 1:
            return xs[0]
        values = [x if isinstance(x, ort.OrtValue) else self._to_device(x) for x in xs]
        sess = self._graph(_elem_type(values[0]), len(values[0].shape()), len(values))
        binding = sess.io_binding()
        for i, v in enumerate(values):
            binding.bind_ortvalue_input(f"in{i}", v)
        binding.bind_output("out", self.placement.device_type, self.placement.device_id)
        sess.run_with_iobinding(binding)
        out: ort.OrtValue = binding.get_outputs()[0]
        return out

    def _to_device(self, x: npt.NDArray[Any]) -> ort.OrtValue:
        dev, dev_id = self.placement.device_type, self.placement.device_id
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), dev, dev_id)

    def _graph(self, elem_type: int, rank: int, arity: int = 0) -> ort.InferenceSession:
        """The Gather (arity 0) or Concat graph session for this tensor kind, built once."""
        key = (elem_type, rank, arity)
        with self._graphs_lock:
            sess = self._graphs.get(key)
            if sess is None:
                model = (
                    gather_model(elem_type, rank)
                    if arity == 0
                    else concat_model(elem_type, rank, arity)
                )
                label = f"{self._label} {'gather' if arity == 0 else f'concat{arity}'} graph"
                sess = create_session(model, self._settings, self.placement, label)
                self._graphs[key] = sess
            return sess

    def warm_up(self, batch_sizes: Sequence[int]) -> None:
        """Run the whole chain (and the row graphs) once per batch size before traffic,
        checking every segment's outputs: a version that loads must be able to answer."""
        classes = len(self.manifest.labels)
        for n in batch_sizes:
            x = self._warm_input(n)
            for seg in self.manifest.segments:
                out = self._warm_run(seg, x, n)
                hidden_shape = None if out.hidden is None else _shape(out.hidden)
                check_output(seg, classes, n, out.probs, hidden_shape)
                if out.hidden is None:
                    break
                # exercise the row graphs the scheduler uses between stages
                rows = np.arange(n, dtype=np.int64)
                x = self.take(self.concat([out.hidden, self.take(out.hidden, rows[:1])]), rows)
        if self.bound:
            self._prebuild_concat_graphs()

    def _warm_input(self, n: int) -> Hidden:
        """Pixels in range for an image model; real texts of mixed lengths for a text one,
        so that padding, trimming and merging run before traffic does."""
        if self.tokens is None:
            return warm_up_input(self.manifest, n)
        return self.tokens.encode([WARM_TEXT * (1 + i % 4) for i in range(n)])

    def _warm_run(self, seg: Segment, x: Hidden, n: int) -> SegmentOutput:
        try:
            return self.run(seg.index, x)
        except Exception as exc:  # onnxruntime's message says which node and dimension
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise VersionMismatch(
                f"segments[{seg.index}] ({seg.file}) failed its warm-up run with {n} rows: {reason}"
            ) from exc

    def _prebuild_concat_graphs(self) -> None:
        for seg in self.manifest.segments:
            if seg.hidden_output is not None:
                elem = ELEM_TYPES[seg.hidden_output.datatype]
                for arity in range(2, MAX_CONCAT_ARITY + 1):
                    self._graph(elem, len(seg.hidden_output.shape) + 1, arity)

    def close(self) -> None:
        """Drop the sessions; onnxruntime frees them when the last reference goes."""
        self._sessions = []
        with self._graphs_lock:
            self._graphs.clear()

    def _where(self, seg: Segment) -> str:
        return f"{self._label} segment {seg.index}"


def _shape(x: Hidden) -> tuple[int, ...]:
    if isinstance(x, TextRows):
        return tuple(x.data.shape)
    return tuple(x.shape()) if isinstance(x, ort.OrtValue) else tuple(x.shape)


def _elem_type(x: ort.OrtValue) -> int:
    kind = x.data_type()  # e.g. "tensor(float)"
    return {"tensor(float)": ELEM_TYPES["FP32"], "tensor(float16)": ELEM_TYPES["FP16"]}[kind]
