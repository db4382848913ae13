"""The sections `make bench` runs after the CPU comparisons, each on servers of its own.

Each can also run alone (`python -m loadtest.bench --only NAME`) and be spliced into the
existing docs/benchmarks.json: its tables, derived figures, accuracy and its own run
record (rounds, seconds, command, start) replace the old ones, and the rest of the
document keeps the figures of the run that measured them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loadtest import benchdeep, benchfidelity, benchsentiment
from loadtest.benchsteps import Load
from loadtest.figures import Json, Results, finite, row_json, targets


@dataclass(frozen=True)
class Options:
    """What the sections take besides the shared run settings."""

    phase_samples: int  # fidelity: samples per drift phase
    sentences: int | None  # text: test sentences used (None: the whole test split)


Section = Callable[[Results, Path, Load, Options], None]


def _fidelity(res: Results, repo: Path, load: Load, options: Options) -> None:
    benchfidelity.run_fidelity(res, repo, res.run["model"], load, options.phase_samples)


def _text(res: Results, repo: Path, load: Load, options: Options) -> None:
    benchsentiment.run_sentiment(res, repo, load.folder, options.sentences)


def _deep(res: Results, repo: Path, load: Load, options: Options) -> None:
    benchdeep.run_deep(res, repo, load)


SECTIONS: dict[str, Section] = {"fidelity": _fidelity, "text": _text, "deep": _deep}


def run_sections(
    res: Results, names: tuple[str, ...], repo: Path, load: Load, options: Options
) -> None:
    """The named sections in order, each recording when and how it ran in res.run[name]."""
    for name in names:
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        SECTIONS[name](res, repo, load, options)
        record = res.run.setdefault(name, {})
        record.update(
            started=started,
            rounds=res.run["rounds"],
            seconds=res.run["seconds"],
            command=res.run["command"],
        )


def splice(out: Path, res: Results, names: tuple[str, ...]) -> Json:
    """The existing json with these sections' figures in place of the old ones."""
    doc: Json = json.loads(out.with_suffix(".json").read_text())
    doc["tables"].update({t: [row_json(r) for r in rows] for t, rows in res.tables.items()})
    doc["derived"].update(res.extra)
    doc["accuracy"].update(res.accuracy)
    for name in names:
        doc["run"][name] = res.run[name]
    doc["targets"] = targets(doc["derived"])
    spliced: Json = finite(doc)
    return spliced
