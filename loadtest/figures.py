"""One benchmark run's measurements, folded into the machine-readable docs/benchmarks.json.

Everything the document says comes from the dictionary built here: per-round values, their
median and range, ratios taken round by round (interleaved rounds pair up), and the
targets with their thresholds. The markdown is rendered from this dictionary only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loadtest.report import Report

SCHEMA = "exitserve-bench/2"
Json = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """An acceptance target: `key` names the figure in json['derived'], compared to `limit`."""

    key: str
    text: str
    limit: float
    at_least: bool


TARGETS = (
    Target("ee_vs_fd_1", "early exit / full depth throughput, one sample per request", 3.5, True),
    Target("accuracy_loss_pp", "accuracy loss on the same images (pp)", 0.5, False),
    Target("c1_p50_over_inprocess_ms", "p50 at concurrency 1 minus in-process (ms)", 0.25, False),
    Target("server_vs_loop_32_pct", "server / serving-loop ceiling, 32 per request (%)", 90, True),
    Target(
        "fidelity_min_shift_agreement_pct",
        "fidelity: worst shift's agreement with full depth, last 1000 samples (%)",
        98.5,
        True,
    ),
    Target(
        "fidelity_clean_saving_kept_pct", "fidelity: clean-data compute saving kept (%)", 90, True
    ),
    Target(
        "fidelity_recovery_samples", "fidelity: samples until the savings are back", 5000, False
    ),
    Target("fidelity_shadow_cost_pct_1", "fidelity: shadow cost at saturation (%)", 10, False),
    Target("text_ee_vs_fd_1", "text: early exit / full depth, one sentence per request", 1.6, True),
)


@dataclass
class Row:
    """One configuration of one table: how it was driven, and a Report per round."""

    name: str
    client: str
    concurrency: int
    per_request: int
    reports: list[Report] = field(default_factory=list)


@dataclass
class Results:
    """Everything one `make bench` run measured, before it is folded into json."""

    run: Json
    machine: Json
    tables: dict[str, list[Row]] = field(default_factory=dict)
    scalars: dict[str, list[float]] = field(default_factory=dict)
    accuracy: Json = field(default_factory=dict)
    extra: Json = field(default_factory=dict)  # derived figures a comparison adds itself
    notes: list[str] = field(default_factory=list)

    def row(self, table: str, name: str) -> Row:
        for row in self.tables.get(table, []):
            if row.name == name:
                return row
        raise KeyError(f"no row {name!r} in table {table!r}")

    def add(self, table: str, row: Row) -> Row:
        self.tables.setdefault(table, []).append(row)
        return row


def spread(values: Sequence[float]) -> Json | None:
    """Median and range over rounds, with every round's value; None when nothing is finite."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "rounds": vals,
    }


def pooled_exits(reports: Sequence[Report]) -> list[float]:
    """The exit distribution over every round, each round weighted by the samples it answered."""
    width = max((len(r.exit_distribution) for r in reports), default=0)
    total = [0.0] * width
    for r in reports:
        weight = r.samples_per_s * r.elapsed_s
        for k, share in enumerate(r.exit_distribution):
            total[k] += share * weight
    mass = sum(total)
    return [t / mass for t in total] if mass else []


def row_json(row: Row) -> Json:
    reps = row.reports

    def col(key: str, scale: float = 1.0) -> Json | None:
        return spread([float(getattr(r, key)) * scale for r in reps])

    return {
        "name": row.name,
        "client": row.client,
        "concurrency": row.concurrency,
        "samples_per_request": row.per_request,
        "rounds": len(reps),
        "samples_per_s": col("samples_per_s"),
        "requests_per_s": col("requests_per_s"),
        "p50_ms": col("p50_ms"),
        "p99_ms": col("p99_ms"),
        "client_cpu_pct": col("client_cpu", 100.0),
        "server_cpu_pct": col("server_cpu", 100.0),
        "machine_cpu_pct": col("machine_cpu", 100.0),
        "accuracy": col("accuracy"),
        "exit_distribution": pooled_exits(reps),
        "errors": sum(sum(r.errors.values()) for r in reps),
    }


