"""A full-depth peer: the same ONNX segments behind LitServe, a light Python server.

Runs in its own virtualenv (`python -m loadtest.peers install litserve`). LitServe reads
JSON bodies only, so this peer takes v2 requests with JSON tensors (the benchmark sends
exitserve the same JSON bodies beside it) and answers with exitserve's output names.
Batching as exitserve's default: up to 32 requests, greedy (no wait for a batch to fill).
"""

# No `from __future__ import annotations`: LitServe reads these annotations at run time.
import argparse
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np
import numpy.typing as npt
from fastapi import Request

from loadtest.peers.onnxchain import FullDepth

Array = npt.NDArray[np.float32]


class SegmentsAPI(ls.LitAPI):  # type: ignore[misc]  # litserve ships no type hints
    """v2 JSON in, the last exit's label out."""

    def __init__(self, version_dir: Path, path: str, max_batch: int) -> None:
        super().__init__(max_batch_size=max_batch, batch_timeout=0.0, api_path=path)
        self.version_dir = version_dir

    def setup(self, device: str) -> None:
        self.chain = FullDepth(self.version_dir)

    def decode_request(self, request: Request) -> Array:
        """LitServe hands over the parsed JSON body when this says `Request`."""
        body: dict[str, Any] = request  # type: ignore[assignment]
        tensor = body["inputs"][0]
        return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])

    def batch(self, inputs: list[Array]) -> Array:
        """One array of every request's rows; the split points are kept for unbatch (one
        worker runs batch, predict and unbatch in turn)."""
        self._splits = np.cumsum([len(a) for a in inputs])[:-1]
        return np.concatenate(inputs)

    def predict(self, x: Array) -> Any:
        return self.chain(x).argmax(axis=1)

    def unbatch(self, output: Any) -> list[Any]:
        return list(np.split(output, self._splits))

    def encode_response(self, labels: Any) -> dict[str, Any]:
        last = self.chain.depth - 1
        return {
            "outputs": [
                {
                    "name": "label",
                    "datatype": "INT64",
                    "shape": [len(labels), 1],
                    "data": labels.tolist(),
                },
                {
                    "name": "exit_index",
                    "datatype": "INT32",
                    "shape": [len(labels), 1],
                    "data": [last] * len(labels),
                },
            ]
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version-dir", type=Path, required=True)
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=0, help="unused (Triton's)")
    parser.add_argument("--metrics-port", type=int, default=0, help="unused (Triton's)")
    parser.add_argument("--max-batch", type=int, default=32)
    args = parser.parse_args()
    path = f"/v2/models/{args.model}/infer"
    api = SegmentsAPI(args.version_dir, path, args.max_batch)
    server = ls.LitServer(
        api,
        accelerator="cpu",
        workers_per_device=1,
        healthcheck_path=f"/v2/models/{args.model}/ready",
    )
    server.run(port=args.http_port, generate_client_file=False, access_log=False)


if __name__ == "__main__":
    main()
