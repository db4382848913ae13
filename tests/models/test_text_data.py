"""Text data: the Rotten Tomatoes corpus, seeded splits, and a user's CSV / JSONL through the CLI.

Every malformed file must be refused before training, as one usage-error line that names
the file, the line and the column (exit code 2, like image data).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from models.data import DataError, TextDataset
from models.sources import SplitSizes, is_text, load_splits
from models.textdata import Columns, load_rotten_tomatoes, load_table
from service.cli import main

TEXT_ARCH = ["--arch", "minilm", "--no-progress"]


@pytest.fixture(scope="module")
def reviews() -> TextDataset:
    return load_rotten_tomatoes()


def _build(data: str, *extra: str) -> tuple[int, str]:
    args = ["build", "--data", data, *TEXT_ARCH, "--name", "t", "--out", "/nonexistent"]
    result = CliRunner().invoke(main, [*args, *extra])
    return result.exit_code, result.output


def _write_csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_rotten_tomatoes_holds_reviews_only(reviews: TextDataset) -> None:
    assert reviews.labels == ("fresh", "rotten")
    # 7,403 fresh + 5,405 rotten rows, less 56 repeated snippets; the 1,097 plot rows left out
    assert len(reviews) == 12752 == len(set(reviews.texts))
    assert np.bincount(reviews.y).tolist() == [7368, 5384]
    assert all(t and t == t.strip() for t in reviews.texts)


def test_text_splits_are_seeded_and_disjoint() -> None:
    sizes = SplitSizes(val_samples=500, test_fraction=0.2)
    a = load_splits("rotten-tomatoes", sizes, seed=3)
    b = load_splits("rotten-tomatoes", sizes, seed=3)
    c = load_splits("rotten-tomatoes", sizes, seed=4)
    assert isinstance(a.train, TextDataset)
    assert a.test.texts == b.test.texts
    assert a.val.texts == b.val.texts
    assert a.test.texts != c.test.texts  # type: ignore[union-attr]
    assert (len(a.train), len(a.val), len(a.test)) == (12752 - 2550 - 500, 500, 2550)
    # a review in two splits would leak into the figures
    train, val = set(a.train.texts), set(a.val.texts)  # type: ignore[union-attr]
    assert not train & set(a.test.texts)
    assert not train & val


def test_user_csv_and_jsonl_with_named_columns(tmp_path: Path) -> None:
    csv = _write_csv(tmp_path / "r.csv", "review,stars", '"good, really",pos', "bad,neg")
    jsonl = tmp_path / "r.jsonl"
    rows = [{"review": "good", "stars": 5}, {"review": "bad", "stars": 1}]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    columns = Columns(text="review", label="stars")
    from_csv, from_jsonl = load_table(csv, columns), load_table(jsonl, columns)
    assert from_csv.texts == ("good, really", "bad")
    assert from_csv.labels == ("neg", "pos")
    assert from_csv.y.tolist() == [1, 0]
    assert from_jsonl.labels == ("1", "5")
    assert from_jsonl.y.tolist() == [1, 0]
    assert is_text("csv:x.csv")
    assert is_text("rotten-tomatoes")
    assert not is_text("npz:x.npz")


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("text,label\nfine,pos\n   ,neg\n", ".csv", "line 3: empty text in column 'text'"),
        ("body,label\nfine,pos\n", ".csv", "line 2: no text column 'text'"),
        ("text,label\nfine,pos\nnice,\n", ".csv", "line 3: missing label in column 'label'"),
        ("text,label\nfine,pos,extra\n", ".csv", "the number of fields differs"),
        ("text,label\n", ".csv", "holds no rows"),
        ('{"text": "fine", "label": "pos"}\n{"text": "ok"\n', ".jsonl", "line 2: not valid JSON"),
        ('{"text": "fine"}\n', ".jsonl", "line 1: no label column 'label'"),
        ('["fine", "pos"]\n', ".jsonl", "line 1: expected a JSON object per line"),
        ('{"text": "", "label": "pos"}\n', ".jsonl", "line 1: empty text"),
        ('{"text": "fine", "label": null}\n', ".jsonl", "line 1: missing label"),
    ],
)
def test_malformed_files_get_one_line_usage_errors(
    tmp_path: Path, content: str, suffix: str, message: str
) -> None:
    path = tmp_path / f"data{suffix}"
    path.write_text(content, encoding="utf-8")
    code, output = _build(f"{suffix[1:]}:{path}")
    assert code == 2, output
    assert "Invalid value for '--data'" in output
    assert message in output
    assert "Traceback" not in output


def test_one_class_binary_and_wrong_suffix_are_refused(tmp_path: Path) -> None:
    one_class = _write_csv(tmp_path / "a.csv", "text,label", "a,x", "b,x")
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"text,label\n\xff\xfe,x\n")
    cases = [
        (f"csv:{one_class}", "need at least two classes"),
        (f"csv:{binary}", "not a readable UTF-8 CSV"),
        (f"csv:{tmp_path / 'missing.csv'}", "no such file"),
        (f"jsonl:{tmp_path / 'x.txt'}", "expected a .csv or .jsonl file"),
    ]
    for data, message in cases:
        code, output = _build(data)
        assert code == 2, output
        assert message in output


def test_columns_are_options_and_an_image_arch_is_refused_for_text(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "r.csv", "review,label", "fine,pos")
    code, output = _build(f"csv:{path}", "--text-column", "body")
    assert code == 2
    assert "no text column 'body' (has ['label', 'review'])" in output
    rows = [f"text {i},{'pos' if i % 2 else 'neg'}" for i in range(40)]
    path = _write_csv(tmp_path / "ok.csv", "text,label", *rows)
    result = CliRunner().invoke(
        main, ["build", "--data", f"csv:{path}", "--name", "t", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert "holds text data, but resnet is not a text architecture: use minilm" in result.output


def test_data_error_type_for_library_callers(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty text"):
        load_table(_write_csv(tmp_path / "e.csv", "text,label", '"",x'), Columns())
