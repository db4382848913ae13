"""The optional peers' shared parts, in the main virtualenv (the peers' own run in theirs).

Peers are optional by design (`--peers`), so no test here needs a peer's virtualenv; what
a peer serves is checked here: the same segments to full depth, the same labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loadtest import inprocess
from loadtest.peers.onnxchain import FullDepth
from loadtest.peers.runner import PEERS, PeerKind, PeerMissing, check_installed


def test_a_peer_serves_the_labels_exitserve_gives_at_full_depth(
    tiny_model_dir: Path, mnist_samples
) -> None:
    x, _ = mnist_samples
    chain = inprocess.load_chain(tiny_model_dir)
    labels, exits = inprocess.early_exit(chain, x, threshold=2.0)  # nobody leaves early
    peer = FullDepth(tiny_model_dir)
    probs = peer(x)
    assert peer.depth == chain.manifest.num_exits
    assert probs.shape == (len(x), len(chain.manifest.labels))
    np.testing.assert_array_equal(probs.argmax(axis=1), labels)
    assert (exits == peer.depth - 1).all()


def test_a_missing_peer_says_how_to_install_it() -> None:
    kind = PeerKind("nowhere", "no peer", (), "loadtest.peers.none", python="/bin/false")
    with pytest.raises(PeerMissing, match=r"python -m loadtest\.peers install nowhere"):
        check_installed(kind)
    assert set(PEERS) == {"triton", "litserve"}
    assert any(p.startswith("nvidia-pytriton==") for p in PEERS["triton"].packages)
