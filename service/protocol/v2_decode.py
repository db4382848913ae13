"""Decoding a v2 infer request body (JSON, or JSON header + binary tensors) on the hot path.

The body is parsed once with orjson and the tensor data goes straight into numpy; no
pydantic model walks the arrays.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from models.manifest import Manifest, TextInput
from service.errors import BadRequest
from service.protocol.json_body import check_json_size, load_object, show
from service.protocol.json_data import from_json, has_boolean_literal
from service.protocol.outputs import OutputRequest, parse_outputs
from service.protocol.parameters import parse_parameters
from service.protocol.tensors import F32, check_shape, from_binary
from service.protocol.text_input import (
    Texts,
    check_text_datatype,
    check_text_shape,
    json_values_per_sample,
    texts_from_binary,
    texts_from_json,
)
from service.protocol.v2_heads import Head, HeadCache
from service.text import TextInputError, TextRows, Tokens
from service.types import InferenceInput, PolicyOverride

HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_ID = 256  # ids are echoed in responses and messages; keep them short
_BYTE_COUNT = re.compile(r"[0-9]{1,12}")  # not int(): it takes "1_234", " 12", "+12", "١٢"
HEADS = HeadCache()  # binary-tensor heads already checked (service/protocol/v2_heads.py)


@dataclass(frozen=True)
class DecodedInfer:
    """A checked request: what the data plane runs and how the answer is to be encoded."""

    request: InferenceInput
    request_id: str | None
    outputs: tuple[OutputRequest, ...]


def decode_infer(
    body: bytes,
    header_length: str | None,
    manifest: Manifest,
    max_samples: int,
    tokens: Tokens | None = None,
) -> DecodedInfer:
    """Parse and check a v2 infer request against the model's input spec (a text model's
    texts are tokenised here, by `tokens`, off the event loop for large bodies)."""
    head, tail = split_body(body, header_length)
    known = None if manifest.text is not None else HEADS.get(head, manifest, max_samples)
    if known is not None:
        return _from_known(known, tail)
    sample_values = (
        math.prod(manifest.input.shape)
        if manifest.text is None
        else json_values_per_sample(manifest.text)
    )
    check_json_size(len(head), sample_values, max_samples, "the request's JSON")
    doc = load_object(head, "request JSON")
    request_id = doc.get("id")
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > MAX_ID):
        raise BadRequest(f"id: must be a string of at most {MAX_ID} characters")
    options = parse_parameters(doc.get("parameters"))
    data: F32 | TextRows
    if manifest.text is None:
        booleans = has_boolean_literal(body, len(head))
        data = _input(doc.get("inputs"), tail, manifest, max_samples, booleans)
    else:
        data = _text_input(doc.get("inputs"), tail, manifest.text, max_samples, tokens)
    outputs = parse_outputs(doc.get("outputs"), options.binary_output)
    request = InferenceInput(
        manifest.name, manifest.version, data, options.policy, request_id or ""
    )
    if manifest.text is None and len(tail):  # checked: the same head again skips to the tail
        HEADS.put(head, _head(doc, manifest, request_id, options.policy, outputs), max_samples)
    return DecodedInfer(request, request_id, outputs)


def _from_known(known: Head, tail: memoryview) -> DecodedInfer:
    """A request whose head was checked before: only its tail is new."""
    _tail_holds(tail, known.size, "inputs[0]")
    data = known.tensor(tail[: known.size], "inputs[0]")
    return DecodedInfer(known.request(data), known.request_id, known.outputs)


def _head(
    doc: dict[str, Any],
    manifest: Manifest,
    request_id: str | None,
    policy: PolicyOverride,
    outputs: tuple[OutputRequest, ...],
) -> Head:
    """What a binary-tensor head that passed every check said."""
    given = doc["inputs"][0]
    size = given["parameters"]["binary_data_size"]
    return Head(manifest, request_id, policy, outputs, given["shape"], given["datatype"], size)


def split_body(body: bytes, header_length: str | None) -> tuple[memoryview, memoryview]:
    """The JSON header and the binary tail, split where the request header says."""
    view = memoryview(body)
    if header_length is None:
        return view, view[len(view) :]
    n = int(header_length) if _BYTE_COUNT.fullmatch(header_length) else -1
    if not 0 < n <= len(body):
        raise BadRequest(
            f"{HEADER_LENGTH}: must be the JSON header's byte count, between "
            f"1 and the body's {len(body)}, got {show(header_length)}"
        )
    return view[:n], view[n:]


def _input(
    raw: object, tail: memoryview, manifest: Manifest, max_samples: int, booleans: bool
) -> F32:
    """The one input tensor, from JSON `data` or from the binary tail (which it must fill)."""
    spec = manifest.input
    tensor, field = _one_tensor(raw, spec.name), "inputs[0]"
    shape = check_shape(tensor.get("shape"), spec, f"{field}.shape", max_samples)
    datatype = tensor.get("datatype")
    size = _binary_size(tensor, field)
    if size is None:
        _no_stray_bytes(tail, 0)
        if "data" not in tensor:
            raise BadRequest(f"{field}.data: missing; send data or parameters.binary_data_size")
        return from_json(tensor["data"], datatype, shape, field, booleans)
    _check_binary_size(tensor, tail, size, field)
    return from_binary(tail[:size], datatype, shape, field)


def _one_tensor(raw: object, name: str) -> dict[str, Any]:
    """inputs[0], the model's one input, by name."""
    if not isinstance(raw, list) or len(raw) != 1:
        raise BadRequest(f"inputs: must be a list holding one tensor named {name!r}")
    tensor, field = raw[0], "inputs[0]"
    if not isinstance(tensor, dict):
        raise BadRequest(f"{field}: must be an object with name, shape, datatype and data")
    if tensor.get("name") != name:
        raise BadRequest(
            f"{field}.name: this model's input is {name!r}, got {show(tensor.get('name'))}"
        )
    return tensor


