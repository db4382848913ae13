"""Turn a data-source string into splits: images (`mnist`, `fashion-mnist`, `npz:PATH`,
`folder:PATH`) or texts (`rotten-tomatoes`, `csv:PATH`, `jsonl:PATH`).

One place decides how each source yields train/validation/test, so `train`, `export` and
`build` agree: export re-derives the same validation split from the source and the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.data import (
    AnyDataset,
    DataError,
    Splits,
    limit,
    load_fashion_mnist,
    load_folder,
    load_mnist,
    load_npz,
    split_off,
)
from models.textdata import Columns, load_rotten_tomatoes, load_table

BUILTIN = ("mnist", "fashion-mnist", "rotten-tomatoes")
TEXT_KINDS = ("rotten-tomatoes", "csv", "jsonl")
# fewer training samples than this per class cannot train anything worth calibrating
MIN_TRAIN_PER_CLASS = 10


class SizeError(DataError):
    """Split sizes the data cannot honour; `option` names the SplitSizes field to change."""

    def __init__(self, message: str, option: str) -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class SplitSizes:
    """How much data each split gets; None means "all that is available"."""

    val_fraction: float = 0.1
    train_samples: int | None = None
    val_samples: int | None = None
    test_samples: int | None = None
    test_fraction: float = 0.2


def describe(source: str) -> str:
    """A stable, human-readable name for the manifest's training metadata."""
    kind, _, rest = source.partition(":")
    return f"{kind}:{Path(rest).name}" if rest else kind


def is_text(source: str) -> bool:
    """Whether `source` names text data (which needs a text architecture)."""
    return source.partition(":")[0] in TEXT_KINDS


def _train_and_test(
    source: str, sizes: SplitSizes, seed: int, columns: Columns
) -> tuple[AnyDataset, AnyDataset]:
    """The source's own test split where it has one, else a seeded hold-out."""
    kind, _, rest = source.partition(":")
    train: AnyDataset
    test: AnyDataset | None
    if kind == "mnist" and not rest:
        return load_mnist("train"), load_mnist("t10k")
    if kind == "fashion-mnist" and not rest:
        return load_fashion_mnist("train"), load_fashion_mnist("t10k")
    if kind == "npz" and rest:
        train, test = load_npz(Path(rest))
    elif kind == "folder" and rest:
        train, test = load_folder(Path(rest)), None
    elif kind == "rotten-tomatoes" and not rest:
        train, test = load_rotten_tomatoes(), None
    elif kind in ("csv", "jsonl") and rest:
        train, test = load_table(Path(rest), columns), None
    else:
        raise DataError(
            f"unknown data source {source!r}: use mnist, fashion-mnist, npz:PATH, folder:PATH, "
            "rotten-tomatoes, csv:PATH or jsonl:PATH"
        )
    if test is None:
        held = max(1, round(len(train) * sizes.test_fraction))
        train, test = split_off(train, held, seed + 1)
    return train, test


def load_splits(
    source: str, sizes: SplitSizes, seed: int, columns: Columns | None = None
) -> Splits:
    """Train/validation/test for `source`; the validation split is carved from training data.

    `columns` name the text and label fields of a CSV or JSONL source.
    """
    train, test = _train_and_test(source, sizes, seed, columns or Columns())
    option = "val_samples" if sizes.val_samples is not None else "val_fraction"
    n_val = sizes.val_samples or max(1, round(len(train) * sizes.val_fraction))
    needed = MIN_TRAIN_PER_CLASS * len(train.labels)
    if len(train) - n_val < needed:
        raise SizeError(
            f"holding out {n_val} of the {len(train)} non-test samples for validation leaves "
            f"{max(0, len(train) - n_val)} to train on; training needs at least {needed} "
            f"({MIN_TRAIN_PER_CLASS} per class), so hold out at most {len(train) - needed}",
            option,
        )
    train, val = split_off(train, n_val, seed)
    if sizes.train_samples is not None and sizes.train_samples < needed:
        raise SizeError(
            f"{sizes.train_samples} training samples are too few: at least {needed} "
            f"({MIN_TRAIN_PER_CLASS} per class)",
            "train_samples",
        )
    return Splits(
        train=limit(train, sizes.train_samples, seed + 2),
        val=val,
        test=limit(test, sizes.test_samples, seed + 3),
    )
