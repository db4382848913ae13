"""Loading, reloading and unloading versions at run time, with traffic flowing."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.dataplane import DataPlane
from service.errors import NotFound, NotReady
from service.metrics import Metrics
from service.registry import ModelLoadError
from service.settings import Settings
from service.types import InferenceInput, InferenceResult
from tests.service.engine.conftest import Reference, run, started


def add_version(repo: Path, version: str) -> Path:
    """Copy tiny/1 as tiny/<version>, its manifest renumbered."""
    folder = repo / "tiny" / version
    shutil.copytree(repo / "tiny" / "1", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = version
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def repo(tiny_repository: Path, tmp_path: Path) -> Path:
    shutil.copytree(tiny_repository, tmp_path / "repo")
    return tmp_path / "repo"


def test_reload_adds_a_version_without_failing_requests(
    make_settings: Callable[..., Settings], reference: Reference, repo: Path
) -> None:
    async def test() -> None:
        async with started(make_settings(model_repository=repo)) as plane:
            stop = asyncio.Event()

            async def traffic() -> list[InferenceResult]:
                answers = []
                while not stop.is_set():
                    answers.append(await plane.infer(InferenceInput("tiny", None, reference.x[:4])))
                return answers

            clients = [asyncio.create_task(traffic()) for _ in range(3)]
            add_version(repo, "2")
            assert await plane.load_model("tiny") == ["1", "2"]
            await asyncio.sleep(0.05)
            stop.set()
            answers = [a for c in clients for a in await c]  # any failure raises here
            assert {a.version for a in answers} == {"1", "2"}
            assert plane.versions("tiny") == ["1", "2"]
            assert plane.manifest("tiny").version == "2"  # the highest version by default
            assert (await plane.infer(InferenceInput("tiny", "1", reference.x[:1]))).version == "1"

    run(test)


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        ("segment_1.onnx", "not a valid ONNX model"),
        ("manifest.json", "manifest.json is not valid JSON"),
        ("missing", "segment files missing"),
    ],
)
def test_a_broken_version_is_refused_and_the_old_one_keeps_serving(
    make_settings: Callable[..., Settings],
    reference: Reference,
    repo: Path,
    breakage: str,
    reason: str,
) -> None:
    folder = add_version(repo, "3")
    if breakage == "missing":
        (folder / "segment_2.onnx").unlink()
    else:
        (folder / breakage).write_bytes(b"\x00garbage")

    async def test() -> None:
        async with started(make_settings(model_repository=repo)) as plane:
            assert plane.versions("tiny") == ["1"]  # started without the broken version
            with pytest.raises(ModelLoadError) as err:
                await plane.load_model("tiny", "3")
            assert reason in err.value.message
            assert str(repo) not in err.value.message
            assert plane.versions("tiny") == ["1"]
            result = await plane.infer(InferenceInput("tiny", None, reference.x[:2]))
            assert result.version == "1"
            index = {(e["name"], e["version"]): e for e in plane.repository_index()}
            assert index[("tiny", "1")]["state"] == "READY"
            assert index[("tiny", "3")]["state"] == "UNAVAILABLE"
            assert reason in index[("tiny", "3")]["reason"]

    run(test)


def test_unload_a_version_then_the_model(
    make_settings: Callable[..., Settings], reference: Reference, repo: Path
) -> None:
    add_version(repo, "2")

    async def test() -> None:
        async with started(make_settings(model_repository=repo)) as plane:
            assert plane.versions("tiny") == ["1", "2"]
            await plane.unload_model("tiny", "2")
            assert plane.manifest("tiny").version == "1"
            assert not plane.model_ready("tiny", "2")
            with pytest.raises(NotFound):
                await plane.unload_model("tiny", "2")
            await plane.unload_model("tiny")
            assert plane.model_names() == []
            assert not plane.ready
            # in the repository but not loaded: 503 (come back), not 404 (no such model)
            with pytest.raises(NotReady, match="model 'tiny' is in the model repository but not"):
                await plane.infer(InferenceInput("tiny", None, reference.x[:1]))
            await plane.load_model("tiny")
            assert plane.ready
            assert plane.versions("tiny") == ["1", "2"]
            with pytest.raises(Exception, match="not a valid model name"):
                await plane.load_model("../etc")

    run(test)


def test_nothing_is_ready_before_start(make_settings: Callable[..., Settings]) -> None:

    plane = DataPlane(make_settings(), Metrics(CollectorRegistry()))
    assert plane.live
    assert not plane.ready
    assert plane.model_names() == []
    assert not plane.model_ready("tiny")

    async def test() -> None:
        with pytest.raises(NotReady):
            await plane.infer(InferenceInput("tiny", None, np.zeros((1, 1, 28, 28), np.float32)))

    run(test)


def test_unload_and_stop_do_not_hang_on_the_fidelity_task(
    make_settings: Callable[..., Settings], reference: Reference, repo: Path
) -> None:
    """The controller's task is cancelled on unload and on stop; neither may wait on it.
    A guard: the hang seen with asyncio.wait_for (a script on the bundled models, stop
    never returned) did not reproduce under this fixture. The 10 s bounds catch a hang,
    not a slow machine."""

    async def test() -> None:
        async with started(make_settings(model_repository=repo)) as plane:
            add_version(repo, "2")
            await plane.load_model("tiny", "2")
            await plane.infer(InferenceInput("tiny", None, reference.x[:2]))
            await asyncio.wait_for(plane.unload_model("tiny", "2"), 10)
            await plane.infer(InferenceInput("tiny", None, reference.x[:2]))
            await asyncio.wait_for(plane.stop(), 10)

    run(test)
