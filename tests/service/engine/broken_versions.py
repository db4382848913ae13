"""Versions of `tiny` that disagree with their own files, each with the words its refusal
must contain: shared by the engine and the live-server load tests."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

Edit = Callable[[dict[str, Any], Path], None]


def five_labels(m: dict[str, Any], _: Path) -> None:
    m["labels"] = m["labels"][:5]


def _swap_segment_files(m: dict[str, Any], folder: Path) -> None:
    one, two = folder / "segment_1.onnx", folder / "segment_2.onnx"
    data = one.read_bytes()
    one.write_bytes(two.read_bytes())
    two.write_bytes(data)


def _input_shape(m: dict[str, Any], _: Path) -> None:
    m["input"]["shape"] = m["segments"][0]["input"]["shape"] = [1, 32, 32]


def _hidden_dtype(m: dict[str, Any], _: Path) -> None:
    m["segments"][0]["hidden_output"]["datatype"] = "FP16"
    m["segments"][1]["input"]["datatype"] = "FP16"


def _probs_are_logits(m: dict[str, Any], _: Path) -> None:
    for seg in m["segments"]:
        seg["probs_output"], seg["logits_output"] = seg["logits_output"], seg["probs_output"]


def _unknown_output(m: dict[str, Any], _: Path) -> None:
    m["segments"][2]["probs_output"] = "prob"


BREAKAGES: list[tuple[str, Edit, list[str]]] = [
    ("5 labels, 10 classes", five_labels, ["labels", "5 labels", "10 classes"]),
    ("segment files swapped", _swap_segment_files, ["segments[1]", "'hidden_in'", "[batch, 8"]),
    ("input shape", _input_shape, ["segments[0]", "input 'input'", "[batch, 1, 32, 32]"]),
    ("hidden dtype", _hidden_dtype, ["segments[0]", "'hidden'", "FP32 in the model, FP16"]),
    ("probs are logits", _probs_are_logits, ["segments[0]", "does not hold probabilities"]),
    ("unknown output", _unknown_output, ["segments[2]", "probs_output 'prob' is not an output"]),
]


def add_broken_version(repo: Path, version: str, edit: Edit) -> Path:
    """Copy tiny/1 as tiny/<version> and break it with `edit(manifest_json, folder)`."""
    folder = repo / "tiny" / version
    shutil.copytree(repo / "tiny" / "1", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = version
    edit(manifest, folder)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder
