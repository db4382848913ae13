"""v2 tensor datatypes: which ones a request may send, and how their bytes are laid out.

The models take FP32. Numeric datatypes are cast to it (FP64 and the wide integers lose
precision only far outside the range image data lives in); BYTES and BOOL carry no
meaningful pixel values and are refused.
"""

from __future__ import annotations

import numpy as np

from service.errors import BadRequest

# v2 datatype -> little-endian numpy dtype, as the binary tensor extension lays them out.
NUMERIC: dict[str, np.dtype[np.generic]] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "FP16": np.dtype("<f2"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
}
REFUSED = frozenset({"BYTES", "BOOL"})

# Output arrays -> v2 datatype names for the response.
OUTPUT_DATATYPES: dict[np.dtype[np.generic], str] = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
}


def numpy_dtype(datatype: object, field: str) -> np.dtype[np.generic]:
    """The dtype for a request's datatype, or the reason it is refused (naming `field`)."""
    if not isinstance(datatype, str):
        raise BadRequest(f'{field}: must be a string such as "FP32"')
    if datatype in REFUSED:
        raise BadRequest(f"{field}: {datatype} is not accepted; send FP32 (or another number type)")
    dtype = NUMERIC.get(datatype)
    if dtype is None:
        raise BadRequest(f"{field}: unknown datatype; expected one of {sorted(NUMERIC)}")
    return dtype
