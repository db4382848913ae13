"""The fidelity section of `make bench`: static thresholds vs the controller, through the
real server, over a stream that drifts (clean, three shifts, another data set, clean).

Two servers on the same repository: one with fidelity control off (the calibrated
thresholds, as served before issue 11), one with the defaults. Each serves the same
stream in order at saturation; the static server also answers it at full depth, the
reference every early answer is compared with. Then the shadow cost at saturation on
clean data: wrk against both servers, interleaved rounds.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import click
import numpy as np
import numpy.typing as npt

from loadtest.benchcpu import CPU_ENV, STATIC_ENV
from loadtest.benchsteps import Load, Step, rounds, url_of, warm, wrk_step
from loadtest.drift import DriftStream, Phase, drift_stream
from loadtest.drift_replay import LEVEL, ROLLING, TAIL, first_reaching
from loadtest.fidelitystream import Answers, Shadows, serve_phases, serve_stream
from loadtest.figures import Json, Results, per_round, spread
from loadtest.server import LiveServer, running_server
from loadtest.wrk import Bodies, run_wrk
from models.manifest import load_manifest

TABLE = "fidelity_cost"
OFF, ON = "fidelity off (static thresholds)", "fidelity on (controller)"
COST = ((1, 32), (32, 4))  # (samples per request, wrk connections)
WINDOW = 250  # samples per point of the plotted series
RECOVERY_POINTS = 0.05  # early share back within this of the static policy's


def run_fidelity(res: Results, repo: Path, model: str, load: Load, phase_samples: int) -> None:
    """The drifting stream through both servers, then the shadow cost at saturation."""
    stream = drift_stream(phase_samples)
    cumulative = _cumulative(repo / model / "1")
    res.run["fidelity"] = {
        "phase_samples": phase_samples,
        "per_request": 4,
        "concurrency": 16,
    }
    with ExitStack() as stack:
        static = stack.enter_context(running_server(repo, load.folder, env=STATIC_ENV))
        with running_server(repo, load.folder, env=CPU_ENV) as controlled:
            click.echo("fidelity: the drifting stream, static thresholds, then the controller")
            fixed = _serve(static, model, stream, len(cumulative))
            steered = _serve(controlled, model, stream, len(cumulative))
            target = float(_fidelity(controlled, model)["target"])
        reference = serve_stream(url_of(static, model), stream.x, 256, 2, {"full_depth": True})
        section = stream_json(stream, fixed, steered, reference.label, cumulative, target)
        res.extra["fidelity"] = section
        res.extra.update(headline(section))
        # a fresh controller for the cost: the stream's one may still be on its way back
        fresh = stack.enter_context(running_server(repo, load.folder, env=CPU_ENV))
        click.echo("fidelity: shadow cost at saturation on clean data")
        rounds(cost_steps(res, model, load, static, fresh), res.run["rounds"])
        changes = _fidelity(fresh, model)["changes"]
        res.run["fidelity"]["cost_threshold_changes"] = len(changes)
        res.run["fidelity"]["cost_change_reasons"] = [c["reason"] for c in changes]
    for per, _ in COST:
        on, off = (res.row(TABLE, f"{name}, {per}/request").reports for name in (ON, OFF))
        ratio = per_round([r.samples_per_s for r in on], [r.samples_per_s for r in off], "ratio")
        cost = None if ratio is None else spread([100 * (1 - v) for v in ratio["rounds"]])
        res.extra[f"fidelity_shadow_cost_pct_{per}"] = cost


def _serve(
    srv: LiveServer, model: str, stream: DriftStream, exits: int
) -> tuple[Answers, list[Shadows]]:
    bounds = [p.stop for p in stream.phases]
    return serve_phases(url_of(srv, model), srv.metrics_url, model, stream.x, bounds, exits)


def _cumulative(version_dir: Path) -> npt.NDArray[np.float64]:
    """Each exit's share of full-depth compute (segments up to and including it)."""
    segments = load_manifest(version_dir).segments
    return np.asarray([s.cumulative_fraction for s in segments], dtype=np.float64)


def _fidelity(srv: LiveServer, model: str) -> Json:
    with urllib.request.urlopen(f"{srv.url}/v2/models/{model}/fidelity", timeout=10) as resp:
        out: Json = json.loads(resp.read())
    return out


def cost_steps(
    res: Results, model: str, load: Load, static: LiveServer, controlled: LiveServer
) -> dict[str, Step]:
    """wrk on clean images against both servers: what shadows cost in throughput."""
    secs, steps = res.run["seconds"], dict[str, Step]()
    warm(static, model, load.bodies(1))
    res.run["fidelity"]["settle_s"] = settle(controlled, model, load.bodies(1))
    for per, connections in COST:
        bodies = load.bodies(per)
        for name, srv in ((OFF, static), (ON, controlled)):
            row = f"{name}, {per}/request"
            steps[row] = wrk_step(res, TABLE, row, _const(srv), model, bodies, connections, secs)
    return steps


def settle(srv: LiveServer, model: str, bodies: Bodies, most_s: int = 60) -> int:
    """Load the server until its shadow fraction stops falling (the steady state on
    familiar traffic, what the cost is about); returns the seconds it took."""
    previous = float(_fidelity(srv, model)["shadow_fraction"])
    for second in range(1, most_s + 1):
        run_wrk(url_of(srv, model), bodies, 8, 1.0)
        fraction = float(_fidelity(srv, model)["shadow_fraction"])
        if fraction == previous:
            return second
        previous = fraction
    raise click.ClickException(f"the shadow fraction still moved after {most_s} s of load")


