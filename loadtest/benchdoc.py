"""Render docs/benchmarks.md from the run's json, and nothing else.

The generated part sits between GEN_BEGIN and GEN_END; every number in it is a value of
docs/benchmarks.json (tests/loadtest/test_benchdoc.py checks that). Hand-written, dated
notes live between NOTES markers and the GPU section between its own markers; both are
carried over from the previous document when this run did not produce them.
"""

from __future__ import annotations

import json
from pathlib import Path

from loadtest.benchsentiment import text_section
from loadtest.benchtext import reading
from loadtest.deepdoc import deep_section
from loadtest.fidelitydoc import fidelity_section
from loadtest.figures import Json, fmt, value

GEN_BEGIN, GEN_END = "<!-- generated:begin -->", "<!-- generated:end -->"
NOTES_BEGIN, NOTES_END = "<!-- notes:begin -->", "<!-- notes:end -->"
CPU_KEYS = ("client_cpu_pct", "server_cpu_pct", "machine_cpu_pct")
TABLE_TITLES = {
    "saturation": "Early exit vs full depth at saturation (closed loop)",
    "fixed": "Early exit vs full depth at a fixed moderate load (open loop, Poisson arrivals)",
    "c1": "Concurrency 1",
    "scheduling": "Stage batching vs naive early exit vs no batching (one server per mode)",
    "sweep": "Threshold sweep (confidence threshold on every exit)",
    "peers": "Against what a user would run instead (optional peers, full depth)",
}