def per_round(a: Sequence[float], b: Sequence[float], op: str) -> Json | None:
    """a/b (or a-b) round by round: interleaved rounds share the machine's drift."""
    pairs = list(zip(a, b, strict=False))
    if op == "ratio":
        return spread([x / y for x, y in pairs if y])
    return spread([x - y for x, y in pairs])


def _rate(res: Results, table: str, name: str, key: str = "samples_per_s") -> list[float]:
    try:
        return [float(getattr(r, key)) for r in res.row(table, name).reports]
    except KeyError:
        return []


def derived(res: Results, names: dict[str, tuple[str, str]]) -> Json:
    """The ratios and differences the targets and the prose use, each with its spread.

    `names` maps a role (ee1, fd1, ee32, fd32, c1, c1_python, c1_no_inline) to (table, row).
    """

    def get(role: str, key: str = "samples_per_s") -> list[float]:
        return _rate(res, *names[role], key) if role in names else []

    sc = res.scalars
    out: Json = {
        "ee_vs_fd_1": per_round(get("ee1"), get("fd1"), "ratio"),
        "ee_vs_fd_32": per_round(get("ee32"), get("fd32"), "ratio"),
        "inprocess_ee_vs_fd": per_round(sc.get("inproc_ee", []), sc.get("inproc_fd", []), "ratio"),
        "c1_p50_over_inprocess_ms": per_round(
            get("c1", "p50_ms"), sc.get("inproc_single_ms", []), "diff"
        ),
        "python_vs_wrk_1": per_round(get("ee1_python"), get("ee1"), "ratio"),
    }
    for per in ("1", "32"):
        ratio = per_round(get(f"ee{per}"), sc.get(f"loop_ee_{per}", []), "ratio")
        out[f"server_vs_loop_{per}_pct"] = _scaled(ratio, 100.0)
    cores = float(res.machine.get("cores", 1))
    pairs = zip(get("ee1", "server_cpu"), get("ee1", "requests_per_s"), strict=True)
    cpu_ms = [s * cores / q * 1000 for s, q in pairs if q]
    out["server_cpu_ms_per_request_1"] = spread(cpu_ms)
    out["accuracy_loss_pp"] = res.accuracy.get("loss_pp")
    return out


def _scaled(s: Json | None, k: float) -> Json | None:
    return None if s is None else spread([v * k for v in s["rounds"]])


def fmt(fig: Any, spec: str = ".0f", unit: str = "") -> str:
    """A spread as `median (min–max)`, a number as itself, a missing figure as n/a."""
    if fig is None:
        return "n/a"
    if isinstance(fig, dict) and fig["min"] == fig["max"]:
        return f"{fig['median']:{spec}}{unit}"
    if isinstance(fig, dict):
        lo, hi = format(fig["min"], spec), format(fig["max"], spec)
        return f"{fig['median']:{spec}}{unit} ({lo}–{hi})"
    return f"{fig:{spec}}{unit}"


def value(fig: Json | float | None) -> float | None:
    """A figure's headline: a spread's median, or the number itself."""
    if isinstance(fig, dict):
        return float(fig["median"])
    return None if fig is None else float(fig)


def targets(d: Json) -> list[Json]:
    out = []
    for t in TARGETS:
        got = value(d.get(t.key))
        met = None if got is None else (got >= t.limit if t.at_least else got <= t.limit)
        out.append({"key": t.key, "text": t.text, "limit": t.limit, "measured": got, "met": met})
    return out


def to_json(res: Results, names: dict[str, tuple[str, str]], gpu: Json | None) -> Json:
    """The whole run as one dictionary: docs/benchmarks.json."""
    d = {**derived(res, names), **res.extra}
    doc: Json = finite(
        {
            "schema": SCHEMA,
            "run": res.run,
            "machine": res.machine,
            "tables": {t: [row_json(r) for r in rows] for t, rows in res.tables.items()},
            "scalars": {k: spread(v) for k, v in res.scalars.items()},
            "accuracy": res.accuracy,
            "derived": d,
            "targets": targets(d),
            "notes": res.notes,
            "gpu": gpu,
        }
    )
    return doc


def finite(node: Any) -> Any:
    """The same structure with NaN and infinities as None: strict JSON, and no 'nan' in prose."""
    if isinstance(node, dict):
        return {k: finite(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [finite(v) for v in node]
    if isinstance(node, float) and not math.isfinite(node):
        return None
    return node
