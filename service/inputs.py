"""The one check of a request's samples against the model input, for every transport.

The protocol layer parses (JSON, binary, v1) and the data plane calls this once per
request: shape and batch size, the input dtype, and finiteness after the cast; a text
model's rows arrive tokenised and only their count is checked here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from models.manifest import Manifest
from service.errors import BadRequest
from service.text import TextRows

NP_DTYPES = {"FP32": np.float32, "FP16": np.float16}


def check_input(
    manifest: Manifest, data: npt.NDArray[Any] | TextRows, max_rows: int
) -> npt.NDArray[Any] | TextRows:
    """The request's tensor as the model's input dtype; BadRequest names what is wrong."""
    if isinstance(data, TextRows) or manifest.text is not None:
        return _check_texts(manifest, data, max_rows)
    expected = [-1, *manifest.input.shape]
    shape = list(data.shape)
    if len(shape) != len(expected) or shape[1:] != expected[1:] or shape[0] < 1:
        raise BadRequest(f"inputs[0].shape must be {expected} (at least one sample), got {shape}")
    if shape[0] > max_rows:
        raise BadRequest(f"inputs[0] holds {shape[0]} samples; at most {max_rows} per request")
    if data.dtype.kind not in "fiu":
        raise BadRequest(f"inputs[0] must be numeric, got {data.dtype}")
    data = np.ascontiguousarray(data, dtype=NP_DTYPES[manifest.input.datatype])
    # The one finiteness check, for every transport; after the cast, so a value beyond
    # the input type's range (inf once cast) is caught too.
    if not np.isfinite(data).all():
        raise BadRequest(f"inputs[0] contains NaN or infinity (or a value beyond {data.dtype})")
    return data


def _check_texts(manifest: Manifest, data: object, max_rows: int) -> TextRows:
    """Tokenised texts for a text model (the protocol layer tokenised them), only for one."""
    if manifest.text is None or not isinstance(data, TextRows):
        want = "texts (BYTES)" if manifest.text is not None else "a numeric tensor"
        raise BadRequest(f"inputs[0]: model '{manifest.name}' takes {want}")
    if not 1 <= len(data) <= max_rows:
        raise BadRequest(f"inputs[0] holds {len(data)} samples; 1 to {max_rows} per request")
    return data
