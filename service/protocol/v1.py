"""The friendly v1 endpoint's codec: `{"instances": [...]}` in, `{"predictions": [...]}` out.

An instance is one sample shaped like the model input, nested or flat. Exit-policy
overrides go in an optional `parameters` object, as in v2.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from models.manifest import Manifest
from service.errors import BadRequest
from service.protocol.json_body import check_json_size, load_object
from service.protocol.json_data import has_boolean_literal, numbers
from service.protocol.parameters import parse_parameters
from service.protocol.text_input import json_values_per_sample, texts_from_instances
from service.text import TextInputError, TextRows, Tokens
from service.types import InferenceInput, InferenceResult


def decode_predict(
    body: bytes, manifest: Manifest, max_samples: int, tokens: Tokens | None = None
) -> InferenceInput:
    """Parse and check a v1 predict request against the model's input spec (a text
    model's instances are its texts, tokenised by `tokens`)."""
    shape = manifest.input.shape
    per_sample = (
        math.prod(shape) if manifest.text is None else json_values_per_sample(manifest.text)
    )
    check_json_size(len(body), per_sample, max_samples, "the request body")
    doc = load_object(body)
    instances = doc.get("instances")
    if not isinstance(instances, list) or not 1 <= len(instances) <= max_samples:
        raise BadRequest(f"instances: must be a list of 1 to {max_samples} samples")
    options = parse_parameters(doc.get("parameters"))
    if manifest.text is not None:
        texts = _tokenised(texts_from_instances(instances), tokens)
        return InferenceInput(manifest.name, manifest.version, texts, options.policy)
    arr = numbers(instances, "instances", has_boolean_literal(body, len(body)))
    n = len(instances)
    if list(arr.shape[1:]) != shape and arr.shape[1:] != (math.prod(shape),):
        raise BadRequest(
            f"instances: each must have shape {shape} or be "
            f"{math.prod(shape)} flat numbers, got {list(arr.shape[1:])}"
        )
    with np.errstate(over="ignore"):  # past FP32: inf, refused by the data plane
        data = arr.astype(np.float32).reshape(n, *shape)
    return InferenceInput(manifest.name, manifest.version, data, options.policy)


def _tokenised(texts: list[str], tokens: Tokens | None) -> TextRows:
    if tokens is None:
        raise ValueError("a text model's request needs its version's tokeniser")
    try:
        return tokens.encode(texts)
    except TextInputError as exc:
        raise BadRequest(str(exc)) from None


def encode_predict(result: InferenceResult) -> bytes:
    """One prediction per instance, in request order (numpy scalars keep FP32's short form)."""
    predictions: list[dict[str, Any]] = [
        {"label": label, "confidence": conf, "exit": exit_k, "probabilities": p}
        for label, conf, exit_k, p in zip(
            result.label, result.confidence, result.exit_index, result.probabilities, strict=True
        )
    ]
    return orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)
