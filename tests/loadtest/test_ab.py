"""The A/B tool runs each arm's own code, pairs its rounds, and cleans up its worktrees."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from click.testing import CliRunner

from loadtest.ab import ROOT, Arm, WrongTree, checkout, imported_from, main, summary, verify
from loadtest.server import LiveServer
from tests.loadtest.reports import report


def test_a_folder_without_the_code_is_refused_where_pythonpath_would_have_fooled_us(
    tmp_path: Path,
) -> None:
    # started in a folder with no `service`, Python finds this checkout's (the editable
    # install): the trap that made PYTHONPATH-only A/Bs compare one tree with itself
    assert not imported_from(tmp_path).is_relative_to(tmp_path)
    with pytest.raises(WrongTree, match="would run"):
        verify(tmp_path)


def test_this_checkout_runs_its_own_code() -> None:
    verify(ROOT)
    assert imported_from(ROOT) == (ROOT / "service" / "__init__.py").resolve()


def test_a_revision_is_checked_out_into_a_worktree_that_is_removed_after() -> None:
    with checkout("HEAD") as tree:
        assert tree != ROOT
        verify(tree)
        assert (tree / "service" / "scheduler.py").is_file()
    assert not tree.parent.exists()


def test_the_summary_pairs_rounds_and_counts_wins() -> None:
    server = cast(LiveServer, None)
    base = Arm("base", server, {"ee": [report(100, 1.0), report(200, 0.5), report(100, 1)]})
    new = Arm("changed", server, {"ee": [report(110, 0.9), report(180, 0.6), report(150, 1)]})
    table = summary(base, new)
    row = table.splitlines()[-1]
    # ratios per round 1.1, 0.9, 1.5: median 1.1, not the ratio of medians (150/100)
    assert row.startswith("| ee | 100 (100–200) | 150 (110–180) | 1.100 (0.900–1.500) |")
    assert "| 2 of 3 |" in row


def test_with_full_depth_each_arm_gets_its_early_exit_over_full_depth_ratio() -> None:
    server = cast(LiveServer, None)
    ee, fd = "early exit, 32 × 1", "full depth, 32 × 1"
    base = Arm("base", server, {ee: [report(300, 1), report(330, 1)], fd: [report(100, 1)] * 2})
    new = Arm("changed", server, {ee: [report(350, 1), report(300, 1)], fd: [report(100, 1)] * 2})
    row = summary(base, new).splitlines()[-1]
    # base 3.0 and 3.3, changed 3.5 and 3.0: won one round of two
    assert row.startswith("| early exit / full depth, 32 × 1 | 3.150 (3.000–3.300) |")
    assert "| 3.250 (3.000–3.500) | 1.038 (0.909–1.167) | 1 of 2 |" in row


def test_an_ab_run_measures_both_arms_end_to_end() -> None:
    args = ["HEAD", str(ROOT), "--rounds", "1", "--seconds", "0.5", "-c", "1", "--samples", "64"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("| early exit"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "early exit, 1 × 1"
    assert float(cells[1].split()[0]) > 0
    assert float(cells[2].split()[0]) > 0
