"""Reading PromQL out of the dashboard and the rules, and taking it apart just enough to test it.

Prometheus 2.42 has no parse API, so the splitting here is lexical: it respects strings,
brackets and operator precedence (set operators bind loosest, then comparisons), which is
all the shapes our dashboard and rules use need.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from service.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "exitserve.json"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
RULES_TEST = REPO / "tests" / "observability" / "rules_test.yml"

# Series Prometheus makes itself for every target.
SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
TARGET_LABELS = frozenset({"instance", "job"})
MODIFIERS = ("by", "without", "on", "ignoring", "group_left", "group_right")
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", *MODIFIERS})
SET_OPERATORS = ("and", "or", "unless")
COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_NAME = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*")
_MODIFIER_LIST = re.compile(r"\b(" + "|".join(MODIFIERS) + r")\s*\(([^()]*)\)")
_NUMERIC = re.compile(r"^[\d.eE+\-*/()\s]+$")
_CLOSE = {"(": ")", "[": "]", "{": "}"}


@dataclass(frozen=True)
class Target:
    """One query of one dashboard panel."""

    panel: str
    ref_id: str
    expr: str
    unit: str
    legend: str


@dataclass(frozen=True)
class Rule:
    """One recording or alerting rule."""

    group: str
    name: str
    kind: str  # "record" | "alert"
    expr: str
    labels: Mapping[str, str]


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def dashboard_targets(dashboard: Mapping[str, Any]) -> list[Target]:
    out = []
    for panel in iter_panels(dashboard["panels"]):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "none")
        for t in panel.get("targets", []):
            out.append(
                Target(panel["title"], t["refId"], t["expr"], unit, t.get("legendFormat", ""))
            )
    return out


def load_rules(path: Path = RULES) -> list[Rule]:
    doc = yaml.safe_load(path.read_text())
    out = []
    for group in doc["groups"]:
        for r in group["rules"]:
            kind = "record" if "record" in r else "alert"
            out.append(Rule(group["name"], r[kind], kind, r["expr"], r.get("labels", {})))
    return out


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Grafana's `$name`, `${name}` and `[[name]]` forms replaced; none may be left over."""

    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in variables:
            raise KeyError(f"no value for dashboard variable ${name} in {expr!r}")
        return variables[name]

    out = re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", value, expr)
    return out


