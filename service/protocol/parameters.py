"""Request `parameters`: the exit-policy overrides, type-checked, each error naming its key.

Only types are checked here; ranges that depend on the model and policy (max_exit against
the number of exits, a threshold's bounds) are the data plane's, which names the key too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast, get_args

from service.errors import BadRequest
from service.types import PolicyKind, PolicyOverride

POLICIES: tuple[str, ...] = get_args(PolicyKind)
# Triton clients may send these; they do not change what this server does.
IGNORED = frozenset({"priority", "timeout"})
KNOWN = frozenset({"policy", "threshold", "patience", "max_exit", "full_depth"})
BINARY_OUTPUT = "binary_data_output"


@dataclass(frozen=True)
class RequestOptions:
    """What a request's parameters ask for: a policy override and the output encoding."""

    policy: PolicyOverride
    binary_output: bool


def parse_parameters(raw: object, where: str = "parameters") -> RequestOptions:
    """Check every key of a request's `parameters` object and build the policy override."""
    if raw is None:
        return RequestOptions(PolicyOverride(), False)
    if not isinstance(raw, dict):
        raise BadRequest(f"{where}: must be a JSON object")
    unknown = sorted(set(raw) - KNOWN - IGNORED - {BINARY_OUTPUT})
    if unknown:
        expected = sorted(KNOWN | {BINARY_OUTPUT})
        raise BadRequest(f"{where}.{unknown[0]}: unknown parameter; expected some of {expected}")
    policy = PolicyOverride(
        policy=_policy(raw.get("policy"), f"{where}.policy"),
        threshold=_threshold(raw.get("threshold"), f"{where}.threshold"),
        patience=_integer(raw.get("patience"), f"{where}.patience"),
        max_exit=_integer(raw.get("max_exit"), f"{where}.max_exit"),
        full_depth=_boolean(raw.get("full_depth"), f"{where}.full_depth"),
    )
    return RequestOptions(policy, _boolean(raw.get(BINARY_OUTPUT), f"{where}.{BINARY_OUTPUT}"))


def _policy(value: Any, field: str) -> PolicyKind | None:
    if value is None:
        return None
    if value not in POLICIES:
        raise BadRequest(f"{field}: must be one of {list(POLICIES)}")
    return cast(PolicyKind, value)


def _threshold(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"{field}: must be a finite number")
    return float(value)


def _integer(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{field}: must be an integer")
    return value


def _boolean(value: Any, field: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"{field}: must be true or false")
    return value
