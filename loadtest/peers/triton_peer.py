"""A full-depth peer: the same ONNX segments behind NVIDIA Triton (PyTriton), on the CPU.

Runs in its own virtualenv (`python -m loadtest.peers install triton`). Triton's dynamic
batcher (max batch 32, as exitserve's default) forms the batches; the model answers with
the same output names as exitserve (`label`, `exit_index`), so the benchmark sends both
the very same v2 request bodies and checks the labels with the same client.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from loadtest.peers.onnxchain import FullDepth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version-dir", type=Path, required=True)
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch", type=int, default=32)
    args = parser.parse_args()
    chain = FullDepth(args.version_dir)
    last = chain.depth - 1

    def infer(input: np.ndarray) -> dict[str, np.ndarray]:  # named as the v2 input
        probs = chain(input.astype(np.float32, copy=False))
        labels = probs.argmax(axis=1).astype(np.int64).reshape(-1, 1)
        return {"label": labels, "exit_index": np.full_like(labels, last, dtype=np.int32)}

    config = TritonConfig(
        http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.model,
            infer_func=batch(infer),  # requests in one dynamic batch, stacked
            inputs=[Tensor(name="input", dtype=np.float32, shape=chain.input_shape)],
            outputs=[
                Tensor(name="label", dtype=np.int64, shape=(1,)),
                Tensor(name="exit_index", dtype=np.int32, shape=(1,)),
            ],
            config=ModelConfig(max_batch_size=args.max_batch, batcher=DynamicBatcher()),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
