"""The Dockerfile, without a Docker engine: hadolint, then what it says checked against the
server (ports, routes, settings) and against the onnxruntime-gpu it installs (CUDA, cuDNN)."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.manifests import (
    DOCKERFILE,
    ENV_PREFIX,
    REQUIREMENTS,
    AppRoutes,
    Stage,
    dockerfile_stages,
    dockerignore_rules,
    env_pairs,
    in_build_context,
    pinned_requirements,
    pyproject,
    setting_default,
    setting_names,
    stage,
    tool,
)

# Ubuntu release of an nvidia/cuda tag -> its python3.
UBUNTU_PYTHON = {"22.04": "3.10", "24.04": "3.12"}


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return dockerfile_stages(DOCKERFILE.read_text())


def _keywords(s: Stage, keyword: str) -> list[str]:
    return [i.args for i in s.instructions if i.keyword == keyword]


def test_hadolint() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


def test_variants(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    """Multi-stage: builder venv -> runtime, on a CUDA base or (VARIANT=cpu) python slim."""
    args, stages = dockerfile
    assert args["VARIANT"] == "gpu"
    assert stage(stages, "base-gpu").base == "${CUDA_IMAGE}"
    assert stage(stages, "base-cpu").base == "${PYTHON_IMAGE}"
    assert stage(stages, "builder").base == "base-${VARIANT}"
    runtime = stages[-1]
    assert runtime.name == "runtime"
    assert runtime.base == "base-${VARIANT}"
    copies = _keywords(runtime, "COPY")
    assert "--from=builder /opt/venv /opt/venv" in copies, "runtime takes the builder's venv"
    assert not any("requirements" in c or c.startswith(". ") for c in copies), (
        "nothing is installed in the runtime stage itself"
    )
    for tag in (args["CUDA_IMAGE"], args["PYTHON_IMAGE"]):
        assert ":" in tag, tag
        assert not tag.endswith(":latest"), tag


def test_cuda_base_matches_onnxruntime_gpu(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    """The CUDA major of the base image is the one onnxruntime-gpu was built for, and the
    image carries cuDNN of the major the wheel asks for."""
    args, _ = dockerfile
    image = args["CUDA_IMAGE"]
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu(\d+\.\d+)", image)
    assert match, f"{image}: want nvidia/cuda:<x.y.z>-cudnn-runtime-ubuntu<release>"
    cuda_major = match.group(1)

    pinned = pinned_requirements()["onnxruntime-gpu"]
    installed = importlib.metadata.version("onnxruntime-gpu")
    if installed != pinned:
        pytest.skip(f"dev venv has onnxruntime-gpu {installed}, the image pins {pinned}")
    from onnxruntime.capi import build_and_package_info

    built_for = str(build_and_package_info.cuda_version)
    assert built_for.split(".")[0] == cuda_major, f"onnxruntime-gpu built for CUDA {built_for}"

    # The wheel's `cudnn` extra names the cuDNN it loads, e.g. nvidia-cudnn-cu13~=9.0.
    extras = [Requirement(r) for r in importlib.metadata.requires("onnxruntime-gpu") or []]
    cudnn = [r for r in extras if r.name.startswith("nvidia-cudnn-cu")]
    assert cudnn, "onnxruntime-gpu no longer names its cuDNN"
    assert cudnn[0].name == f"nvidia-cudnn-cu{cuda_major}", cudnn[0]
    cudnn_major = next(iter(cudnn[0].specifier)).version.split(".")[0]
    # nvidia/cuda's `-cudnn-` images for CUDA 12.x/13.x carry cuDNN 9.
    assert cudnn_major == "9", f"cuDNN {cudnn_major}: re-check the base image's cuDNN"


def test_both_variants_run_one_python(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    """One pinned dependency set serves both images only if their Python minors agree."""
    args, _ = dockerfile
    ubuntu = args["CUDA_IMAGE"].rsplit("ubuntu", 1)[1]
    slim = re.fullmatch(r"python:(\d+\.\d+)-slim(-\w+)?", args["PYTHON_IMAGE"])
    assert slim, args["PYTHON_IMAGE"]
    assert UBUNTU_PYTHON[ubuntu] == slim.group(1)
    requires = pyproject()["project"]["requires-python"]
    from packaging.specifiers import SpecifierSet

    assert slim.group(1) + ".0" in SpecifierSet(requires)


def test_builder_installs_exactly_the_pinned_set(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    """The builder installs the requirements file and the package, both --no-deps, then
    `pip check`s: the pins are the whole set (test_image_install runs the same)."""
    _, stages = dockerfile
    runs = " && ".join(_keywords(stage(stages, "builder"), "RUN"))
    assert "pip install --no-cache-dir --no-deps -r /tmp/requirements-serve.txt" in runs
    assert "pip install --no-cache-dir --no-deps /src" in runs
    assert "pip check" in runs
    copies = _keywords(stage(stages, "builder"), "COPY")
    assert "deploy/requirements-serve.txt /tmp/requirements-serve.txt" in copies


def test_pins_cover_the_serving_dependencies() -> None:
    pins = pinned_requirements()
    project = pyproject()["project"]
    for raw in project["dependencies"]:
        req = Requirement(raw)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} (pyproject) is not pinned in {REQUIREMENTS.name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]}"
    # No training stack in the serving image (tqdm comes in anyway: tokenizers needs
    # huggingface-hub, which needs tqdm).
    train = {
        canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["train"]
    } - {"tqdm"}
    assert not (train & set(pins)), f"training packages pinned for serving: {train & set(pins)}"
    assert not {"torch", "torchvision", "nvidia-cudnn-cu13", "nvidia-cudnn-cu12"} & set(pins)


def test_runtime_stage(dockerfile: tuple[dict[str, str], list[Stage]], routes: AppRoutes) -> None:
    _, stages = dockerfile
    runtime = stages[-1]

    users = _keywords(runtime, "USER")
    assert users, "runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "numeric USER (runAsNonRoot can verify it)"
    assert int(uid) > 0, "non-root USER"

    exposed = {int(p.split("/")[0]) for e in _keywords(runtime, "EXPOSE") for p in e.split()}
    assert exposed == {setting_default("http_port"), setting_default("metrics_port")}

    assert json.loads(_keywords(runtime, "ENTRYPOINT")[-1]) == ["exitserve", "serve"]

    env: dict[str, str] = {}
    for s in (stage(stages, "base-gpu"), stage(stages, "base-cpu"), runtime):
        for e in _keywords(s, "ENV"):
            env.update(env_pairs(e))
    fields = setting_names()
    for key in env:
        if key.startswith(ENV_PREFIX):
            assert key.removeprefix(ENV_PREFIX).lower() in fields, f"ENV {key} is no setting"
    assert env["EXITSERVE_HOST"] == "0.0.0.0"
    assert env["EXITSERVE_MODEL_REPOSITORY"] == "/models"
    assert "models/repository /models" in _keywords(runtime, "COPY"), "bundled repository"
    assert "/opt/venv/bin" in env["PATH"]

    health = _keywords(runtime, "HEALTHCHECK")
    assert health, "no HEALTHCHECK"
    command = json.loads(health[-1].split("CMD", 1)[1])
    assert command[0] == "python3", "no curl in the image: python's urllib"
    paths = re.findall(r"/v2/[\w/]+", command[-1])
    assert paths, command
    assert all(routes.answers(p) for p in paths), paths
    assert "EXITSERVE_HTTP_PORT" in command[-1]
    assert str(setting_default("http_port")) in command[-1]


def test_build_context_has_what_the_build_copies() -> None:
    """.dockerignore is an allow-list: what `pip install .` and the COPYs need is in it,
    and nothing heavy or secret is."""
    rules = dockerignore_rules()
    project = pyproject()
    needed = ["pyproject.toml", project["project"]["readme"], "deploy/requirements-serve.txt"]
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        needed.append(pattern.rstrip("*") + "/__init__.py")
    needed.append("models/repository/mnist/1/manifest.json")
    for path in needed:
        assert in_build_context(path, rules), f"{path} is not in the build context"
    for path in (
        ".git/config",
        ".venv/bin/python",
        "tests/deploy/test_dockerfile.py",
        ".env",
        "service/__pycache__/app.cpython-312.pyc",
        "models/runs/x/model.pt",
    ):
        assert not in_build_context(path, rules), f"{path} would be sent to the build"
