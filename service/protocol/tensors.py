"""Turning one v2 input tensor (JSON `data` or a slice of the binary tail) into FP32 samples.

Every check names the field it is about, because a client fixing a request needs to know
which of its tensors, and which key of it, is wrong.
"""

from __future__ import annotations

import math
from typing import Any

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


def from_json(data: Any, datatype: object, shape: list[int], field: str) -> F32:
    """JSON numbers, flat or nested, as FP32 in `shape`; integer types must hold integers."""
    dtype = numpy_dtype(datatype, f"{field}.datatype")
    wide = dtype.kind != "f"
    try:
        arr = np.asarray(data, dtype=np.float64 if wide else np.float32)
    except (ValueError, TypeError):
        raise BadRequest(
            f"{field}.data: must be numbers, as a flat list or nested lists of equal length"
        ) from None
    _check_count(arr.size, shape, f"{field}.data")
    if wide:
        _check_integers(arr, dtype, f"{field}.data")
    return finite(arr.astype(np.float32, copy=False).reshape(shape), f"{field}.data")


def from_binary(raw: memoryview, datatype: object, shape: list[int], field: str) -> F32:
    """Little-endian bytes of `datatype` as FP32 in `shape`; the byte count must fit exactly."""
    dtype = numpy_dtype(datatype, f"{field}.datatype")
    need = math.prod(shape) * dtype.itemsize
    if len(raw) != need:
        raise BadRequest(
            f"{field}.parameters.binary_data_size: {len(raw)} bytes, but shape "
            f"{shape} of {datatype} needs {need}"
        )
    arr = np.frombuffer(raw, dtype=dtype).astype(np.float32).reshape(shape)
    return finite(arr, f"{field} (binary data)")


def finite(arr: F32, field: str) -> F32:
    """NaN and infinity (and JSON null) are no pixel values; refuse them by field."""
    if not np.isfinite(arr).all():
        raise BadRequest(f"{field}: contains NaN, infinity, null or a value beyond FP32 range")
    return arr


def _check_count(count: int, shape: list[int], field: str) -> None:
    need = math.prod(shape)
    if count != need:
        raise BadRequest(f"{field}: {count} values, but shape {shape} needs {need}")


def _check_integers(arr: npt.NDArray[Any], dtype: np.dtype[Any], field: str) -> None:
    info = np.iinfo(dtype)
    if not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
        raise BadRequest(f"{field}: {dtype.name} data must be whole numbers")
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise BadRequest(f"{field}: values outside the {dtype.name} range")
