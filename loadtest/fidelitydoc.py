"""The fidelity section of docs/benchmarks.md and its plot, from the json only.

Every number printed is a value of docs/benchmarks.json; the sentences are chosen by
comparing those values with the targets (issue 11's acceptance), never typed verdicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from loadtest.figures import Json, fmt, value

if TYPE_CHECKING:
    from matplotlib.axes import Axes

PLOT = "fidelity-drift.png"


def phase_table(f: Json) -> list[str]:
    """Static vs controller, phase by phase."""
    lines = [
        f"| phase | agreement, last {f['tail']} (%) static / controller "
        "| early share (%) static / controller | compute (share of full depth) "
        "| samples/s static / controller | shadows run / shed | shadow compute (%) "
        "| reaction (samples) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s, c in zip(f["static"], f["controller"], strict=True):
        agree = f"{s['agreement_tail_pct']:.1f} / {c['agreement_tail_pct']:.1f}"
        early = f"{s['early_share_pct']:.1f} / {c['early_share_pct']:.1f}"
        lines.append(
            f"| {s['name']} | {agree} | {early} "
            f"| {fmt(s['compute'], '.3f')} / {fmt(c['compute'], '.3f')} "
            f"| {fmt(s['samples_per_s'])} / {fmt(c['samples_per_s'])} "
            f"| {fmt(c['shadow_samples'])} / {fmt(c['shadow_shed'])} "
            f"| {fmt(c['shadow_compute_pct'], '.1f')} | {fmt(c['reaction_samples'])} |"
        )
    return lines


def reading(doc: Json) -> list[str]:
    """Statements the figures support, each one a comparison of json values."""
    f, d = doc["derived"]["fidelity"], doc["derived"]
    target, level = f["target_pct"], f["level_pct"]
    shifts = [
        (s, c) for s, c in zip(f["static"], f["controller"], strict=True) if s["name"] != "clean"
    ]
    held = [c["name"] for _, c in shifts if c["agreement_tail_pct"] >= level]
    missed = [c["name"] for _, c in shifts if c["agreement_tail_pct"] < level]
    lines = [
        f"- The controller's target for each exit: agreement ≥ {target:.1f}% (from the "
        f"manifest's calibration); the acceptance level is {level:.1f}% over the last "
        f"{f['tail']} samples of each shift. Held on: {', '.join(held) or 'none'}; "
        f"missed on: {', '.join(missed) or 'none'}."
    ]
    worst = min(shifts, key=lambda p: p[0]["agreement_tail_pct"], default=None)
    if worst:
        lines.append(
            f"- Static thresholds on the same shifts: agreement "
            f"{worst[0]['agreement_tail_pct']:.1f}% at worst ({worst[0]['name']}), with "
            f"{worst[0]['early_share_pct']:.1f}% of samples "
            "still leaving early."
        )
    recovery = f["recovery_samples"]
    lines.append(
        f"- Back on clean data the early share was back within {f['recovery_points_pct']:.0f} "
        f"points of the static policy's after {recovery} samples."
        if recovery is not None
        else "- Back on clean data the early share did not return within "
        f"{f['recovery_points_pct']:.0f} points of the static policy's during the phase."
    )
    cost = value(d.get("fidelity_shadow_cost_pct_1"))
    kept = value(d.get("fidelity_clean_saving_kept_pct"))
    lines.append(
        f"- On clean data the controller kept {fmt(kept, '.1f')}% of the static compute "
        f"saving; shadows cost {fmt(cost, '.1f')}% of throughput at saturation "
        "(one sample per request, wrk; table below)."
    )
    return lines


def fidelity_section(doc: Json, table: list[str]) -> list[str]:
    """The section: what ran, the phase table, the reading, the cost table, the plot."""
    f = doc["derived"].get("fidelity")
    if not f:
        return ["## Fidelity under drift", "", "Not measured in this run.", ""]
    run = doc["run"]["fidelity"]
    return [
        "## Fidelity under drift (static thresholds vs the controller)",
        "",
        f"A stream of {run['phase_samples']} samples per phase, served in order through two "
        f"servers (fidelity off, and the defaults), {run['per_request']} samples per request, "
        f"{run['concurrency']} requests outstanding; agreement is with the same server's "
        "`full_depth` answers. Compute: the mean share of full-depth compute per answer; "
        "shadow compute: shadows' extra compute over all compute in the phase. Reaction: "
        f"samples into the phase until the agreement over the last {f['rolling']} reached "
        f"{f['level_pct']:.1f}% (controller). Errors: static {f['static_errors']}, controller "
        f"{f['controller_errors']}.",
        "",
        *phase_table(f),
        "",
        *reading(doc),
        "",
        "Shadow cost at saturation, clean MNIST test images, interleaved rounds (the "
        f"controller's server fresh, loaded for {run['settle_s']} s until its shadow fraction "
        f"settled; threshold changes during these rounds: {run['cost_threshold_changes']}):",
        "",
        *table,
        "",
        f"![fidelity under drift]({PLOT})",
        "",
    ]


def fidelity_plot(doc: Json, folder: Path) -> list[str]:
    """Agreement, early share and throughput over the stream; returns the files written."""
    f = doc["derived"].get("fidelity")
    if not f:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    keys = (("agreement", "agreement with full depth"), ("early_share", "share leaving early"))
    for ax, (key, label) in zip(axes, (*keys, ("samples_per_s", "samples/s")), strict=True):
        for policy in ("static", "controller"):
            ys = f[f"{policy}_series"][key]
            ax.plot([(i + 1) * f["window"] for i in range(len(ys))], ys, label=policy)
        ax.set_ylabel(label)
        _phases(ax, f["static"])
    axes[0].axhline(f["level_pct"] / 100, color="grey", linestyle="--", linewidth=0.8)
    axes[0].legend(loc="lower left")
    axes[-1].set_xlabel("samples into the stream")
    fig.tight_layout()
    fig.savefig(folder / PLOT, dpi=100)
    plt.close(fig)
    return [PLOT]


def _phases(ax: Axes, phases: list[Json]) -> None:
    """Phase boundaries and names along the top of a panel."""
    start = 0
    for p in phases:
        ax.axvline(start, color="lightgrey", linewidth=0.8)
        ax.text(start, 1.0, p["name"], transform=ax.get_xaxis_transform(), fontsize=8)
        start += p["samples"]
