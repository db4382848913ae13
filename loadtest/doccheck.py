"""Every number in a generated section of docs/benchmarks.md must be a value of its json.

A number in the document is accepted when some numeric value in the json, printed with
the same number of decimals, reads the same, or when it appears as a number inside one
of the json's strings (the date, the command line, the CPU's name). Anything else was
typed by hand or computed outside the json, and is reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")
GENERATED = re.compile(r"<!-- generated:begin -->(.*?)<!-- generated:end -->", re.S)


def _leaves(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for v in node.values():
            yield from _leaves(v)
    elif isinstance(node, list):
        for v in node:
            yield from _leaves(v)
    else:
        yield node


def _known(doc: Any) -> tuple[list[float], set[str]]:
    numbers, in_strings = [], set()
    for leaf in _leaves(doc):
        if isinstance(leaf, bool) or leaf is None:
            continue
        if isinstance(leaf, int | float):
            numbers.append(float(leaf))
        elif isinstance(leaf, str):
            in_strings.update(NUMBER.findall(leaf))
    return numbers, in_strings


def generated_sections(markdown: str) -> list[str]:
    return GENERATED.findall(markdown)


def stray_numbers(markdown: str, doc: Any) -> list[str]:
    """Numbers in the generated sections that the json does not hold."""
    numbers, in_strings = _known(doc)
    printed: dict[int, set[str]] = {}
    stray = []
    for section in generated_sections(markdown):
        for token in NUMBER.findall(section):
            if token in in_strings:
                continue
            decimals = len(token.split(".", 1)[1]) if "." in token else 0
            if decimals not in printed:
                printed[decimals] = {f"{v:.{decimals}f}" for v in numbers}
            if token not in printed[decimals]:
                stray.append(token)
    return stray