def label_values(query: str) -> tuple[str, str]:
    """`label_values(selector, label)` of a Grafana variable as (selector, label)."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query, flags=re.S)
    if m is None:
        raise ValueError(f"not a label_values() query: {query!r}")
    return m.group(1), m.group(2)


def _blank_strings(expr: str) -> str:
    """The expression with string contents replaced by spaces (offsets kept)."""
    out = list(expr)
    i = 0
    while i < len(expr):
        q = expr[i]
        if q in "\"'`":
            j = i + 1
            while j < len(expr) and expr[j] != q:
                j += 2 if expr[j] == "\\" and q != "`" else 1
            for k in range(i + 1, min(j, len(expr))):
                out[k] = " "
            i = j + 1
        else:
            i += 1
    return "".join(out)


def _depths(expr: str) -> list[int]:
    """Bracket depth at each character (strings blanked first)."""
    plain = _blank_strings(expr)
    depth, out = 0, []
    for ch in plain:
        if ch in _CLOSE:
            out.append(depth)
            depth += 1
        elif ch in _CLOSE.values():
            depth -= 1
            out.append(depth)
        else:
            out.append(depth)
    if depth != 0:
        raise ValueError(f"unbalanced brackets in {expr!r}")
    return out


def strip_parens(expr: str) -> str:
    expr = expr.strip()
    while expr.startswith("("):
        depths = _depths(expr)
        # the opening bracket closes at the last character only if depth never returns to 0
        if all(d > 0 for d in depths[1:-1]):
            expr = expr[1:-1].strip()
        else:
            break
    return expr


def _drop_leading_modifiers(expr: str) -> str:
    """`on (a) group_left (b) rest` -> `rest` (what follows a binary operator)."""
    expr = expr.strip()
    while True:
        m = re.match(r"(bool\b|(?:on|ignoring|group_left|group_right)\s*\([^()]*\))\s*", expr)
        if m is None:
            return expr
        expr = expr[m.end() :]


def _split_top(expr: str, operators: tuple[str, ...]) -> list[str]:
    """Operands of the top-level (depth 0) `operators`, left to right."""
    depths = _depths(expr)
    plain = _blank_strings(expr)
    word = r"\b(" + "|".join(operators) + r")\b"
    symbol = "(" + "|".join(re.escape(o) for o in operators) + ")"
    pattern = re.compile(word if operators[0].isalpha() else symbol)
    parts, start = [], 0
    for m in pattern.finditer(plain):
        if depths[m.start()] != 0:
            continue
        # `=~`/`!~` live inside braces; `=` alone is never a PromQL binary operator
        parts.append(expr[start : m.start()])
        start = m.end()
    parts.append(expr[start:])
    return [_drop_leading_modifiers(p) for p in parts]


def signals(expr: str) -> list[str]:
    """The expressions an alert compares against its thresholds.

    `a > 0.05 and on (m) b > 0.1` gives [a, b]; a comparison between two vectors keeps both
    sides. A non-firing alert returns nothing, but its signals must still return data.
    """
    e = strip_parens(expr)
    operands = _split_top(e, SET_OPERATORS)
    if len(operands) > 1:
        return [s for operand in operands for s in signals(operand)]
    sides = _split_top(e, COMPARISONS)
    if len(sides) == 1:
        return [e]
    lhs, rhs = sides[0], "".join(sides[1:])
    if len(sides) > 2:
        raise ValueError(f"chained comparisons are not supported: {expr!r}")
    if _NUMERIC.match(rhs):
        return signals(lhs)
    if _NUMERIC.match(lhs):
        return signals(rhs)
    return signals(lhs) + signals(rhs)


def metric_names(expr: str) -> set[str]:
    """Metric (or recorded series) names the expression selects."""
    plain = _blank_strings(expr)
    plain = re.sub(r"\{[^{}]*\}", "{}", plain)
    plain = re.sub(r"\[[^\[\]]*\]", "[]", plain)
    plain = _MODIFIER_LIST.sub(" ", plain)
    plain = re.sub(r"\boffset\s+\S+", " ", plain)
    names: set[str] = set()
    for m in _NAME.finditer(plain):
        name = m.group(0)
        rest = plain[m.end() :].lstrip()
        if name.lower() in KEYWORDS or rest.startswith("("):
            continue
        names.add(name)
    return names


def label_names(expr: str) -> set[str]:
    """Label names the expression matches on or groups by."""
    plain = _blank_strings(expr)
    out: set[str] = set()
    for m in _MODIFIER_LIST.finditer(plain):
        out.update(x.strip() for x in m.group(2).split(",") if x.strip())
    for m in re.finditer(r"\{([^{}]*)\}", plain):
        out.update(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", m.group(1)))
    out.discard("__name__")
    return out


def exported_series() -> dict[str, set[str]]:
    """Every sample name service/metrics.py can export, with its label names.

    prometheus_client appends `_total` to counters and `_bucket/_sum/_count` to
    histograms (plus `_created` for both).
    """
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    out: dict[str, set[str]] = {}
    for attr in vars(metrics).values():
        if not hasattr(attr, "_labelnames"):
            continue
        labels = set(attr._labelnames) | TARGET_LABELS
        name, kind = attr._name, attr._type
        suffixes = {
            "counter": ["_total", "_created"],
            "histogram": ["_bucket", "_sum", "_count", "_created"],
            "gauge": [""],
        }[kind]
        for suffix in suffixes:
            out[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out