def _check_binary_size(tensor: dict[str, Any], tail: memoryview, size: int, field: str) -> None:
    """Binary data declared: no JSON data beside it, and the tail holds exactly that."""
    if "data" in tensor:
        raise BadRequest(f"{field}: send either data or parameters.binary_data_size, not both")
    _tail_holds(tail, size, field)


def _tail_holds(tail: memoryview, size: int, field: str) -> None:
    """The binary tail is exactly the `size` bytes the head declared."""
    if size > len(tail):
        raise BadRequest(
            f"{field}.parameters.binary_data_size: {size} bytes declared, but only "
            f"{len(tail)} follow the JSON header (see {HEADER_LENGTH})"
        )
    _no_stray_bytes(tail, size)


def _text_input(
    raw: object, tail: memoryview, spec: TextInput, max_samples: int, tokens: Tokens | None
) -> TextRows:
    """The texts, from JSON strings or length-prefixed binary elements, tokenised."""
    if tokens is None:
        raise ValueError("a text model's request needs its version's tokeniser")
    tensor = _one_tensor(raw, spec.input_name)
    field = "inputs[0]"
    count = check_text_shape(tensor.get("shape"), spec, f"{field}.shape", max_samples)
    check_text_datatype(tensor.get("datatype"), field)
    size = _binary_size(tensor, field)
    texts: Texts
    if size is None:
        _no_stray_bytes(tail, 0)
        texts = texts_from_json(tensor.get("data"), count, field)
    else:
        _check_binary_size(tensor, tail, size, field)
        texts = texts_from_binary(tail[:size], count, field)
    try:
        return tokens.encode(texts)
    except TextInputError as exc:
        raise BadRequest(str(exc)) from None


def _binary_size(tensor: dict[str, Any], field: str) -> int | None:
    params = tensor.get("parameters")
    if params is None:
        return None
    if not isinstance(params, dict):
        raise BadRequest(f"{field}.parameters: must be a JSON object")
    size = params.get("binary_data_size")
    if size is not None and (type(size) is not int or size < 0):
        raise BadRequest(f"{field}.parameters.binary_data_size: must be a byte count")
    return size


def _no_stray_bytes(tail: memoryview, used: int) -> None:
    if len(tail) != used:
        raise BadRequest(
            f"{HEADER_LENGTH}: {len(tail)} bytes follow the JSON header, but the "
            f"inputs declare {used} bytes of binary data"
        )
