"""The calibration report beside a manifest: a PNG, a JSON with every figure, a markdown table.

Humans read the PNG and markdown to judge whether early exit pays off for this model; the
JSON keeps the full threshold sweep so the plot can be redrawn or compared across builds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib
import numpy as np

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
    # defaults keep reports written before these fields readable
    baseline_accuracy: float = 0.0
    val_samples: int = 0
    test_samples: int = 0
    reference: str = "final"
    reference_exit: int = -1
    warnings: list[str] = field(default_factory=list)
    forced: list[str] = field(default_factory=list)  # refusals overridden by --force

    @property
    def reference_index(self) -> int:
        """The exit the tolerance is measured from, as a non-negative index."""
        return self.reference_exit % len(self.cumulative)

    @property
    def reference_name(self) -> str:
        k = self.reference_index
        return "the final exit" if k == len(self.cumulative) - 1 else f"exit {k + 1}"


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
            margin=c.get("margin", 0.0),
        )
        for p, c in raw.pop("choices").items()
    }
    test = {p: Outcome(**o) for p, o in raw.pop("test").items()}
    return ReportData(**raw, choices=choices, test=test)


def _plot(data: ReportData, path: Path) -> None:
    """Left: accuracy vs compute over the shared-threshold sweep; right: exit hit rates."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5.4))
    _plot_tradeoff(data, left)
    _plot_hit_rates(data, right)
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


MARGIN_NOTE = (
    "A calibrated setting (star) is accepted only if its accuracy minus the safety margin\n"
    "(the bar below it: one standard error of its paired drop) stays above the dashed line,\n"
    "so that the tolerance still holds on data calibration has not seen."
)


def _plot_tradeoff(data: ReportData, ax: Axes) -> None:
    reference = 100 * data.val_accuracy_per_exit[data.reference_index]
    tol = data.tolerance_pp
    for policy, choice in data.choices.items():
        xs = [x for x, _ in choice.curve]
        (line,) = ax.plot(xs, [100 * y for _, y in choice.curve], label=f"{policy} (shared t)")
        x, y = choice.val.compute_fraction, 100 * choice.val.accuracy
        ax.scatter([x], [y], color=line.get_color(), marker="*", s=160, zorder=3)
        ax.errorbar(
            [x],
            [y],
            yerr=np.array([[100 * choice.margin], [0.0]]),
            color=line.get_color(),
            capsize=4,
            zorder=3,
            label=f"{policy} calibrated, with its margin",
        )
    ax.axhline(reference, color="black", lw=0.8, label=f"{data.reference_name} only")
    ax.axhline(reference - tol, color="black", lw=0.8, ls="--", label=f"-{tol} pp tolerance")
    best = max(100 * y for c in data.choices.values() for _, y in c.curve or [(0, 0)])
    ax.set_ylim(reference - 4 * max(tol, 0.25), max(best, reference) + max(tol, 0.25))
    ax.set(
        xlabel="expected compute fraction (validation)",
        ylabel="validation accuracy (%)",
        title=f"{data.model}: accuracy vs compute",
    )
    # below the axes, never over the curves
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    ax.text(0.0, -0.42, MARGIN_NOTE, transform=ax.transAxes, fontsize=7, va="top")


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


def headline(data: ReportData) -> list[tuple[str, str]]:
    """The figures a user needs first, as (what, value) pairs, all on the test set."""
    test = data.test[data.default_policy]
    reference = data.test_accuracy_per_exit[data.reference_index]
    drop = 100 * (reference - test.accuracy)
    early = 1.0 - test.exit_distribution[-1]
    hits = " · ".join(f"exit {k + 1} {100 * h:.1f}%" for k, h in enumerate(test.exit_distribution))
    return [
        ("final exit accuracy", f"{pct(data.test_accuracy_per_exit[-1])}%"),
        (
            f"calibrated accuracy ({data.default_policy})",
            f"{pct(test.accuracy)}% ({0.0 - round(drop, 2):+.2f} pp vs {data.reference_name}; "
            f"tolerance {data.tolerance_pp:g} pp)",
        ),
        ("leaving early", f"{100 * early:.1f}% of samples"),
        (
            "compute fraction",
            f"{test.compute_fraction:.2f} of a full pass: expected speed-up "
            f"{1 / test.compute_fraction:.1f}x",
        ),
        ("exit hit rates", hits),
    ]


