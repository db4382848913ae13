"""The prose of the generated section: statements chosen by conditions on this run's figures.

No sentence here carries a number of its own: each one quotes json values, and which
sentence is written depends on those values (a range that overlaps, a share above half).
"""

from __future__ import annotations

from pathlib import Path

from loadtest.figures import Json, value

UNTOLD = "one round, or ranges over rounds that overlap"
BUSY_PCT = 90  # client + server CPU at or above this share of the cores: the CPU is the limit


def _row(doc: Json, table: str, name: str) -> Json | None:
    return next((r for r in doc["tables"].get(table, []) if r["name"] == name), None)


def _apart(a: Json | None, b: Json | None) -> bool:
    """Whether this run tells two figures apart: two rounds or more, ranges not overlapping."""
    if not (a and b) or min(len(a["rounds"]), len(b["rounds"])) < 2:
        return False
    return bool(a["max"] < b["min"] or b["max"] < a["min"])


def client_sentence(doc: Json, wrk_name: str, py_name: str) -> list[str]:
    """Whether the Python generator, not the server, bounded the single-sample figure."""
    w, p = _row(doc, "saturation", wrk_name), _row(doc, "saturation", py_name)
    ratio = doc["derived"].get("python_vs_wrk_1")
    if not (w and p and ratio):
        return []
    verdict = (
        "so a Python generator would have reported the client's limit, not the server's"
        if ratio["max"] < 1 and _apart(w["samples_per_s"], p["samples_per_s"])
        else f"which this run cannot tell apart ({UNTOLD})"
    )
    return [
        f"- Single-sample early exit at saturation: wrk measured "
        f"{value(w['samples_per_s']):.0f} samples/s using {value(w['client_cpu_pct']):.0f}% "
        f"of the cores; the Python generator measured {value(p['samples_per_s']):.0f} using "
        f"{value(p['client_cpu_pct']):.0f}% ({ratio['median']:.2f}× wrk's figure), {verdict}."
    ]


def cpu_sentence(doc: Json, name: str) -> list[str]:
    """Where the single-sample server's CPU goes, against the model's own compute."""
    r, cores = _row(doc, "saturation", name), doc["machine"]["cores"]
    inproc = doc["scalars"].get("inproc_ee_cpu_ms")
    per_req = value(doc["derived"].get("server_cpu_ms_per_request_1"))
    if not (r and r["server_cpu_pct"] and r["client_cpu_pct"] and inproc and per_req):
        return []
    server, client = value(r["server_cpu_pct"]) or 0.0, value(r["client_cpu_pct"]) or 0.0
    machine = value(r["machine_cpu_pct"]) or 0.0
    if server + client >= BUSY_PCT:
        limit = "together they kept the cores busy, so the CPU bounds this figure"
    elif machine >= BUSY_PCT:
        limit = (
            f"the machine was {machine:.0f}% busy, so other processes took CPU the server "
            "would have used: this figure understates the server"
        )
    else:
        limit = (
            f"the machine was {machine:.0f}% busy, so something other than CPU (waiting, "
            "batching delays, a serial section) bounds this figure"
        )
    return [
        f"- Single-sample early exit: the server used {server:.0f}% and the client "
        f"{client:.0f}% of the {cores} cores; {limit}. That is {per_req:.2f} ms of server "
        f"CPU per request, against {value(inproc):.2f} ms of CPU per sample for the same "
        f"early exit in process (batched, no HTTP){_around(per_req, value(inproc) or 0.0)}.",
    ]


def _around(server_ms: float, model_ms: float) -> str:
    if server_ms > model_ms:
        return ": the rest is the cost of serving a request around the model"
    return ": the server spends no more CPU per request than the model in process"


def ratio_sentence(doc: Json) -> list[str]:
    d = doc["derived"]
    one, many, bare = d.get("ee_vs_fd_1"), d.get("ee_vs_fd_32"), d.get("inprocess_ee_vs_fd")
    if not (one and bare):
        return []
    above = "above" if one["median"] > bare["median"] else "below"
    word = above if _apart(one, bare) else f"not told apart ({UNTOLD}) from"
    many_text = f", with 32 samples per request {many['median']:.2f}×" if many else ""
    return [
        f"- Early exit over full depth: {one['median']:.2f}× through the server with one "
        f"sample per request{many_text}; in process {bare['median']:.2f}×. The "
        f"single-sample server ratio is {word} the in-process one.",
    ]


