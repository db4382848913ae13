"""Which outputs a v2 request asks for, and whether each comes back as JSON or binary."""

from __future__ import annotations

from dataclasses import dataclass

from service.errors import BadRequest
from service.protocol.json_body import show

# The outputs every image model answers with, in the order they are returned by default.
OUTPUT_NAMES = ("label", "probabilities", "confidence", "exit_index")


@dataclass(frozen=True)
class OutputRequest:
    """One requested output: its name and whether its data goes in the binary tail."""

    name: str
    binary: bool


_ALL = {b: tuple(OutputRequest(name, b) for name in OUTPUT_NAMES) for b in (False, True)}


def parse_outputs(raw: object, binary_default: bool) -> tuple[OutputRequest, ...]:
    """The request's `outputs` (all of them when absent or empty), checked one by one."""
    if raw is None or raw == []:
        return _ALL[binary_default]
    if not isinstance(raw, list):
        raise BadRequest('outputs: must be a list of {"name": ...} objects')
    wanted = [_one(item, i, binary_default) for i, item in enumerate(raw)]
    names = [w.name for w in wanted]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise BadRequest(f"outputs[{i}].name: {name!r} is asked for twice")
    return tuple(wanted)


def _one(item: object, i: int, binary_default: bool) -> OutputRequest:
    field = f"outputs[{i}]"
    if not isinstance(item, dict):
        raise BadRequest(f'{field}: must be an object with a "name"')
    name = item.get("name")
    if name not in OUTPUT_NAMES:
        raise BadRequest(
            f"{field}.name: unknown output {show(name)}; expected one of {list(OUTPUT_NAMES)}"
        )
    params = item.get("parameters")
    if params is None:
        return OutputRequest(str(name), binary_default)
    if not isinstance(params, dict):
        raise BadRequest(f"{field}.parameters: must be a JSON object")
    if "classification" in params:
        raise BadRequest(
            f"{field}.parameters.classification: the classification extension "
            "is not supported; ask for 'label' and 'confidence'"
        )
    binary = params.get("binary_data", binary_default)
    if not isinstance(binary, bool):
        raise BadRequest(f"{field}.parameters.binary_data: must be true or false")
    return OutputRequest(str(name), binary)
