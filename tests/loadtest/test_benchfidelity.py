"""The fidelity benchmark's pieces against a real server on the tiny model.

The stream is served in order and every row comes back; rows answered at the last exit
equal the same server's full-depth answers (a real invariant, so the comparison can
fail); the shadow counters add up; the rendered section holds only numbers of its json.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loadtest.benchfidelity import STATIC_ENV, _cumulative, headline, stream_json
from loadtest.benchsteps import url_of
from loadtest.doccheck import stray_numbers
from loadtest.drift import drift_stream
from loadtest.fidelitydoc import fidelity_section
from loadtest.fidelitystream import serve_phases, serve_stream
from loadtest.figures import finite

PHASES = ("clean", "noise", "clean")
MODEL = "tiny"


def test_stream_through_a_real_server_renders_only_its_own_numbers(
    live_server: Any, tiny_repository: Any
) -> None:
    stream = drift_stream(300, PHASES, seed=1)
    cumulative = _cumulative(tiny_repository / MODEL / "1")
    exits, bounds = len(cumulative), [p.stop for p in stream.phases]
    with live_server() as on, live_server(env=STATIC_ENV) as off:
        runs = [
            serve_phases(url_of(s, MODEL), s.metrics_url, MODEL, stream.x, bounds, exits, 3, 4)
            for s in (off, on)
        ]
        reference = serve_stream(url_of(off, MODEL), stream.x, 64, 2, {"full_depth": True})
    for answers, counters in runs:
        assert answers.errors == 0
        assert answers.label.min() >= 0
        assert set(np.unique(answers.exit)) <= set(range(exits))
        deep = answers.exit == exits - 1
        assert np.array_equal(answers.label[deep], reference.label[deep])
        assert len(counters) == len(PHASES) + 1
        runs_per_exit = np.array([c.run for c in counters])
        assert (np.diff(runs_per_exit, axis=0) >= 0).all()  # counters never go back
    assert sum(runs[0][1][-1].run) == 0  # fidelity off: no shadows at all
    section = stream_json(stream, runs[0], runs[1], reference.label, cumulative, 0.97)
    assert sum(p["shadow_samples"] for p in section["controller"]) == sum(runs[1][1][-1].run)
    derived = {"fidelity": section, **headline(section), "fidelity_shadow_cost_pct_1": None}
    run = {"fidelity": {"phase_samples": 300, "per_request": 3, "concurrency": 4}}
    run["fidelity"] |= {"settle_s": 2, "cost_threshold_changes": 0}
    doc = finite({"run": run, "derived": derived})
    lines = fidelity_section(doc, [])
    markdown = "\n".join(["<!-- generated:begin -->", *lines, "<!-- generated:end -->"])
    assert stray_numbers(markdown, doc) == []
    assert all(f"| {name} |" in markdown for name in PHASES)
