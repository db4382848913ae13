"""Tiny ONNX graphs that gather and concatenate hidden-state rows where they live.

On a GPU, moving survivors' hidden rows through the host would cost two copies per stage;
running Gather/Concat as onnxruntime graphs on the same provider keeps them on the device.
Graphs are built in memory with `onnx.helper`, one per (element type, rank[, arity]).
"""

from __future__ import annotations

from functools import lru_cache

import onnx
from onnx import TensorProto, helper

OPSET = 17
ELEM_TYPES = {"FP32": TensorProto.FLOAT, "FP16": TensorProto.FLOAT16}


def _tensor(name: str, elem_type: int, rank: int) -> onnx.ValueInfoProto:
    dims: list[str | int | None] = [f"d{i}_{name}" for i in range(rank)]
    return helper.make_tensor_value_info(name, elem_type, dims)


@lru_cache(maxsize=64)
def gather_model(elem_type: int, rank: int) -> bytes:
    """`out = data[indices]` along axis 0 (rows); `indices` is an int64 vector."""
    node = helper.make_node("Gather", ["data", "indices"], ["out"], axis=0)
    graph = helper.make_graph(
        [node],
        "gather_rows",
        [_tensor("data", elem_type, rank), _tensor("indices", TensorProto.INT64, 1)],
        [_tensor("out", elem_type, rank)],
    )
    return _serialise(graph)


@lru_cache(maxsize=64)
def concat_model(elem_type: int, rank: int, arity: int) -> bytes:
    """`out = concat(in0, ..., in{arity-1})` along axis 0."""
    names = [f"in{i}" for i in range(arity)]
    node = helper.make_node("Concat", names, ["out"], axis=0)
    graph = helper.make_graph(
        [node],
        f"concat_rows_{arity}",
        [_tensor(n, elem_type, rank) for n in names],
        [_tensor("out", elem_type, rank)],
    )
    return _serialise(graph)


@lru_cache(maxsize=64)
def select_model(elem_type: int, rank: int, arity: int) -> bytes:
    """`out = concat(in0[idx0], ..., in{arity-1}[idx{arity-1}])` along axis 0: a stage
    batch from its parts' chosen rows in one run."""
    inputs, nodes = [], []
    for i in range(arity):
        inputs += [_tensor(f"in{i}", elem_type, rank), _tensor(f"idx{i}", TensorProto.INT64, 1)]
        nodes.append(helper.make_node("Gather", [f"in{i}", f"idx{i}"], [f"g{i}"], axis=0))
    gathered = [f"g{i}" for i in range(arity)]
    if arity == 1:
        nodes[0].output[0] = "out"
    else:
        nodes.append(helper.make_node("Concat", gathered, ["out"], axis=0))
    graph = helper.make_graph(
        nodes, f"select_rows_{arity}", inputs, [_tensor("out", elem_type, rank)]
    )
    return _serialise(graph)


def _serialise(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data
