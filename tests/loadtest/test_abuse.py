"""`python -m loadtest.abuse --out` in miniature: every check runs against a real server on
the bundled models and its rows land between the markers, the prose around them kept.

Sizes are tiny (a one-second head deadline, counted after five; two 1 MiB bodies a round);
what is asserted is what the run measured, not how fast.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from loadtest.abuse import CHECKS
from loadtest.abuse.cli import BEGIN, END, main

DOC = f"# Reliability\n\nBefore.\n\n{BEGIN}\nold table\n{END}\n\nAfter.\n"
QUICK = ["--connections", "4", "--wait-s", "5", "--header-mib", "1", "--requests", "5"]
QUICK += [
    "--body-mib",
    "1",
    "--bodies",
    "2",
    "--rounds",
    "2",
    "--server-arg=--header-timeout-s",
    "--server-arg=1",
]


def rows(section: str) -> dict[tuple[str, str], str]:
    """The table's rows as {(check, measure): value}."""
    cells = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("| ")]
    return {(c[0].strip(), c[1].strip()): c[2].strip() for c in cells[1:] if len(c) == 3}


def test_every_check_writes_its_rows_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "reliability.md"
    doc.write_text(DOC)
    result = CliRunner().invoke(main, ["--out", str(doc), *QUICK])
    assert result.exit_code == 0, result.output
    text = doc.read_text()
    assert text.startswith("# Reliability\n\nBefore.\n\n" + BEGIN)
    assert text.endswith(END + "\n\nAfter.\n")
    assert "old table" not in text
    table = rows(text)
    assert {check for check, _ in table} == set(CHECKS)
    assert table[("bad input", "5xx answers")].startswith("0 of ")
    codes = [int(m.split()[1]) for c, m in table if c == "bad input" and m.startswith("answered")]
    assert codes
    assert all(400 <= code < 500 for code in codes), codes  # every case refused, none 5xx
    for port in ("slowloris", "slowloris on the metrics port"):
        assert table[(port, "answered 408")] == "4 of 4"
        assert table[(port, "partial heads still open after 5 s")] == "0 of 4"
    assert table[("slowloris on the metrics port", "a scrape while they were open")] == "200"
    memory = {m: v for (c, m), v in table.items() if c == "memory"}
    answers = [v for m, v in memory.items() if m.endswith(", answers")]
    assert answers == ["400: 2", "400: 4"] * 2  # JSON and binary: sequential, 2 × 2 concurrent
    aborted = [v for m, v in memory.items() if m.endswith("counted in exitserve_requests_total")]
    assert aborted == ["499: 2"]
