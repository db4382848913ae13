"""A text model version run on bare onnxruntime, from strings to every exit's softmax.

Torch-free: what the manifest declares, done literally (tokenizer file from the version
folder, its max length and padding, ids and mask into segment 0, hidden states and the
same mask into every later one). Tests use it to prove an exported version answers as
PyTorch did; it is the reference the serving side's tokenising runtime is checked against.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models.manifest import Manifest, load_manifest
from models.tokenize import IntArray, TextEncoder


def encoder_for(version_dir: Path, manifest: Manifest) -> TextEncoder:
    """The version's own tokenisation, as its manifest declares it."""
    if manifest.text is None:
        raise ValueError(f"{manifest.name}/{manifest.version} is not a text model")
    text = manifest.text
    return TextEncoder(version_dir / text.tokenizer_file, text.max_length, text.pad_token)


def run_segments(
    version_dir: Path, manifest: Manifest, ids: IntArray, mask: IntArray
) -> list[npt.NDArray[np.float32]]:
    """Every exit's probabilities for already tokenised rows (all rows run to the end)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    x: npt.NDArray[np.generic] = ids
    probs = []
    for seg in manifest.segments:
        session = ort.InferenceSession(
            str(version_dir / seg.file), options, providers=["CPUExecutionProvider"]
        )
        assert seg.mask_input is not None
        feed = {seg.input.name: x, seg.mask_input.name: mask}
        out = dict(
            zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True)
        )
        probs.append(np.asarray(out[seg.probs_output], dtype=np.float32))
        if seg.hidden_output is not None:
            x = out[seg.hidden_output.name]
    return probs


def text_probabilities(version_dir: Path, texts: Sequence[str]) -> npt.NDArray[np.float32]:
    """(exits, N, classes) for `texts`, tokenised and padded as one batch."""
    manifest = load_manifest(version_dir)
    ids, mask = encoder_for(version_dir, manifest).encode(texts)
    return np.stack(run_segments(version_dir, manifest, ids, mask))
