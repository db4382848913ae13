"""A v2 tensor's JSON `data` as FP32: numbers only, counted before conversion, in range.

numpy converts whatever it is given: the string "0.5" and `true` become numbers, and a
JSON integer past INT64's range passes a check made in float64. So strings, null and
booleans are refused by type, and integer data is converted to its own datatype, which
refuses what does not fit.
"""

from __future__ import annotations

import math
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt

from service.errors import BadRequest
from service.protocol.datatypes import numpy_dtype
from service.protocol.tensors import F32

NUMBERS = frozenset({int, float})
# What a client sent instead of a number, in its own (JSON) words.
_JSON_NAMES = {str: "strings", bool: "true/false", type(None): "null", dict: "objects"}
_FP16_MAX = float(np.finfo(np.float16).max)


def from_json(
    data: Any, datatype: object, shape: list[int], field: str, may_hold_booleans: bool = True
) -> F32:
    """JSON numbers, flat or nested, as FP32 in `shape`; a 400 naming `field` otherwise.

    `may_hold_booleans`: whether the JSON text has a `true` or `false` anywhere (see numbers).
    """
    dtype = numpy_dtype(datatype, f"{field}.datatype")
    where = f"{field}.data"
    rows = _counted_rows(data, shape, where)
    if dtype.kind == "f":
        arr = numbers(data, where, may_hold_booleans, rows)
        if dtype.itemsize < 4 and arr.size and float(np.abs(arr).max()) > _FP16_MAX:
            raise BadRequest(f"{where}: values outside the {datatype} range")
    else:
        arr = _integers(data, _kinds(rows, where), dtype, where)
    with np.errstate(over="ignore"):  # past FP32: inf, refused by the data plane
        return arr.astype(np.float32).reshape(shape)


def numbers(
    data: Any, where: str, may_hold_booleans: bool, rows: list[Any] | None = None
) -> npt.NDArray[Any]:
    """`data` as a numeric array, refusing strings, null and booleans.

    numpy's own dtype discovery (cheaper than converting straight to FP32) gives away
    strings, null and booleans alone; a boolean among numbers only a look at every item
    finds, made only when the JSON text holds a `true` or `false` at all.
    """
    arr = _convert(data, None, where)
    if arr.dtype.kind in "fiu" and not may_hold_booleans:
        return arr
    _kinds(rows if rows is not None else _innermost(data, where), where)
    return arr if arr.dtype.kind in "fiu" else _convert(data, np.dtype(np.float64), where)


def has_boolean_literal(text: bytes, end: int) -> bool:
    """Whether the JSON in `text[:end]` may hold a boolean (a fast byte search)."""
    return text.find(b"true", 0, end) >= 0 or text.find(b"false", 0, end) >= 0


def _counted_rows(data: Any, shape: list[int], where: str) -> list[Any]:
    """The innermost lists, once their values' count fits `shape` (before any conversion)."""
    if not isinstance(data, list):
        raise BadRequest(f"{where}: must be a list of numbers, flat or nested")
    rows = _innermost(data, where)
    need, count = math.prod(shape), sum(map(len, rows))
    if count != need:
        raise BadRequest(f"{where}: {count} values, but shape {shape} needs {need}")
    return rows


def _innermost(data: list[Any], where: str) -> list[Any]:
    """The lists that hold the numbers, as deep as the first row nests (few: one per row)."""
    rows: Any = (data,)
    probe = data
    while probe and isinstance(probe[0], list):
        rows, probe = chain.from_iterable(rows), probe[0]
    try:
        found = list(rows)
    except TypeError:  # a number where the first row has a list
        found = [None]
    if set(map(type, found)) != {list}:
        raise BadRequest(f"{where}: rows must be nested lists of equal depth")
    return found


def _kinds(rows: list[Any], where: str) -> set[type]:
    kinds = set(map(type, chain.from_iterable(rows)))
    if not kinds <= NUMBERS:
        found = sorted(_JSON_NAMES.get(k, "nested lists of unequal depth") for k in kinds - NUMBERS)
        raise BadRequest(f"{where}: must hold numbers only, found {', '.join(found)}")
    return kinds


def _integers(data: Any, kinds: set[type], dtype: np.dtype[Any], where: str) -> npt.NDArray[Any]:
    """Integer data: whole numbers within `dtype`'s range, exactly (not via float64)."""
    if float not in kinds:
        try:
            return _convert(data, dtype, where)
        except OverflowError:
            raise BadRequest(f"{where}: values outside the {dtype.name} range") from None
    arr = _convert(data, np.dtype(np.float64), where)
    if not (arr == np.round(arr)).all():
        raise BadRequest(f"{where}: {dtype.name} data must be whole numbers")
    if arr.size and not _within(float(arr.min()), float(arr.max()), dtype):
        raise BadRequest(f"{where}: values outside the {dtype.name} range")
    return arr


def _within(low: float, high: float, dtype: np.dtype[Any]) -> bool:
    """Whether [low, high] fits `dtype`, judged on float64 values (powers of two are exact).

    A 64-bit type's lower bound is exclusive too: JSON integers beyond 64 bits reach us as
    floats, and -2**63 - 1 parses to the float -2**63.
    """
    bits = 8 * dtype.itemsize
    if dtype.kind == "u":
        return low >= 0.0 and high < 2.0**bits
    bound = 2.0 ** (bits - 1)
    return (low > -bound if bits == 64 else low >= -bound) and high < bound


def _convert(data: Any, dtype: np.dtype[Any] | None, where: str) -> npt.NDArray[Any]:
    try:
        return np.asarray(data, dtype=dtype)
    except ValueError:
        raise BadRequest(
            f"{where}: must be numbers, as a flat list or nested lists of equal length"
        ) from None