def summary(data: ReportData) -> list[str]:
    """The closing lines of a build: the headline, then anything that went wrong."""
    width = max(len(what) for what, _ in headline(data))
    lines = [f"  {what:<{width}}  {value}" for what, value in headline(data)]
    if data.test_samples:  # unknown (0) in reports written before it was recorded
        lines.append(f"  (test set: {data.test_samples} samples; validation: {data.val_samples})")
    lines += [f"WARNING: {w}" for w in data.warnings]
    lines += [f"WARNING: published with --force although {r}" for r in data.forced]
    return lines


def markdown(data: ReportData) -> str:
    """The report as markdown tables (also what docs/models.md quotes)."""
    notes = [f"* **Warning:** {w}" for w in data.warnings]
    notes += [f"* **Published with --force** although {r}" for r in data.forced]
    return "\n".join(
        [
            f"# Calibration report: {data.model}",
            "",
            f"Tolerance {data.tolerance_pp:g} pp below {data.reference_name}; default policy "
            f"`{data.default_policy}`.{_sizes(data)}",
            "",
            "| on the test set | |",
            "|---|---|",
            *(f"| {what} | {value} |" for what, value in headline(data)),
            "",
            *([*notes, ""] if notes else []),
            *_exit_table(data),
            "",
            *_policy_table(data),
            "",
        ]
    )


def _sizes(data: ReportData) -> str:
    if not data.test_samples:  # a report written before these were recorded
        return ""
    return (
        f" Test set {data.test_samples} samples, validation {data.val_samples}; baseline "
        f"(chance or majority class) {pct(data.baseline_accuracy)}%."
    )


def _exit_table(data: ReportData) -> list[str]:
    rows = [
        "| exit | segment MMACs | cumulative compute | val acc % | test acc % | test hit rate % |",
        "|---|---|---|---|---|---|",
    ]
    hits = data.test[data.default_policy].exit_distribution
    for k in range(len(data.cumulative)):
        rows.append(
            f"| {k + 1} | {data.segment_macs[k] / 1e6:.2f} | {pct(data.cumulative[k])}% "
            f"| {pct(data.val_accuracy_per_exit[k])} | {pct(data.test_accuracy_per_exit[k])} "
            f"| {100 * hits[k]:.1f} |"
        )
    return rows


def _policy_table(data: ReportData) -> list[str]:
    rows = [
        "| policy | thresholds | val acc % | val compute | test acc % | drop pp "
        "| leaving early % | test compute | speed-up | test exit distribution % |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    reference = data.test_accuracy_per_exit[data.reference_index]
    for policy, choice in data.choices.items():
        test = data.test[policy]
        thresholds = ", ".join(f"{t:.4g}" for t in choice.thresholds)
        dist = " / ".join(f"{100 * d:.1f}" for d in test.exit_distribution)
        rows.append(
            f"| {policy} | {thresholds} | {pct(choice.val.accuracy)} "
            f"| {choice.val.compute_fraction:.3f} | {pct(test.accuracy)} "
            f"| {round(100 * (reference - test.accuracy), 2) + 0.0:.2f} "
            f"| {100 * (1 - test.exit_distribution[-1]):.1f} | {test.compute_fraction:.3f} "
            f"| {1 / test.compute_fraction:.1f}x | {dist} |"
        )
    return rows


if __name__ == "__main__":  # redraw: python -m models.report models/repository/mnist/1
    import sys

    for folder in sys.argv[1:]:
        write_report(load_report(Path(folder)), Path(folder))
