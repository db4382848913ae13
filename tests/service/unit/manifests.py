"""Small in-memory manifests for tests that need a model's shape but no ONNX files."""

from __future__ import annotations

from typing import Any

from models.manifest import Manifest


def make_manifest(
    exits: int = 3, classes: int = 4, thresholds: dict[str, list[float]] | None = None
) -> Manifest:
    """A valid manifest with `exits` segments; per-policy thresholds per exit."""
    thresholds = thresholds or {"confidence": [0.9] * exits}

    def segment(k: int) -> dict[str, Any]:
        last = k == exits - 1
        return {
            "index": k,
            "file": f"segment_{k}.onnx",
            "input": {
                "name": "input" if k == 0 else "hidden_in",
                "shape": [1, 2, 2] if k == 0 else [8],
            },
            "hidden_output": None if last else {"name": "hidden", "shape": [8]},
            "logits_output": "logits",
            "probs_output": "probs",
            "macs": 10 * (k + 1),
            "cumulative_fraction": (k + 1) / exits,
            "thresholds": {p: ts[k] for p, ts in thresholds.items()},
        }

    return Manifest.model_validate(
        {
            "name": "m",
            "version": "1",
            "architecture": "test",
            "labels": [str(c) for c in range(classes)],
            "input": {"name": "input", "shape": [1, 2, 2]},
            "segments": [segment(k) for k in range(exits)],
        }
    )
