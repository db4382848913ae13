"""The calibration report beside a manifest: a PNG, a JSON with every figure, a markdown table.

Humans read the PNG and markdown to judge whether early exit pays off for this model; the
JSON keeps the full threshold sweep so the plot can be redrawn or compared across builds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on build machines

import matplotlib.pyplot as plt

from models.calibrate import Outcome, PolicyChoice

PNG, JSON, MARKDOWN = "calibration.png", "calibration.json", "calibration.md"


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows, measured on the validation and test splits."""

    model: str
    tolerance_pp: float
    default_policy: str
    segment_macs: list[int]
    cumulative: list[float]
    val_accuracy_per_exit: list[float]
    test_accuracy_per_exit: list[float]
    choices: dict[str, PolicyChoice]
    test: dict[str, Outcome]


def write_report(data: ReportData, version_dir: Path) -> list[Path]:
    """Write the three report files into `version_dir`; returns their paths."""
    paths = [version_dir / PNG, version_dir / JSON, version_dir / MARKDOWN]
    _plot(data, paths[0])
    paths[1].write_text(json.dumps(asdict(data), indent=1) + "\n", encoding="utf-8")
    paths[2].write_text(markdown(data), encoding="utf-8")
    return paths


def _plot(data: ReportData, path: Path) -> None:
    """Left: accuracy vs compute over the shared-threshold sweep; right: exit hit rates."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    final = data.val_accuracy_per_exit[-1]
    for policy, choice in data.choices.items():
        xs, ys = zip(*choice.curve, strict=True) if choice.curve else ((), ())
        (line,) = left.plot(xs, [100 * y for y in ys], label=f"{policy} (shared threshold)")
        left.scatter(
            [choice.val.compute_fraction],
            [100 * choice.val.accuracy],
            color=line.get_color(),
            marker="*",
            s=140,
            zorder=3,
        )
    left.axhline(100 * final, color="black", lw=0.8, label="final exit only")
    left.axhline(
        100 * final - data.tolerance_pp,
        color="black",
        lw=0.8,
        ls="--",
        label=f"tolerance {data.tolerance_pp} pp",
    )
    left.set(
        xlabel="expected compute fraction",
        ylabel="validation accuracy (%)",
        title=f"{data.model}: accuracy vs compute (★ = calibrated)",
    )
    left.set_ylim(max(0.0, 100 * final - 8 * max(data.tolerance_pp, 0.25)), 100.5)
    left.legend(fontsize=8, loc="lower right")
    exits = list(range(1, len(data.cumulative) + 1))
    width = 0.8 / max(1, len(data.choices))
    for i, policy in enumerate(data.choices):
        hits = [100 * h for h in data.test[policy].exit_distribution]
        right.bar(
            [e + (i - (len(data.choices) - 1) / 2) * width for e in exits],
            hits,
            width,
            label=f"{policy} (test)",
        )
    right.set(
        xlabel="exit",
        ylabel="samples leaving here (%)",
        xticks=exits,
        title="exit hit rates with calibrated thresholds",
    )
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def pct(value: float) -> str:
    """A fraction as a percentage with two decimals."""
    return f"{100 * value:.2f}"


def markdown(data: ReportData) -> str:
    """The report as markdown tables (also what docs/models.md quotes)."""
    exits = range(len(data.cumulative))
    lines = [
        f"# Calibration report: {data.model}",
        "",
        f"Tolerance {data.tolerance_pp} pp below the final exit; default policy "
        f"`{data.default_policy}`.",
        "",
        "| exit | segment MMACs | cumulative compute | val acc % | test acc % |",
        "|---|---|---|---|---|",
        *[
            f"| {k + 1} | {data.segment_macs[k] / 1e6:.2f} | {pct(data.cumulative[k])}% "
            f"| {pct(data.val_accuracy_per_exit[k])} | {pct(data.test_accuracy_per_exit[k])} |"
            for k in exits
        ],
        "",
        "| policy | thresholds | val acc % | val compute | test acc % | test compute "
        "| test exit distribution % |",
        "|---|---|---|---|---|---|---|",
    ]
    for policy, choice in data.choices.items():
        test = data.test[policy]
        thresholds = ", ".join(f"{t:.4g}" for t in choice.thresholds)
        dist = " / ".join(f"{100 * d:.1f}" for d in test.exit_distribution)
        lines.append(
            f"| {policy} | {thresholds} | {pct(choice.val.accuracy)} "
            f"| {choice.val.compute_fraction:.3f} | {pct(test.accuracy)} "
            f"| {test.compute_fraction:.3f} | {dist} |"
        )
    final = data.test_accuracy_per_exit[-1]
    lines += ["", f"Final exit only (test): accuracy {pct(final)} %, compute 1.000.", ""]
    return "\n".join(lines)
