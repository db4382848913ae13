"""docs/benchmarks.md says only what docs/benchmarks.json holds.

The committed document is checked against its json; a document rendered from made-up
figures passes the same check, and a number typed into it does not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loadtest import gpubench
from loadtest.benchcpu import C1, C1_NO_INLINE, C1_PY, EE1, EE1_PY, EE32, FD1, FD32, ROLES
from loadtest.benchdoc import GEN_BEGIN, GEN_END, NOTES_BEGIN, NOTES_END, write_doc
from loadtest.benchpeers import against_exitserve
from loadtest.benchtext import client_sentence, peer_sentences
from loadtest.doccheck import generated_sections, stray_numbers
from loadtest.figures import Results, Row, to_json
from loadtest.peers.runner import PEERS
from tests.loadtest.reports import report

DOCS = Path(__file__).resolve().parents[2] / "docs"


def results(python_rates: tuple[float, ...] = (400.0, 410.0, 420.0)) -> Results:
    """Three rounds of made-up figures in every table the document renders."""
    res = Results(
        run={
            "started": "2031-02-03 04:05 UTC",
            "mode": "full",
            "seconds": 6.5,
            "rounds": 3,
            "samples": 4000,
            "command": "make bench  # python -m loadtest.bench --seconds 6.5 --rounds 3",
            "inproc_batch": 32,
            "loop_32": 4,
            "loop_1": 32,
            "provider": "CPUExecutionProvider",
            "roles": {k: v[1] for k, v in ROLES.items()},
        },
        machine={
            "cpu_model": "Example CPU 9000",
            "cores": 3,
            "cores_present": 7,
            "os": "Linux 6.1",
            "python": "3.11.7",
            "libraries": {"onnxruntime-gpu": "1.31.1"},
            "wrk": "4.1.0",
        },
    )
    for name, rate in ((EE1, 1000.0), (FD1, 250.0), (EE32, 2000.0), (FD32, 400.0)):
        res.add("saturation", Row(name, "wrk", 32, 1, [report(rate + i) for i in range(3)]))
    py = Row(EE1_PY, "Python (aiohttp)", 32, 1, [report(r) for r in python_rates])
    res.add("saturation", py)
    for name, p50 in ((C1, 0.7), (C1_PY, 0.9), (C1_NO_INLINE, 1.1)):
        res.add("c1", Row(name, "x", 1, 1, [report(900.0, p50 + i / 100) for i in range(3)]))
    peer = PEERS["triton"]
    res.run["peers"] = {"triton": peer.label}
    for name, rate, p50 in (
        ("exitserve early exit, 32 clients", 1000.0, 20.0),
        ("exitserve full depth, 32 clients", 250.0, 80.0),
        ("exitserve full depth, concurrency 1", 400.0, 2.5),
        (f"{peer.label}, 32 clients", 300.0, 90.0),  # ahead of full depth, behind early exit
        (f"{peer.label}, concurrency 1", 390.0, 2.5),  # p50 about the same
    ):
        reps = [report(rate + i, p50 + i / 10) for i in range(3)]
        res.add("peers", Row(name, "wrk", 32, 1, reps))
    res.extra["peers"] = {"triton": against_exitserve(res, peer)}
    res.scalars = {
        "inproc_ee": [2100.0, 2150.0, 2125.0],
        "inproc_fd": [410.0, 420.0, 415.0],
        "inproc_ee_cpu_ms": [0.41, 0.43, 0.42],
        "inproc_single_ms": [0.5, 0.52, 0.51],
        "loop_ee_32": [2050.0, 2060.0, 2070.0],
        "loop_ee_1": [1500.0, 1510.0, 1520.0],
        "oracle": [0.2, 0.21, 0.19],
        "policy": [0.198, 0.2, 0.199],
    }
    res.accuracy = {
        "images": 4000,
        "per_request": 100,
        "early_exit": 0.9852,
        "full_depth": 0.9898,
        "loss_pp": 0.46,
        "agreement": 0.991,
        "peers": {"triton": {"images": 512, "accuracy": 0.9941, "agreement_with_full_depth": 1.0}},
    }
    return res


def render(tmp_path: Path, res: Results) -> tuple[str, Any]:
    out = tmp_path / "benchmarks.md"
    block, gpu = gpubench.resolve(gpubench.Section(None, None), out)
    doc = to_json(res, ROLES, gpu)
    write_doc(doc, out, [], block)
    return out.read_text(), json.loads(out.with_suffix(".json").read_text())


def test_the_committed_document_holds_only_numbers_from_its_json() -> None:
    markdown = (DOCS / "benchmarks.md").read_text()
    doc = json.loads((DOCS / "benchmarks.json").read_text())
    assert generated_sections(markdown), "docs/benchmarks.md has no generated section"
    assert stray_numbers(markdown, doc) == []


def test_a_rendered_document_passes_and_a_typed_number_does_not(tmp_path: Path) -> None:
    markdown, doc = render(tmp_path, results())
    assert stray_numbers(markdown, doc) == []
    assert "2031-02-03 04:05 UTC" in markdown
    assert "labels equal to exitserve full depth's on 1.0000 of them" in markdown
    assert "Example CPU 9000, 3 cores usable (7 present)" in markdown  # read, not typed
    typed = markdown.replace(GEN_END, "Latency fell from 2.35 to 1.45 ms.\n" + GEN_END)
    assert stray_numbers(typed, doc) == ["2.35", "1.45"]
    rounded = markdown.replace("1001 (1000–1002)", "1001 (1000–1003)", 1)
    assert rounded != markdown
    assert stray_numbers(rounded, doc) == ["1003"]


def test_hand_written_notes_are_kept_and_not_checked(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    notes = f"{NOTES_BEGIN}\n## Notes (by hand, 2026-11-26)\nonce 637 req/s\n{NOTES_END}"
    out.write_text(f"# Benchmarks\n\n{GEN_BEGIN}\nstale figures 1234\n{GEN_END}\n\n{notes}\n")
    markdown, doc = render(tmp_path, results())
    assert notes in markdown
    assert "stale figures" not in markdown
    assert stray_numbers(markdown, doc) == []


@pytest.mark.parametrize(
    ("python_rates", "verdict"),
    [
        ((400.0, 410.0, 420.0), "the client's limit"),  # clearly below wrk's 1000-1002
        ((990.0, 1001.0, 1010.0), "cannot tell"),  # ranges overlap
    ],
)
def test_the_reading_follows_the_figures(
    tmp_path: Path, python_rates: tuple[float, ...], verdict: str
) -> None:
    _, doc = render(tmp_path, results(python_rates))
    (sentence,) = client_sentence(doc, EE1, EE1_PY)
    assert verdict in sentence


def test_targets_are_judged_from_the_derived_figures(tmp_path: Path) -> None:
    res = results()
    _, doc = render(tmp_path, res)
    met = {t["key"]: t["met"] for t in doc["targets"]}
    # 1000/250 = 4.0 >= 3.5; 0.46 <= 0.5 pp; 0.70 - 0.50 = 0.20 <= 0.25 ms; 2001/2060 >= 90%
    fidelity = {k for k in met if k.startswith(("fidelity_", "text_"))}  # other sections
    assert {k: v for k, v in met.items() if k not in fidelity} == dict.fromkeys(
        met.keys() - fidelity, True
    )
    assert {met[k] for k in fidelity} == {None}  # not measured in these figures
    assert doc["derived"]["ee_vs_fd_1"]["rounds"] == pytest.approx([4.0, 1001 / 251, 1002 / 252])
    res.scalars["loop_ee_32"] = [3000.0, 3000.0, 3000.0]  # the server at 2/3 of its ceiling
    _, doc = render(tmp_path, res)
    met = {t["key"]: t["met"] for t in doc["targets"]}
    assert met["server_vs_loop_32_pct"] is False


def test_the_reading_says_where_a_peer_is_ahead_and_behind(tmp_path: Path) -> None:
    markdown, doc = render(tmp_path, results())
    (sentence,) = peer_sentences(doc)
    assert "ahead on throughput against full depth" in sentence  # 300/250 in every round
    assert "behind on throughput against early exit" in sentence  # 300/1000
    assert "not told apart on p50 at concurrency 1 against full depth" in sentence  # ±0
    assert sentence in markdown
    assert stray_numbers(markdown, doc) == []
