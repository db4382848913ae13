"""One model lookup per request: the HTTP layer decodes against a version and queues on it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from service.registry import Loaded
from service.settings import Settings
from service.types import InferenceInput, PolicyOverride
from tests.service.engine.conftest import Reference, run, started


def test_submit_runs_on_the_version_it_was_given_without_a_second_lookup(
    make_settings: Callable[..., Settings], reference: Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second lookup in `submit` is where a reload could land between decode and queue;
    with the version passed down there is none (the registry refuses any further lookup)."""

    async def test() -> None:
        async with started(make_settings()) as plane:
            loaded = plane.lookup("tiny")

            def refuse(*_: object) -> Loaded:
                raise AssertionError("submit looked the model up again")

            monkeypatch.setattr(plane.registry, "get", refuse)
            request = InferenceInput("tiny", None, reference.x[:3], PolicyOverride())
            result = await plane.submit(request, loaded)
            at_exit = [reference.probs[k][i].argmax() for i, k in enumerate(result.exit_index)]
            assert list(result.label) == at_exit

    run(test)
