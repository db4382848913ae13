"""The text section of `make bench`: the bundled `sentiment` model, one sentence per request.

Early exit against `full_depth` on the same server, interleaved rounds, load from wrk; the
sentences are split by token count into thirds, each third measured on its own, so p50 and
p99 can be read by sentence length. The Python client sends every sentence once per mode
for the accuracy and the agreement of early answers with full depth.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import numpy.typing as npt

from loadtest.benchcpu import CPU_ENV, FD
from loadtest.benchsteps import Step, labels_of, rounds, url_of, warm, wrk_step
from loadtest.client import EncodedRequest, encode_text
from loadtest.figures import Json, Results, fmt, per_round, value
from loadtest.server import LiveServer, running_server
from loadtest.wrk import write_bodies
from models.data import TextDataset
from models.manifest import load_manifest
from models.sources import SplitSizes, load_splits
from models.textchain import encoder_for

MODEL = "sentiment"
TABLE = "text"
CONNECTIONS = 32
MODES = (("early exit", None), ("full depth", FD))
RATIO = "text_ee_vs_fd_1"  # a target in loadtest.figures


def sentences(
    version_dir: Path, count: int | None
) -> tuple[list[str], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The model's own test split (the seed and sizes its manifest records; at most
    `count`), labels, and token counts as the model sees them."""
    manifest = load_manifest(version_dir)
    seed = manifest.training.seed if manifest.training else 0
    sizes = SplitSizes(val_samples=manifest.training.val_samples if manifest.training else None)
    test = load_splits("rotten-tomatoes", sizes, seed).test
    assert isinstance(test, TextDataset)
    texts, y = list(test.texts[:count]), test.y[:count]
    _, mask = encoder_for(version_dir, manifest).encode(texts)
    return texts, y, mask.sum(axis=1).astype(np.int64)


def groups(lengths: npt.NDArray[np.int64]) -> tuple[dict[str, npt.NDArray[np.int64]], list[int]]:
    """All sentences, and thirds by token count (names carry the bounds)."""
    low, high = (int(q) for q in np.quantile(lengths, [1 / 3, 2 / 3]))
    out = {"all lengths": np.arange(len(lengths))}
    out[f"≤ {low} tokens"] = np.flatnonzero(lengths <= low)
    out[f"{low + 1}–{high} tokens"] = np.flatnonzero((lengths > low) & (lengths <= high))
    out[f"> {high} tokens"] = np.flatnonzero(lengths > high)
    return out, [low, high]


def requests(
    texts: list[str], y: npt.NDArray[np.int64], rows: npt.NDArray[np.int64], params: Json | None
) -> list[EncodedRequest]:
    return [encode_text([texts[i]], y[i : i + 1], params) for i in rows]


def run_sentiment(res: Results, repo: Path, folder: Path, count: int | None = None) -> None:
    """Throughput and latency by length, early exit vs full depth; accuracy and agreement."""
    version_dir = repo / MODEL / "1"
    texts, y, lengths = sentences(version_dir, count)
    parts, cuts = groups(lengths)
    res.run["text"] = {"model": MODEL, "sentences": len(texts), "length_cuts": cuts}
    res.run["text"]["median_tokens"] = float(np.median(lengths))
    with running_server(repo, folder, env=CPU_ENV) as srv:
        click.echo("text: sentiment, early exit vs full depth, by sentence length")
        steps = text_steps(res, srv, texts, y, parts, folder)
        rounds(steps, res.run["rounds"])
        res.accuracy["text"] = text_accuracy(srv, texts, y)
    rates = [
        [r.samples_per_s for r in res.row(TABLE, f"{mode}, all lengths").reports]
        for mode, _ in MODES
    ]
    res.extra[RATIO] = per_round(rates[0], rates[1], "ratio")


def text_steps(
    res: Results,
    srv: LiveServer,
    texts: list[str],
    y: npt.NDArray[np.int64],
    parts: dict[str, npt.NDArray[np.int64]],
    folder: Path,
) -> dict[str, Step]:
    steps: dict[str, Step] = {}
    for group, rows in parts.items():
        for mode, params in MODES:
            bodies = write_bodies(requests(texts, y, rows, params), folder)
            if not steps:
                warm(srv, MODEL, bodies)
            name = f"{mode}, {group}"
            steps[name] = wrk_step(
                res, TABLE, name, lambda: srv, MODEL, bodies, CONNECTIONS, res.run["seconds"]
            )
    return steps


def text_accuracy(srv: LiveServer, texts: list[str], y: npt.NDArray[np.int64]) -> Json:
    """Accuracy of both modes on the same sentences, and how often they agree."""
    rows = np.arange(len(texts))
    early, truth = labels_of(url_of(srv, MODEL), requests(texts, y, rows, None))
    full, _ = labels_of(url_of(srv, MODEL), requests(texts, y, rows, FD))
    return {
        "early_exit_pct": 100 * float((early == truth).mean()),
        "full_depth_pct": 100 * float((full == truth).mean()),
        "agreement_pct": 100 * float((early == full).mean()),
    }


def text_section(doc: Json, table: list[str]) -> list[str]:
    """The section, from the json: what ran, the table, accuracy and the ratio."""
    run = doc["run"].get("text")
    if not run:
        return ["## Text model (sentiment)", "", "Not measured in this run.", ""]
    acc, ratio = doc["accuracy"]["text"], doc["derived"].get(RATIO)
    return [
        f"## Text model ({run['model']}): early exit vs full depth, one sentence per request",
        "",
        f"{run['sentences']} Rotten Tomatoes snippets of the model's test split (median "
        f"{run['median_tokens']:.0f} "
        f"tokens), one per request, {CONNECTIONS} wrk connections; by length: thirds cut at "
        f"{run['length_cuts'][0]} and {run['length_cuts'][1]} tokens.",
        "",
        *table,
        "",
        f"- Early exit / full depth throughput, all lengths: "
        f"{fmt(value(ratio), '.2f')}× (per round: "
        f"{', '.join(f'{r:.2f}' for r in (ratio or {}).get('rounds', []))}).",
        f"- On the same sentences: early exit {acc['early_exit_pct']:.2f}% accurate, full "
        f"depth {acc['full_depth_pct']:.2f}%; the answers agree on "
        f"{acc['agreement_pct']:.2f}% of them.",
        "",
    ]
