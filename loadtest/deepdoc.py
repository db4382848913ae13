"""The deep-exit section of docs/benchmarks.md, rendered from the run's json only.

Reads json['derived']['deep'] (written by loadtest.benchdeep.run_deep). Every number
printed is a value of that json, and every comparison in the prose is decided from those
values here, so a re-run with different figures never leaves stale words behind.
"""

from __future__ import annotations

from loadtest.figures import Json, fmt

TITLE = "## Where stage batching matters (deep exits)"
MODE_NAMES = {"stage": "stage batching", "naive": "naive early exit", "none": "no batching"}
# A ratio whose every round lies within this of 1 reads "about as much": one shared machine's
# round-to-round drift, not a difference between the modes.
DRIFT = 0.05


def deep_section(doc: Json) -> list[str]:
    """The section's markdown lines; a note instead when the run did not measure it."""
    deep = doc.get("derived", {}).get("deep")
    if not deep or not deep.get("workloads"):
        return [TITLE, "", "Not measured in this run.", ""]
    lines = [TITLE, "", *_method(deep), ""]
    for w in deep["workloads"]:
        lines += _workload(deep, w)
    return lines


def _method(deep: Json) -> list[str]:
    rates = ", ".join(f"{r:.0f}" for r in deep["rates"])
    bound, n = f"{deep['p99_bound_ms']:g}", deep["rounds"]
    return [
        "Workloads that send many samples past the first exit, one sample per request, "
        "open-loop Poisson arrivals; a fresh server per scheduling mode and round "
        f"({n} round{'' if n == 1 else 's'}, interleaved across modes), fidelity control off "
        "(thresholds fixed, no shadow rows). Each server climbs "
        f"the offered rates {rates} req/s ({deep['rate_seconds']:g} s each) and stops after "
        f"the first whose p99 exceeds {bound} ms or that loses a request (going on at least "
        f"to {deep['hist_rate']:.0f} req/s, where batches are compared); its throughput is "
        "the highest rate that held with every rate below it, and the samples/s answered "
        "there. Batch sizes are the "
        f"server's `exitserve_batch_size` histogram per stage at {deep['hist_rate']:.0f} req/s "
        "(difference of two scrapes, all rounds pooled). *Rows per sample*: segments an "
        "answered sample went through (its depth); *runs per sample*: segment runs "
        "(batches) per answered sample, equal to the depth when nothing is batched; *at the "
        "limit*: the same scrapes around each round's highest rate that held; ≥: a round "
        "held the top rate offered, so the ladder, not the server, set the figure."
    ]


def _workload(deep: Json, w: Json) -> list[str]:
    modes = w["modes"]
    bound = f"{deep['p99_bound_ms']:g}"
    lines = [f"### {w['name']}", "", *_verdict(deep, w), ""]
    lines += [
        f"| mode | highest rate with p99 ≤ {bound} ms (req/s) | samples/s there | p99 there "
        f"(ms) | rows per sample | runs per sample | runs per sample at the limit | mean batch "
        "per stage at the limit | stage batching / this mode (samples/s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for mode in deep["modes"]:
        m = modes[mode]
        ratio = fmt(m.get("stage_over_this"), ".2f") if mode != "stage" else "—"
        lines.append(
            f"| {MODE_NAMES.get(mode, mode)} | {_capped(deep, m)}{fmt(m['max_rate'])} "
            f"| {fmt(m['samples_per_s'])} "
            f"| {fmt(m['p99_ms'], '.1f')} | {fmt(m['rows_per_sample'], '.2f')} "
            f"| {fmt(m['runs_per_sample'], '.2f')} | {fmt(m['limit_runs_per_sample'], '.2f')} "
            f"| {' / '.join(fmt(b, '.2f') for b in m['limit_mean_batch']) or 'n/a'} | {ratio} |"
        )
    return [*lines, "", *_histograms(deep, w), ""]


def _capped(deep: Json, m: Json) -> str:
    """`≥ ` when a round held the top rate offered: the ladder, not the server, ended it."""
    top = max(deep["rates"], default=None)
    rate = m.get("max_rate")
    return "≥ " if rate is not None and top is not None and rate["max"] >= top else ""


def _histograms(deep: Json, w: Json) -> list[str]:
    """Share of each stage's segment runs per batch-size bucket, every mode."""
    modes = [(mode, w["modes"][mode]) for mode in deep["modes"]]
    labels: list[str] = next((m["buckets"] for _, m in modes if m["buckets"]), [])
    used = [i for i in range(len(labels)) if any(_share(m, i) for _, m in modes)]
    last = max(used, default=0) + 1
    cols = " | ".join(f"{lab} %" for lab in labels[:last])
    lines = [
        f"Segment runs by batch size at {deep['hist_rate']:.0f} req/s (share of each stage's "
        "runs):",
        "",
        f"| mode | stage | segment runs | mean batch | {cols} |",
        f"| --- | --- | ---: | ---: | {' | '.join(['---:'] * last)} |",
    ]
    for mode, m in modes:
        for s in m["stages"]:
            shares = " | ".join(fmt(p, ".1f") for p in s["run_pct"][:last])
            lines.append(
                f"| {MODE_NAMES.get(mode, mode)} | {s['stage']} | {fmt(s['runs'])} "
                f"| {fmt(s['mean_batch'], '.2f')} | {shares} |"
            )
    return lines


def _share(m: Json, i: int) -> bool:
    return any(i < len(s["run_pct"]) and s["run_pct"][i] > 0 for s in m["stages"])


def _verdict(deep: Json, w: Json) -> list[str]:
    """Depth reached, then stage batching's throughput against each other mode: "more" or
    "less" only when every round's ratio lies beyond the drift band."""
    stage = w["modes"].get("stage", {})
    out = []
    if stage.get("past_first_pct") is not None:
        out.append(
            f"Under stage batching {stage['past_first_pct']:.1f}% of the answered samples "
            "went on past the first exit."
        )
    parts = []
    for mode in deep["modes"]:
        ratio = w["modes"][mode].get("stage_over_this")
        if mode != "stage" and ratio is not None:
            parts.append(f"{_compare(ratio)} {MODE_NAMES.get(mode, mode)} ({fmt(ratio, '.2f')}×)")
    if parts:
        out.append(
            f"Within the p99 bound stage batching answered {' and '.join(parts)} in samples/s "
            "(median and range of per-round ratios)."
        )
    return [" ".join(out)] if out else []


def _compare(ratio: Json) -> str:
    if ratio["min"] > 1 + DRIFT:
        return "more than"
    if ratio["max"] < 1 - DRIFT:
        return "less than"
    return "about as much as"
