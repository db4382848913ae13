"""Issue 15's acceptance on real digits-sized data, through the CLI as a user runs it:
default settings train long enough (item 1), and the closing report says what happened
(item 4)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from models.manifest import load_manifest
from models.train import auto_epochs
from tests.models.digits import TINY, invoke, leftovers
from tests.models.digits import digits_npz_fixture as digits_npz_fixture


def _figure(output: str, what: str) -> float:
    """A percentage from the closing summary, e.g. `final exit accuracy  97.21%`."""
    match = re.search(rf"^  {re.escape(what)} +([0-9.]+)%", output, flags=re.MULTILINE)
    assert match, output
    return float(match.group(1))


@pytest.mark.slow  # default settings: 500 steps of the full-width network, 1-2 min
def test_default_settings_on_digits_give_a_good_model_or_refuse(
    digits_npz: Path, tmp_path: Path
) -> None:
    out = tmp_path / "repo"
    args = ["--name", "digits", "--out", str(out), "--threads", "1", "--no-progress"]
    result = invoke("build", "--data", f"npz:{digits_npz}", *args)
    # the step budget: 1,294 training samples in batches of 128 get 46 epochs, not 2
    assert f"trained {auto_epochs(1294, 128)} epochs" in result.output
    assert _figure(result.output, "final exit accuracy") >= 90.0
    if result.exit_code == 0:
        manifest = load_manifest(out / "digits" / "1")
        assert manifest.training is not None
        assert manifest.training.test_accuracy_per_exit[-1] >= 0.9
    else:
        # 144 validation samples cannot resolve 0.5 pp: refused, saying what would
        assert result.exit_code == 1, result.output
        assert "the validation split holds 144 samples" in result.output
        assert leftovers(out) == []


def test_the_report_leads_with_what_happened(digits_npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    args = ["--name", "digits", "--out", str(out), "--tolerance", "2", *TINY]
    result = invoke("build", "--data", f"npz:{digits_npz}", *args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert re.fullmatch(
        r"trained \d+ epochs in \d+s on cpu; validation accuracy per exit "
        r"\(144 samples\): [0-9.]+ / [0-9.]+ / [0-9.]+ %",
        lines[0],
    ), lines[0]
    start = lines.index(f"published {out / 'digits' / '1'}")
    headline = [line.split("  ")[1].strip() for line in lines[start + 1 : start + 6]]
    assert headline == [
        "final exit accuracy",
        "calibrated accuracy (confidence)",
        "leaving early",
        "compute fraction",
        "exit hit rates",
    ]
    assert re.search(r"\([+-]\d+\.\d\d pp vs the final exit; tolerance 2 pp\)", result.output)
    assert re.search(r"leaving early +\d+\.\d% of samples", result.output)
    assert re.search(r"\d\.\d\d of a full pass: expected speed-up \d+\.\dx", result.output)
    assert re.search(r"exit 1 \d+\.\d% · exit 2 \d+\.\d% · exit 3 \d+\.\d%", result.output)
    assert not re.search(r"\d\.\d{5,}", result.output)  # every figure rounded
    report = json.loads((out / "digits" / "1" / "calibration.json").read_text())
    assert _figure(result.output, "final exit accuracy") == round(
        100 * report["test_accuracy_per_exit"][-1], 2
    )
    test = report["test_accuracy_per_exit"]
    better = [k + 1 for k in range(len(test) - 1) if test[k] > test[-1]]
    said = re.findall(r"WARNING: exit (\d) is more accurate than the final exit", result.output)
    assert said == ([str(max(better, key=lambda k: (test[k - 1], k)))] if better else [])
    markdown = (out / "digits" / "1" / "calibration.md").read_text()
    assert "| on the test set | |" in markdown
    assert "| final exit accuracy |" in markdown
    assert "| drop pp | leaving early % | test compute | speed-up |" in markdown
    assert "test hit rate %" in markdown
