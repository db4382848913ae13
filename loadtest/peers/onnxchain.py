"""The model's ONNX segments chained to full depth, read from manifest.json alone.

Runs inside a peer's virtualenv: numpy, onnxruntime and the standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort


class FullDepth:
    """Every segment in turn, as a competent user serves a segmented model: one session
    per segment, the hidden state passed on in memory, onnxruntime's default threads."""

    def __init__(self, version_dir: Path) -> None:
        manifest: dict[str, Any] = json.loads((version_dir / "manifest.json").read_text())
        self.input_shape = tuple(manifest["input"]["shape"])
        self._steps = []
        for seg in manifest["segments"]:
            sess = ort.InferenceSession(
                str(version_dir / seg["file"]), providers=["CPUExecutionProvider"]
            )
            hidden = seg.get("hidden_output")
            out = hidden["name"] if hidden else seg["probs_output"]
            self._steps.append((sess, seg["input"]["name"], out))

    @property
    def depth(self) -> int:
        return len(self._steps)

    def __call__(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The last exit's probabilities for a batch."""
        for sess, name, out in self._steps:
            x = sess.run([out], {name: x})[0]
        return x