def _const(srv: LiveServer) -> Callable[[], LiveServer]:
    return lambda: srv


def stream_json(
    stream: DriftStream,
    fixed: tuple[Answers, list[Shadows]],
    steered: tuple[Answers, list[Shadows]],
    reference: npt.NDArray[np.int64],
    cumulative: npt.NDArray[np.float64],
    target: float,
) -> Json:
    """Per-phase figures of both policies, the recovery, and the series for the plot."""
    last = len(cumulative) - 1
    out: Json = {"target_pct": 100 * target, "level_pct": 100 * LEVEL, "tail": TAIL}
    out["rolling"] = ROLLING
    out["recovery_points_pct"] = 100 * RECOVERY_POINTS
    out["window"] = WINDOW
    for key, (ans, shadows) in (("static", fixed), ("controller", steered)):
        out[key] = [
            phase_json(ans, reference, p, cumulative, shadows[i : i + 2], _before(stream, i))
            for i, p in enumerate(stream.phases)
        ]
        out[f"{key}_series"] = series(ans, reference, last)
        out[f"{key}_errors"] = ans.errors
    out["recovery_samples"] = recovery(fixed[0], steered[0], stream.phases[-1], last)
    return out


def _before(stream: DriftStream, i: int) -> int | None:
    """The row that ends the phase before phase i (None for the first)."""
    return stream.phases[i - 1].stop - 1 if i else None


def phase_json(
    ans: Answers,
    reference: npt.NDArray[np.int64],
    phase: Phase,
    cumulative: npt.NDArray[np.float64],
    shadows: list[Shadows],
    previous_row: int | None,
) -> Json:
    """Agreement, early share, compute, throughput and shadow cost of one phase."""
    span, last = slice(phase.start, phase.stop), len(cumulative) - 1
    agree = (ans.label[span] == reference[span]).astype(np.float64)
    early = ans.exit[span] < last
    spent = cumulative[np.clip(ans.exit[span], 0, last)]
    before, after = shadows
    runs = [after.run[k] - before.run[k] for k in range(last)]
    extra = sum(r * (1.0 - cumulative[k]) for k, r in enumerate(runs))
    began = 0.0 if previous_row is None else float(ans.done_s[previous_row])
    seconds = float(np.nanmax(ans.done_s[span])) - began
    return {
        "name": phase.name,
        "samples": phase.stop - phase.start,
        "agreement_pct": 100 * float(agree.mean()),
        "agreement_tail_pct": 100 * float(agree[-TAIL:].mean()),
        "early_share_pct": 100 * float(early.mean()),
        "early_share_tail_pct": 100 * float(early[-TAIL:].mean()),
        "compute": float(spent.mean()),
        "samples_per_s": (phase.stop - phase.start) / seconds if seconds > 0 else None,
        "shadow_samples": float(sum(runs)),
        "shadow_shed": after.shed - before.shed,
        "shadow_compute_pct": 100.0 * extra / (float(spent.sum()) + extra),
        "reaction_samples": first_reaching(agree, LEVEL),
    }


def series(ans: Answers, reference: npt.NDArray[np.int64], last: int) -> Json:
    """Agreement, early share and samples/s per window of WINDOW samples (the plot)."""
    n = len(ans.label) // WINDOW * WINDOW
    shape = (-1, WINDOW)
    agree = (ans.label[:n] == reference[:n]).reshape(shape).mean(axis=1)
    early = (ans.exit[:n] < last).reshape(shape).mean(axis=1)
    ends = np.nanmax(ans.done_s[:n].reshape(shape), axis=1)
    rate = WINDOW / np.diff(np.concatenate([[0.0], ends]))
    return {
        "agreement": _round(agree),
        "early_share": _round(early),
        "samples_per_s": _round(rate, 1),
    }


def _round(values: npt.NDArray[np.float64], digits: int = 4) -> list[float]:
    return [round(float(v), digits) for v in values]


def recovery(fixed: Answers, steered: Answers, phase: Phase, last: int) -> int | None:
    """Samples into the last phase until the controller's rolling early share is within
    RECOVERY_POINTS of the static policy's share on that same phase."""
    span = slice(phase.start, phase.stop)
    reference = float((fixed.exit[span] < last).mean())
    early = (steered.exit[span] < last).astype(np.float64)
    return first_reaching(early, reference - RECOVERY_POINTS)


def headline(section: Json) -> Json:
    """The figures the targets read: the worst shift, the clean saving kept, the recovery."""
    static, steered = section["static"], section["controller"]
    shifts = [p["agreement_tail_pct"] for p in steered if p["name"] != "clean"]
    clean = [i for i, p in enumerate(static) if p["name"] == "clean"]
    first = clean[0] if clean else 0
    saving = 1.0 - static[first]["compute"]
    kept = 100.0 * (1.0 - steered[first]["compute"]) / saving if saving > 0 else None
    return {
        "fidelity_min_shift_agreement_pct": min(shifts) if shifts else None,
        "fidelity_clean_saving_kept_pct": kept,
        "fidelity_recovery_samples": section["recovery_samples"],
    }
