"""Checking one v2 input tensor's shape, and turning a slice of the binary tail into FP32
samples (JSON `data`: json_data). Finiteness is the data plane's check, made once for
every transport.

Every check names the field it is about, because a client fixing a request needs to know
which of its tensors, and which key of it, is wrong.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from models.manifest import TensorSpec
from service.errors import BadRequest
from service.protocol.datatypes import numpy_dtype
from service.protocol.json_body import show

F32 = npt.NDArray[np.float32]


def check_shape(raw: object, spec: TensorSpec, field: str, max_samples: int) -> list[int]:
    """`[batch, *spec.shape]` with 1 <= batch <= max_samples, else a 400 on `field`."""
    if not isinstance(raw, list) or not all(type(d) is int for d in raw):
        raise BadRequest(f"{field}: must be a list of integers")
    if raw[1:] != spec.shape or not raw:
        raise BadRequest(
            f"{field}: expected [batch, {', '.join(map(str, spec.shape))}] for "
            f"input {spec.name!r}, got {show(raw)}"
        )
    if not 1 <= raw[0] <= max_samples:
        raise BadRequest(f"{field}: batch must be between 1 and {max_samples}, got {raw[0]}")
    return raw


def from_binary(raw: memoryview, datatype: object, shape: list[int], field: str) -> F32:
    """Little-endian bytes of `datatype` as FP32 in `shape`; the byte count must fit exactly."""
    dtype = numpy_dtype(datatype, f"{field}.datatype")
    need = math.prod(shape) * dtype.itemsize
    if len(raw) != need:
        raise BadRequest(
            f"{field}.parameters.binary_data_size: {len(raw)} bytes, but shape "
            f"{shape} of {datatype} needs {need}"
        )
    return np.frombuffer(raw, dtype=dtype).astype(np.float32).reshape(shape)
