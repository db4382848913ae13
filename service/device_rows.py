"""Picking and merging hidden-state rows between stages, where the rows live.

On the host these are numpy indexing and concatenation. On a device (the bound path of
service/runtime.py) they are tiny onnxruntime graphs on the same provider, so survivors'
rows never travel through the host. A stage batch is put together with `select`: the
chosen rows of each part, gathered and concatenated in one graph run, so a batch that
forwards its survivors only names their rows (`Packet.sel`) and no Gather runs when it
ends.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.ort_graphs import ELEM_TYPES, concat_model, gather_model, select_model
from service.sessions import Placement, create_session
from service.settings import Settings
from service.text import TextRows, concat_rows

Tensor: TypeAlias = npt.NDArray[Any] | ort.OrtValue
Hidden: TypeAlias = Tensor | TextRows
Rows: TypeAlias = npt.NDArray[np.int64]
MAX_CONCAT_ARITY = 8  # wider merges are done in rounds, so few graphs are ever built
GATHER, CONCAT, SELECT = "gather", "concat", "select"


class DeviceRows:
    """The row graphs of one model version's placement, each built once; thread-safe."""

    def __init__(self, settings: Settings, placement: Placement, label: str) -> None:
        self._settings, self.placement, self._label = settings, placement, label
        self._graphs: dict[tuple[str, int, int, int], ort.InferenceSession] = {}
        self._lock = threading.Lock()

    def take(self, x: Hidden, rows: Rows) -> Hidden:
        """Rows `rows` of x, in that order, where x lives."""
        if isinstance(x, TextRows):
            return x.take(rows)
        if not isinstance(x, ort.OrtValue):
            return x[rows]
        sess = self._graph(GATHER, _elem_type(x), len(x.shape()))
        binding = sess.io_binding()
        binding.bind_ortvalue_input("data", x)
        binding.bind_cpu_input("indices", _indices(rows))
        return self._run(sess, binding)

    def concat(self, xs: Sequence[Hidden]) -> Hidden:
        """The rows of every x, in order, as one batch."""
        return self.select([(x, None) for x in xs])

    def select(self, parts: Sequence[tuple[Hidden, Rows | None]]) -> Hidden:
        """Rows `rows` of each x (None: all of them), in order, as one batch: on a device,
        one Gather-and-Concat graph run per `MAX_CONCAT_ARITY` parts."""
        if len(parts) == 1 and parts[0][1] is None:
            return parts[0][0]
        if not any(isinstance(x, ort.OrtValue) for x, _ in parts):
            taken = [x if rows is None else self.take(x, rows) for x, rows in parts]
            texts = [x for x in taken if isinstance(x, TextRows)]
            if texts:
                return concat_rows(texts)
            return np.concatenate([x for x in taken if isinstance(x, np.ndarray)], axis=0)
        values = [(self._on_device(x), rows) for x, rows in parts]
        step = MAX_CONCAT_ARITY
        merged = [self._select_bound(values[i : i + step]) for i in range(0, len(values), step)]
        while len(merged) > 1:
            merged = [self._concat_bound(merged[i : i + step]) for i in range(0, len(merged), step)]
        return merged[0]

    def prebuild(self, datatype: str, rank: int) -> None:
        """Build the merge graphs for one hidden-state kind before traffic needs them."""
        for arity in range(1, MAX_CONCAT_ARITY + 1):
            self._graph(SELECT, ELEM_TYPES[datatype], rank, arity)
            if arity > 1:
                self._graph(CONCAT, ELEM_TYPES[datatype], rank, arity)

    def clear(self) -> None:
        with self._lock:
            self._graphs.clear()

    def _select_bound(self, parts: Sequence[tuple[ort.OrtValue, Rows | None]]) -> ort.OrtValue:
        first = parts[0][0]
        sess = self._graph(SELECT, _elem_type(first), len(first.shape()), len(parts))
        binding = sess.io_binding()
        for i, (x, rows) in enumerate(parts):
            binding.bind_ortvalue_input(f"in{i}", x)
            everything = np.arange(x.shape()[0], dtype=np.int64)
            binding.bind_cpu_input(f"idx{i}", everything if rows is None else _indices(rows))
        return self._run(sess, binding)

    def _concat_bound(self, xs: Sequence[ort.OrtValue]) -> ort.OrtValue:
        if len(xs) == 1:
            return xs[0]
        sess = self._graph(CONCAT, _elem_type(xs[0]), len(xs[0].shape()), len(xs))
        binding = sess.io_binding()
        for i, x in enumerate(xs):
            binding.bind_ortvalue_input(f"in{i}", x)
        return self._run(sess, binding)

    def _run(self, sess: ort.InferenceSession, binding: ort.IOBinding) -> ort.OrtValue:
        binding.bind_output("out", self.placement.device_type, self.placement.device_id)
        sess.run_with_iobinding(binding)
        out: ort.OrtValue = binding.get_outputs()[0]
        return out

    def _on_device(self, x: Hidden) -> ort.OrtValue:
        if isinstance(x, ort.OrtValue):
            return x
        if isinstance(x, TextRows):
            raise TypeError("text rows stay on the host")
        dev, dev_id = self.placement.device_type, self.placement.device_id
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), dev, dev_id)

    def _graph(self, kind: str, elem_type: int, rank: int, arity: int = 1) -> ort.InferenceSession:
        """The graph session of this kind for this tensor kind and arity, built once."""
        key = (kind, elem_type, rank, arity)
        with self._lock:
            sess = self._graphs.get(key)
            if sess is None:
                model = {
                    GATHER: lambda: gather_model(elem_type, rank),
                    CONCAT: lambda: concat_model(elem_type, rank, arity),
                    SELECT: lambda: select_model(elem_type, rank, arity),
                }[kind]()
                label = f"{self._label} {kind}{arity} graph"
                sess = create_session(model, self._settings, self.placement, label)
                self._graphs[key] = sess
            return sess


def _indices(rows: Rows) -> Rows:
    return np.ascontiguousarray(rows, dtype=np.int64)


def _elem_type(x: ort.OrtValue) -> int:
    kind = x.data_type()  # e.g. "tensor(float)"
    return {"tensor(float)": ELEM_TYPES["FP32"], "tensor(float16)": ELEM_TYPES["FP16"]}[kind]