def inline_sentence(doc: Json, with_name: str, without_name: str) -> list[str]:
    a, b = _row(doc, "c1", with_name), _row(doc, "c1", without_name)
    if not (a and b):
        return []
    pa, pb = a["p50_ms"], b["p50_ms"]
    word = (
        ("lower with them" if pa["median"] < pb["median"] else "higher with them")
        if _apart(pa, pb)
        else f"not told apart by this run ({UNTOLD})"
    )
    return [
        f"- Inline segment runs at concurrency 1 (same client): p50 "
        f"{pa['median']:.2f} ms with them, {pb['median']:.2f} ms without: {word}.",
    ]


def _side(fig: Json | None, line: float) -> int:
    """+1 / -1 when every round is above / below `line` (two rounds or more), else 0."""
    if not fig or len(fig["rounds"]) < 2:
        return 0
    return 1 if fig["min"] > line else -1 if fig["max"] < line else 0


def peer_sentences(doc: Json) -> list[str]:
    """Where each peer is ahead of exitserve, behind it, or not told apart, from the rounds."""
    out = []
    for name, d in doc["derived"].get("peers", {}).items():
        fd, ee, p50 = d["vs_full_depth_32"], d["vs_early_exit_32"], d["p50_c1_minus_full_depth_ms"]
        if not (fd and ee and p50):
            continue
        sides = {
            "throughput against full depth": _side(fd, 1.0),
            "throughput against early exit": _side(ee, 1.0),
            "p50 at concurrency 1 against full depth": -_side(p50, 0.0),  # lower is ahead
        }
        groups = {
            word: [k for k, s in sides.items() if s == side]
            for word, side in (("ahead", 1), ("behind", -1), ("not told apart", 0))
        }
        verdict = "; ".join(f"{w} on {', '.join(ks)}" for w, ks in groups.items() if ks)
        out.append(
            f"- {doc['run']['peers'][name]} against exitserve with the same bodies: "
            f"{fd['median']:.2f}× full depth's throughput at 32 clients, {ee['median']:.2f}× "
            f"early exit's; p50 at concurrency 1 {p50['median']:+.2f} ms against full depth. "
            f"Over every round, the peer is {verdict}."
        )
    return out


def reading(doc: Json, names: dict[str, str] | None = None) -> list[str]:
    """Every generated statement this run's figures support."""
    n = names or doc["run"]["roles"]
    lines = [
        *client_sentence(doc, n["ee1"], n["ee1_python"]),
        *cpu_sentence(doc, n["ee1"]),
        *ratio_sentence(doc),
        *inline_sentence(doc, n["c1_python"], n["c1_no_inline"]),
        *peer_sentences(doc),
    ]
    return lines or ["Not enough figures in this run for a reading."]


def plot(doc: Json, folder: Path) -> list[str]:
    """Throughput bars and the accuracy/throughput sweep; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    rows = [*doc["tables"].get("saturation", []), *doc["tables"].get("scheduling", [])]
    ax1.bar([r["name"] for r in rows], [value(r["samples_per_s"]) or 0 for r in rows])
    ax1.set_ylabel("samples/s at saturation (median)")
    ax1.tick_params(axis="x", rotation=30)
    sweep, acc = doc["tables"].get("sweep", []), doc["accuracy"].get("sweep", {})
    xs = [value(r["samples_per_s"]) or 0 for r in sweep]
    ys = [acc.get(r["name"], float("nan")) for r in sweep]
    ax2.plot(xs, ys, "o-")
    for r, xv, yv in zip(sweep, xs, ys, strict=True):
        ax2.annotate(r["name"], (xv, yv), fontsize=8)
    ax2.set_xlabel("samples/s")
    ax2.set_ylabel("accuracy on the same images")
    ax2.set_title("confidence threshold sweep")
    fig.tight_layout()
    name = "benchmarks.png"
    fig.savefig(folder / name, dpi=100)
    plt.close(fig)
    return [name]
