"""Running one model version's segments, on the host or with hidden states on the device.

Two paths. Plain: numpy in, numpy out (the CPU default). Bound: I/O binding with
OrtValues, where each segment's hidden output stays where the provider put it and only
the exit's probabilities are copied to the host; survivors' rows are picked and merged by
tiny Gather/Concat graphs on the same provider (service/device_rows.py). CUDA uses the
bound path; `io_binding=on` forces it on CPU too, so that the tests exercise it without a
GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models.manifest import Manifest, Segment
from service.device_rows import DeviceRows, Hidden
from service.sessions import Placement, ProviderError, choose_placement, create_session
from service.settings import Settings
from service.text import TextRows, Tokens, concat_rows, length_groups
from service.verification import VersionMismatch, check_output, check_signatures, warm_up_input

log = logging.getLogger(__name__)

__all__ = ["Hidden", "ModelRuntime", "SegmentOutput"]

WARM_TEXT = "a short warm-up text, "


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
        self._label = f"model '{manifest.name}' version '{manifest.version}'"
        self.rows = DeviceRows(settings, self.placement, self._label)
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
        return self.rows.take(x, rows)

    def concat(self, xs: Sequence[Hidden]) -> Hidden:
        """The rows of every x, in order, as one batch."""
        return self.rows.concat(xs)

    def select(self, parts: Sequence[tuple[Hidden, npt.NDArray[np.int64] | None]]) -> Hidden:
        """The chosen rows of each part, in order, as one batch (see service/device_rows.py)."""
        return self.rows.select(parts)

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
                x = self.take(self.select([(out.hidden, rows[::-1]), (out.hidden, rows[:1])]), rows)
        if self.bound:
            self._prebuild_row_graphs()

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

    def _prebuild_row_graphs(self) -> None:
        for seg in self.manifest.segments:
            if seg.hidden_output is not None:
                out = seg.hidden_output
                self.rows.prebuild(out.datatype, len(out.shape) + 1)

    def close(self) -> None:
        """Drop the sessions; onnxruntime frees them when the last reference goes."""
        self._sessions = []
        self.rows.clear()

    def _where(self, seg: Segment) -> str:
        return f"{self._label} segment {seg.index}"


def _shape(x: Hidden) -> tuple[int, ...]:
    if isinstance(x, TextRows):
        return tuple(x.data.shape)
    return tuple(x.shape()) if isinstance(x, ort.OrtValue) else tuple(x.shape)
