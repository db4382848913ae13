"""The bundled text model `sentiment` v1: a valid version that meets issue 12's targets.

The figures are the build's own test-set measurements (2,550 held-out Rotten Tomatoes
snippets), recorded in the manifest; the version is also run here from strings on bare
onnxruntime, so a broken tokenizer file or segment chain fails even if the figures look fine.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.manifest import load_manifest
from models.paths import bundled_model_dir
from models.textchain import text_probabilities

NAME = "sentiment"


@pytest.fixture(scope="module")
def figures() -> dict[str, float | list[float]]:
    manifest = load_manifest(bundled_model_dir(NAME))
    assert manifest.calibration is not None
    return manifest.calibration.test


def test_sentiment_is_a_text_version_with_its_tokenizer() -> None:
    version = bundled_model_dir(NAME)
    manifest = load_manifest(version)
    assert manifest.labels == ["fresh", "rotten"]
    assert manifest.text is not None
    assert manifest.text.max_length == 64
    assert manifest.num_exits == 4
    assert manifest.training is not None
    assert manifest.training.mode == "two_stage"
    assert manifest.training.dataset == "rotten-tomatoes"


def test_sentiment_meets_the_acceptance_targets(figures: dict[str, float | list[float]]) -> None:
    """Issue 12: final exit >= 82%; calibrated within 1 pp of it; >= 50% leave before the
    last exit; compute fraction <= 0.6 (all on the test split)."""
    final, calibrated = figures["final_exit_accuracy"], figures["accuracy"]
    distribution = figures["exit_distribution"]
    assert isinstance(final, float)
    assert isinstance(calibrated, float)
    assert isinstance(distribution, list)
    assert final >= 0.82
    assert final - calibrated <= 0.01
    assert 1 - distribution[-1] >= 0.5
    assert figures["compute_fraction"] <= 0.6


def test_sentiment_answers_plain_sentences() -> None:
    texts = [
        "A wonderful, moving film with superb performances.",
        "A dull, lifeless mess that wastes its talented cast.",
    ]
    probs = text_probabilities(bundled_model_dir(NAME), texts)
    assert probs.shape == (4, 2, 2)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    assert probs[-1, :, 0].argmax() == 0  # the first is the fresh one at the final exit
    assert probs[-1].argmax(axis=-1).tolist() == [0, 1]
