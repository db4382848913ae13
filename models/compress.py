"""Store a segment's large weights as FP16 while it still computes in FP32.

A pretrained text encoder is ~90 MB of FP32 weights, most of it the vocabulary's embedding
table. Halving the files keeps the bundled model small enough to commit, without FP16
arithmetic: each large initializer is stored as FP16 behind a Cast to FP32, which
onnxruntime folds into an FP32 constant when the session loads. The PyTorch weights are
rounded to FP16 first (`round_weights`), so calibration, the test figures and the parity
check all see exactly the weights that are served.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

MIN_ELEMENTS = 1024  # small tensors (biases, norms) gain nothing and stay FP32


@torch.no_grad()
def round_weights(model: nn.Module, min_elements: int = MIN_ELEMENTS) -> None:
    """Round every large floating-point parameter to the nearest FP16 value, in place."""
    for param in model.parameters():
        if param.is_floating_point() and param.numel() >= min_elements:
            param.copy_(param.half().float())


def store_fp16(path: Path, min_elements: int = MIN_ELEMENTS) -> int:
    """Rewrite `path` with its large FP32 initializers stored as FP16; returns how many."""
    model = onnx.load(str(path))
    graph = model.graph
    casts, kept = [], []
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if init.data_type != onnx.TensorProto.FLOAT or array.size < min_elements:
            kept.append(init)
            continue
        stored = f"{init.name}__fp16"
        kept.append(numpy_helper.from_array(array.astype(np.float16), stored))
        casts.append(helper.make_node("Cast", [stored], [init.name], to=onnx.TensorProto.FLOAT))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = [*casts, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return len(casts)
