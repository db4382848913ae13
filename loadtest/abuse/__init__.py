"""What hostile or careless clients do to a real server: the checks' registry and types.

`python -m loadtest.abuse` (loadtest/abuse/cli.py) starts `exitserve serve` on the bundled
models, runs every registered check against it and prints (or writes into a document
between markers) one markdown table.

To add a check, write `def my_check(target: Target) -> list[Row]` in a module of this
package, decorate it with `@check("name")` and import the module in cli.py: the order of
registration is the order of the table. Checks share the server, so a check should leave
it idle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from loadtest.server import LiveServer


@dataclass(frozen=True)
class Options:
    connections: int  # slowloris connections
    wait_s: float  # how long slowloris connections are given before counting
    header_mib: int  # size of the huge streamed header
    requests: int  # normal requests per latency sample
    model: str
    body_mib: int  # size of the refused bodies of the memory check
    bodies: int  # refused bodies per round (sequential, then concurrent) and aborted uploads
    rounds: int  # rounds of `bodies` concurrent refused bodies


@dataclass(frozen=True)
class Target:
    server: LiveServer
    host: str
    port: int
    options: Options


@dataclass(frozen=True)
class Row:
    check: str
    measure: str
    value: str


Check = Callable[[Target], list[Row]]
CHECKS: dict[str, Check] = {}


def check(name: str) -> Callable[[Check], Check]:
    """Register a check under `name` (the order of registration is the order of the table)."""

    def register(fn: Check) -> Check:
        CHECKS[name] = fn
        return fn

    return register
