"""The runtime on the bundled text model: per-batch padding, trimming and merging of
survivors give the answers of the plain reference chain (models.textchain).

Widths differ on purpose: a long and a short sentence share a batch, survivors are taken
out and merged with rows of another batch, exactly as stages do between segments.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.manifest import load_manifest
from models.paths import bundled_repository
from models.textchain import text_probabilities
from service.runtime import ModelRuntime
from service.settings import Settings
from service.text import TextInputError, TextRows, length_groups
from tests.service.text_samples import SENTENCES


@pytest.fixture(scope="module")
def version_dir() -> Path:
    return bundled_repository() / "sentiment" / "1"


@pytest.fixture(scope="module")
def runtime(version_dir: Path) -> ModelRuntime:
    rt = ModelRuntime(load_manifest(version_dir), version_dir, Settings())
    rt.warm_up([1, 3])
    return rt


def test_each_stage_matches_the_reference_with_mixed_widths(
    runtime: ModelRuntime, version_dir: Path
) -> None:
    reference = text_probabilities(version_dir, SENTENCES)  # one batch, padded to the longest
    assert runtime.tokens is not None
    # two requests, each padded to its own longest text, merged into one stage-0 batch
    x = runtime.concat([runtime.tokens.encode(SENTENCES[:2]), runtime.tokens.encode(SENTENCES[2:])])
    assert isinstance(x, TextRows)
    assert x.width == runtime.tokens.encode(SENTENCES).width
    assert length_groups(x) is not None  # mixed lengths: the stage splits the batch by length
    rows = np.arange(len(SENTENCES))
    for k in range(runtime.num_segments):
        out = runtime.run(k, x)
        np.testing.assert_allclose(out.probs, reference[k][rows], atol=1e-4)
        if out.hidden is None:
            break
        keep = rows[::2] if k == 0 else rows[: max(len(rows) - 1, 1)]
        picked = np.flatnonzero(np.isin(rows, keep))
        x, rows = runtime.take(out.hidden, picked), keep
        assert isinstance(x, TextRows)
        assert x.width == int(x.mask.sum(axis=1).max())  # trimmed to its longest text


def test_bad_texts_are_named(runtime: ModelRuntime) -> None:
    assert runtime.tokens is not None
    with pytest.raises(TextInputError, match="element 1 is not valid UTF-8"):
        runtime.tokens.encode([b"fine", b"\xff\xfe"])
    with pytest.raises(TextInputError, match="element 0 is empty"):
        runtime.tokens.encode(["   "])
    with pytest.raises(TextInputError, match="the limit is"):
        runtime.tokens.encode(["word " * 10_000])
    long = runtime.tokens.encode(["word " * 500])  # under the byte limit: cut to max_length
    assert long.width == runtime.tokens.max_length
