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
from matplotlib.axes import Axes

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


def load_report(version_dir: Path) -> ReportData:
    """Read `calibration.json` back, e.g. to redraw the plot without rebuilding."""
    raw = json.loads((version_dir / JSON).read_text(encoding="utf-8"))
    choices = {
        p: PolicyChoice(
            policy=c["policy"],
            thresholds=c["thresholds"],
            val=Outcome(**c["val"]),
            feasible=c["feasible"],
            curve=[(float(x), float(y)) for x, y in c["curve"]],
        )
        for p, c in raw.pop("choices").items()
    }
    test = {p: Outcome(**o) for p, o in raw.pop("test").items()}
    return ReportData(**raw, choices=choices, test=test)


def _plot(data: ReportData, path: Path) -> None:
    """Left: accuracy vs compute over the shared-threshold sweep; right: exit hit rates."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    _plot_tradeoff(data, left)
    _plot_hit_rates(data, right)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_tradeoff(data: ReportData, ax: Axes) -> None:
    final = 100 * data.val_accuracy_per_exit[-1]
    tol = data.tolerance_pp
    for policy, choice in data.choices.items():
        xs = [x for x, _ in choice.curve]
        (line,) = ax.plot(xs, [100 * y for _, y in choice.curve], label=f"{policy} (shared t)")
        ax.scatter(
            [choice.val.compute_fraction],
            [100 * choice.val.accuracy],
            color=line.get_color(),
            marker="*",
            s=160,
            zorder=3,
            label=f"{policy} calibrated",
        )
    ax.axhline(final, color="black", lw=0.8, label="final exit only")
    ax.axhline(final - tol, color="black", lw=0.8, ls="--", label=f"-{tol} pp tolerance")
    best = max(100 * y for c in data.choices.values() for _, y in c.curve or [(0, 0)])
    ax.set_ylim(final - 4 * max(tol, 0.25), max(best, final) + max(tol, 0.25))
    ax.set(
        xlabel="expected compute fraction (validation)",
        ylabel="validation accuracy (%)",
        title=f"{data.model}: accuracy vs compute",
    )
    ax.legend(fontsize=7, loc="lower right", ncol=2)


def _plot_hit_rates(data: ReportData, ax: Axes) -> None:
    exits = list(range(1, len(data.cumulative) + 1))
    width = 0.8 / max(1, len(data.test))
    for i, (policy, outcome) in enumerate(data.test.items()):
        hits = [100 * h for h in outcome.exit_distribution]
        xs = [e + (i - (len(data.test) - 1) / 2) * width for e in exits]
        bars = ax.bar(xs, hits, width, label=f"{policy}")
        ax.bar_label(bars, labels=[f"{h:.1f}" for h in hits], fontsize=6)
    labels = [
        f"{k}\n{100 * c:.0f}% cost\nacc {100 * a:.2f}%"
        for k, c, a in zip(exits, data.cumulative, data.test_accuracy_per_exit, strict=True)
    ]
    ax.set_xticks(exits, labels, fontsize=8)
    ax.set(
        ylabel="test samples leaving here (%)",
        ylim=(0, 110),
        title="exit hit rates on the test set (calibrated thresholds)",
    )
    ax.legend(fontsize=8)


def pct(value: float) -> str:
    """A fraction as a percentage with two decimals."""
    return f"{100 * value:.2f}"


def markdown(data: ReportData) -> str:
    """The report as markdown tables (also what docs/models.md quotes)."""
    final = data.test_accuracy_per_exit[-1]
    return "\n".join(
        [
            f"# Calibration report: {data.model}",
            "",
            f"Tolerance {data.tolerance_pp} pp below the final exit; default policy "
            f"`{data.default_policy}`.",
            "",
            *_exit_table(data),
            "",
            *_policy_table(data),
            "",
            f"Final exit only (test): accuracy {pct(final)} %, compute 1.000.",
            "",
        ]
    )


def _exit_table(data: ReportData) -> list[str]:
    rows = [
        "| exit | segment MMACs | cumulative compute | val acc % | test acc % |",
        "|---|---|---|---|---|",
    ]
    for k in range(len(data.cumulative)):
        rows.append(
            f"| {k + 1} | {data.segment_macs[k] / 1e6:.2f} | {pct(data.cumulative[k])}% "
            f"| {pct(data.val_accuracy_per_exit[k])} | {pct(data.test_accuracy_per_exit[k])} |"
        )
    return rows


def _policy_table(data: ReportData) -> list[str]:
    rows = [
        "| policy | thresholds | val acc % | val compute | test acc % | test compute "
        "| test exit distribution % |",
        "|---|---|---|---|---|---|---|",
    ]
    for policy, choice in data.choices.items():
        test = data.test[policy]
        thresholds = ", ".join(f"{t:.4g}" for t in choice.thresholds)
        dist = " / ".join(f"{100 * d:.1f}" for d in test.exit_distribution)
        rows.append(
            f"| {policy} | {thresholds} | {pct(choice.val.accuracy)} "
            f"| {choice.val.compute_fraction:.3f} | {pct(test.accuracy)} "
            f"| {test.compute_fraction:.3f} | {dist} |"
        )
    return rows


if __name__ == "__main__":  # redraw: python -m models.report models/repository/mnist/1
    import sys

    for folder in sys.argv[1:]:
        write_report(load_report(Path(folder)), Path(folder))