def table(rows: list[Json]) -> list[str]:
    lines = [
        "| configuration | client | clients × samples/request | samples/s | p50 ms | p99 ms "
        "| CPU % client / server / machine | accuracy | exit distribution | errors |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in rows:
        exits = ", ".join(f"{s:.3f}" for s in r["exit_distribution"])
        clients = r["concurrency"] or "open loop"
        cpu = " / ".join(fmt(value(r[k])) for k in CPU_KEYS)
        lines.append(
            f"| {r['name']} | {r['client']} | {clients} × {r['samples_per_request']} "
            f"| {fmt(r['samples_per_s'])} | {fmt(r['p50_ms'], '.2f')} "
            f"| {fmt(r['p99_ms'], '.2f')} | {cpu} | {fmt(value(r['accuracy']), '.4f')} "
            f"| [{exits}] | {r['errors']} |"
        )
    return lines


def header(doc: Json) -> list[str]:
    run, m = doc["run"], doc["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items())
    quick = (
        ["**Quick mode**: a smoke run, not figures to cite.", ""] if run["mode"] != "full" else []
    )
    return [
        *quick,
        f"Measured {run['started']} on {m['cpu_model']}, {m['cores']} cores usable "
        f"({m['cores_present']} present), {m['os']}; the server on {run['provider']}; "
        f"Python {m['python']}, {libs}; load from wrk {m['wrk']}. Regenerate with:",
        "",
        "```bash",
        run["command"],
        "```",
        "",
        f"Rounds: {run['rounds']}, of {run['seconds']} s per measurement, configurations "
        "interleaved within each round; figures are medians over rounds with the range "
        "(min–max) in brackets; ratios are taken round by round. CPU %: the client's and the "
        f"server's CPU time over the measurement ÷ wall time ÷ the {m['cores']} cores, and "
        "the whole machine's busy share (every process, other tenants included). "
        "Throughput and latency come from wrk (one thread), which cannot read answers: exit "
        "distributions come from the server's own counters over the same interval, accuracy "
        "from the Python client, which also runs the open-loop load.",
        "",
        *separately(run),
    ]


def separately(run: Json) -> list[str]:
    """Which sections a later run measured on its own (`--only`), when and how."""
    lines = [
        f"- The {name} section: measured {part['started']} with `{part['command']}`."
        for name, part in run.items()
        if isinstance(part, dict) and part.get("command", run["command"]) != run["command"]
    ]
    return ["Sections measured in a separate run, spliced in:", "", *lines, ""] if lines else []


def targets(doc: Json) -> list[str]:
    lines = ["| target | limit | measured | met |", "| --- | ---: | ---: | --- |"]
    for t in doc["targets"]:
        met = {True: "yes", False: "no", None: "not measured"}[t["met"]]
        got = doc["derived"].get(t["key"])
        lines.append(f"| {t['text']} | {t['limit']:g} | {fmt(got, '.2f')} | {met} |")
    return lines


def accuracy(doc: Json) -> list[str]:
    a = doc["accuracy"]
    if not a:
        return ["Not measured in this run."]
    return [
        f"Every one of the same {a['images']} images once, {a['per_request']} per request, "
        f"Python client: early exit {a['early_exit']:.4f}, full depth {a['full_depth']:.4f} "
        f"(a loss of {a['loss_pp']:.2f} pp); the two agree on {a['agreement']:.4f} of the "
        f"images. Deterministic, so measured once.",
    ]


def ceilings(doc: Json) -> list[str]:
    sc = doc["scalars"]
    return [
        f"- In-process batched (bare onnxruntime chain, batch {doc['run']['inproc_batch']}, "
        f"no HTTP, no queues): early exit {fmt(sc.get('inproc_ee'))}, full depth "
        f"{fmt(sc.get('inproc_fd'))} samples/s.",
        f"- Serving loop (the server's data plane, stages and runtime in one process, no "
        f"HTTP): early exit {fmt(sc.get('loop_ee_32'))} samples/s with "
        f"{doc['run']['loop_32']} requests of 32 in flight, {fmt(sc.get('loop_ee_1'))} with "
        f"{doc['run']['loop_1']} single-sample requests in flight.",
        f"- In-process single-sample latency: {fmt(sc.get('inproc_single_ms'), '.2f')} ms, "
        "measured round by round between the concurrency-1 runs below.",
    ]


def oracle(doc: Json) -> list[str]:
    sc = doc["scalars"]
    return [
        f"Compute fraction of full depth over {doc['run']['rounds']} disjoint folds of the "
        f"samples: oracle {fmt(sc.get('oracle'), '.3f')}, calibrated confidence policy "
        f"{fmt(sc.get('policy'), '.3f')} (the oracle leaves at the first exit whose "
        "prediction equals the final exit's).",
    ]


def sweep_accuracy(doc: Json) -> list[str]:
    acc = doc["accuracy"].get("sweep", {})
    if not acc:
        return []
    cells = ", ".join(f"{t}: {a:.4f}" for t, a in acc.items())
    return ["", f"Accuracy on the same images at each threshold (Python client): {cells}."]


def peers(doc: Json) -> list[str]:
    """The peers' table and their labels against exitserve's, when this run had peers."""
    if not doc["tables"].get("peers"):
        return []
    checks = [
        f"{doc['run']['peers'][name]}: accuracy {a['accuracy']:.4f} on {a['images']} images, "
        f"labels equal to exitserve full depth's on {a['agreement_with_full_depth']:.4f} of them"
        for name, a in doc["accuracy"].get("peers", {}).items()
    ]
    return [
        f"## {TABLE_TITLES['peers']}",
        "",
        "The same segments in onnxruntime behind each peer, the same wrk bodies as exitserve "
        "(JSON where a peer reads only JSON), one sample per request; a peer runs every "
        "sample to the last exit.",
        "",
        *table(doc["tables"]["peers"]),
        "",
        *[f"- {c}." for c in checks],
        "",
    ]


def generated(doc: Json, images: list[str]) -> list[str]:
    tabs = doc["tables"]

    def section(name: str, extra: list[str] | None = None) -> list[str]:
        body = table(tabs[name]) if tabs.get(name) else ["Not measured in this run."]
        return [f"## {TABLE_TITLES[name]}", "", *body, *(extra or []), ""]

    return [
        GEN_BEGIN,
        *header(doc),
        "## Targets",
        "",
        *targets(doc),
        "",
        *section("saturation"),
        "### Accuracy on the same images",
        "",
        *accuracy(doc),
        "",
        *section("fixed"),
        "## The server vs its ceilings",
        "",
        *ceilings(doc),
        "",
        *section("c1"),
        *section("scheduling"),
        *peers(doc),
        "## The calibrated policy vs the oracle",
        "",
        *oracle(doc),
        "",
        *section("sweep", sweep_accuracy(doc)),
        *[f"![benchmarks]({i})" for i in images],
        "",
        *deep_section(doc),
        *fidelity_section(doc, table(tabs.get("fidelity_cost", []))),
        *text_section(doc, table(tabs.get("text", []))),
        "## What this run's figures say",
        "",
        *reading(doc),
        *(["", "Notes from this run:", *[f"- {n}" for n in doc["notes"]]] if doc["notes"] else []),
        GEN_END,
    ]


def between(doc: str, begin: str, end: str) -> str | None:
    """The text from `begin` to `end`, markers included; None if either is missing."""
    if begin not in doc or end not in doc.split(begin, 1)[1]:
        return None
    return begin + doc.split(begin, 1)[1].split(end, 1)[0] + end


def document(doc: Json, old: str, images: list[str], gpu_block: str) -> str:
    """The markdown; hand-written notes are kept from the old document."""
    notes = between(old, NOTES_BEGIN, NOTES_END)
    parts = ["# Benchmarks", "", *generated(doc, images), ""]
    if notes:
        parts += [notes, ""]
    return "\n".join([*parts, gpu_block, ""])


def write_doc(doc: Json, out: Path, images: list[str], gpu_block: str) -> None:
    """Write the json and the markdown beside it."""
    text = document(doc, out.read_text() if out.exists() else "", images, gpu_block)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    out.write_text(text)
