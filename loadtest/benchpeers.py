"""exitserve against what a user would run instead: optional peers serving the same segments
at full depth (`make bench --peers triton --peers litserve`), interleaved round by round
with exitserve early exit and full depth, the same wrk bodies (JSON ones for a peer that
reads only JSON, sent to exitserve too), labels checked equal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import click

from loadtest.benchsteps import Load, Server, Step, labels_of, rounds, url_of, warm, wrk_step
from loadtest.figures import Json, Results, per_round
from loadtest.peers.runner import PEERS, VENVS, LivePeer, PeerKind, running_peer
from loadtest.wrk import Bodies

TABLE = "peers"
LOGS = VENVS / "logs"
CLIENTS = ((32, "32 clients"), (1, "concurrency 1"))
FD = {"full_depth": True}
# A peer starts afresh every round, where exitserve stays up: it gets three seconds at 32
# clients first, so every batch size it will form has run once (measured: PyTriton's first
# seconds ran at a third of its settled rate).
PEER_WARM = (32, 3.0)


def compare_peers(
    res: Results, names: tuple[str, ...], repo: Path, model: str, load: Load, srv: Server
) -> None:
    """exitserve's rows and each peer's, round by round; a peer runs only for its own step
    (started, warmed, measured, stopped), so an idle peer never takes CPU from the others."""
    kinds = [PEERS[n] for n in names]
    res.run["peers"] = {k.name: k.label for k in kinds}
    secs, encodings = res.run["seconds"], sorted({k.encoding for k in kinds})
    single: dict[str, Bodies] = {e: load.bodies(1, None, e) for e in encodings}
    steps: dict[str, Step] = {}
    for conns, text in CLIENTS:
        for e in encodings:
            for mode, params in (("early exit", None), ("full depth", FD)):
                name = f"exitserve {mode}{'' if e == 'binary' else ' (JSON)'}, {text}"
                bodies = load.bodies(1, params, e)
                steps[name] = wrk_step(res, TABLE, name, lambda: srv, model, bodies, conns, secs)
    for kind in kinds:
        steps[kind.name] = _peer_step(res, kind, (repo / model / "1", model), load, srv, single)
    click.echo("peers")
    rounds(steps, res.run["rounds"])
    res.extra["peers"] = {k.name: against_exitserve(res, k) for k in kinds}


def against_exitserve(res: Results, kind: PeerKind) -> Json:
    """The peer over exitserve (same bodies), round by round: throughput at 32 clients
    against full depth and early exit, and p50 at concurrency 1."""
    suffix = "" if kind.encoding == "binary" else " (JSON)"

    def col(name: str, key: str) -> list[float]:
        return [float(getattr(r, key)) for r in res.row(TABLE, name).reports]

    peer32, peer1 = (
        col(f"{kind.label}, 32 clients", "samples_per_s"),
        f"{kind.label}, concurrency 1",
    )
    return {
        "vs_full_depth_32": per_round(
            peer32, col(f"exitserve full depth{suffix}, 32 clients", "samples_per_s"), "ratio"
        ),
        "vs_early_exit_32": per_round(
            peer32, col(f"exitserve early exit{suffix}, 32 clients", "samples_per_s"), "ratio"
        ),
        "p50_c1_minus_full_depth_ms": per_round(
            col(peer1, "p50_ms"),
            col(f"exitserve full depth{suffix}, concurrency 1", "p50_ms"),
            "diff",
        ),
    }


def _peer_step(
    res: Results,
    kind: PeerKind,
    where: tuple[Path, str],
    load: Load,
    srv: Server,
    single: Mapping[str, Bodies],
) -> Step:
    """Start the peer, warm it, measure it at each client count, check its labels once."""
    (version, model), bodies = where, single[kind.encoding]
    holder: list[LivePeer] = []
    measures = [
        wrk_step(
            res,
            TABLE,
            f"{kind.label}, {text}",
            _first(holder),
            model,
            bodies,
            conns,
            res.run["seconds"],
        )
        for conns, text in CLIENTS
    ]

    def step() -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        with running_peer(kind, version, model, LOGS / f"{kind.name}.log") as peer:
            holder[:] = [peer]
            warm(peer, model, bodies, *PEER_WARM)
            for measure in measures:
                measure()
            checks = res.accuracy.setdefault("peers", {})
            if kind.name not in checks:
                checks[kind.name] = _agreement(peer, srv, model, load)

    return step


def _first(holder: list[LivePeer]) -> Callable[[], Server]:
    return lambda: holder[0]


def _agreement(peer: LivePeer, srv: Server, model: str, load: Load) -> dict[str, float]:
    """The peer's labels against exitserve full depth on the same images, each once."""
    per = 32 if len(load.x) >= 32 else 1
    theirs, truth = labels_of(url_of(peer, model), load.requests(per, None, peer.kind.encoding))
    ours, _ = labels_of(url_of(srv, model), load.requests(per, FD))
    return {
        "images": len(truth),
        "accuracy": float((theirs == truth).mean()),
        "agreement_with_full_depth": float((theirs == ours).mean()),
    }
