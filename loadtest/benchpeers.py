"""exitserve against what a user would run instead: optional peers serving the same segments
at full depth (`make bench` with `--peers triton`), interleaved round by round with
exitserve early exit and full depth, the same wrk bodies, labels checked equal.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import click

from loadtest.benchsteps import Load, Server, Step, labels_of, rounds, url_of, warm, wrk_step
from loadtest.figures import Results
from loadtest.peers.runner import PEERS, LivePeer, running_peer

TABLE = "peers"
CLIENTS = ((32, "32 clients"), (1, "concurrency 1"))
FD = {"full_depth": True}


def compare_peers(
    res: Results, names: tuple[str, ...], repo: Path, model: str, load: Load, srv: Server
) -> None:
    """Start every named peer, then measure them and exitserve, round by round."""
    with ExitStack() as stack:
        version, peers = repo / model / "1", []
        for name in names:
            log = load.folder / f"peer-{name}.log"
            peers.append(stack.enter_context(running_peer(PEERS[name], version, model, log)))
        res.run["peers"] = {p.kind.name: p.kind.label for p in peers}
        single, secs = load.bodies(1), res.run["seconds"]
        ours = {"exitserve early exit": single, "exitserve full depth": load.bodies(1, FD)}
        steps: dict[str, Step] = {}
        for conns, text in CLIENTS:
            for who, bodies in ours.items():
                name = f"{who}, {text}"
                steps[name] = wrk_step(res, TABLE, name, lambda: srv, model, bodies, conns, secs)
            for peer in peers:
                name = f"{peer.kind.label}, {text}"
                steps[name] = wrk_step(res, TABLE, name, _fixed(peer), model, single, conns, secs)
        for peer in peers:
            warm(peer, model, single)
        click.echo("peers")
        rounds(steps, res.run["rounds"])
        res.accuracy["peers"] = {p.kind.name: _agreement(p, srv, model, load) for p in peers}


def _fixed(peer: LivePeer) -> Callable[[], Server]:
    return lambda: peer


def _agreement(peer: LivePeer, srv: Server, model: str, load: Load) -> dict[str, float]:
    """The peer's labels against exitserve full depth on the same images, each once."""
    per = 32 if len(load.x) >= 32 else 1
    theirs, truth = labels_of(url_of(peer, model), load.requests(per))
    ours, _ = labels_of(url_of(srv, model), load.requests(per, FD))
    return {
        "images": len(truth),
        "accuracy": float((theirs == truth).mean()),
        "agreement_with_full_depth": float((theirs == ours).mean()),
    }
