"""The image's install step, without Docker: the builder stage's own commands, run into a fresh
venv from the build context .dockerignore lets through, then the image's ENTRYPOINT from that
venv serving the bundled repository on loopback, answering a prediction and draining on
SIGTERM.

Slow (a minute: the wheels come from pip's cache after the first run).
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import pytest

from loadtest.server import free_port
from tests.deploy.manifests import (
    DOCKERFILE,
    ENV_PREFIX,
    REPO,
    copy_build_context,
    dockerfile_stages,
    pinned_requirements,
    stage,
)

pytestmark = pytest.mark.slow

BUNDLED = REPO / "models" / "repository"
INSTALL_TIMEOUT_S = 600
READY_TIMEOUT_S = 120.0


def bundled_models() -> list[tuple[str, str]]:
    """(model, version) for every manifest in the bundled repository."""
    return sorted((p.parent.parent.name, p.parent.name) for p in BUNDLED.glob("*/*/manifest.json"))


def image_python(minor: str) -> str:
    """An interpreter of the image's Python minor where this machine has one, else ours."""
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = sorted(glob.glob(f"{pyenv_root}/versions/{minor}.*/bin/python{minor}"))
    candidates += [c for c in [shutil.which(f"python{minor}")] if c]
    for candidate in candidates:
        # pyenv shims exist for versions that are not selected: ask the interpreter itself.
        probe = subprocess.run(
            [candidate, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == minor:
            return candidate
    warnings.warn(
        f"no python{minor} here (the image's); installing with {sys.version.split()[0]}",
        stacklevel=2,
    )
    return sys.executable


def builder_commands(venv: Path, context: Path, python: str) -> list[list[str]]:
    """The builder stage's RUN commands, with the image's paths mapped onto this machine's."""
    _args, stages = dockerfile_stages(DOCKERFILE.read_text())
    builder = stage(stages, "builder")
    paths = {"/opt/venv": str(venv)}
    for ins in builder.instructions:
        if ins.keyword == "COPY":
            source, dest = ins.args.split()
            paths[dest] = str(context / source) if source != "." else str(context)
    commands: list[list[str]] = []
    for ins in builder.instructions:
        if ins.keyword != "RUN":
            continue
        for part in ins.args.split("&&"):
            argv = shlex.split(part)
            argv = [
                next((v + a[len(k) :] for k, v in paths.items() if a.startswith(k)), a)
                for a in argv
            ]
            if argv[0] == "python3":
                argv[0] = python
            # The image keeps no pip cache; here the cache spares re-downloading.
            argv = [a for a in argv if a != "--no-cache-dir"]
            assert argv[0] == python or argv[0].startswith(str(venv)), (
                f"builder step this test cannot replay: {part.strip()}"
            )
            commands.append(argv)
    return commands


def run(argv: list[str], cwd: Path) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, (
        f"{shlex.join(argv)} failed:\n{(result.stdout + result.stderr)[-4000:]}"
    )


def wheelhouse(python_minor: str) -> Path:
    """The pinned wheels, downloaded once and kept beside pip's own cache (the registry's
    answers here are not cacheable by pip); later runs install offline from it."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")))
    return cache / "exitserve" / "wheelhouse" / f"py{python_minor}"


def missing_wheels(house: Path) -> list[str]:
    from packaging.utils import canonicalize_name, parse_wheel_filename

    have = set()
    for wheel in house.glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        have.add((canonicalize_name(name), str(version)))
    return [f"{n}=={v}" for n, v in pinned_requirements().items() if (n, v) not in have]


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv built exactly as the Dockerfile's builder stage builds /opt/venv."""
    root = tmp_path_factory.mktemp("image")
    context, venv = root / "context", root / "venv"
    copied = copy_build_context(context)
    assert "deploy/requirements-serve.txt" in copied
    assert "pyproject.toml" in copied
    args, _ = dockerfile_stages(DOCKERFILE.read_text())
    minor = args["PYTHON_IMAGE"].split(":")[1].split("-")[0]
    python = image_python(minor)
    house = wheelhouse(minor)
    for argv in builder_commands(venv, context, python):
        if "-r" in argv:  # the pinned set: the same files, from the local wheelhouse
            if missing_wheels(house):
                house.mkdir(parents=True, exist_ok=True)
                pip = [str(venv / "bin" / "python"), "-m", "pip", "download", "--no-deps"]
                run([*pip, "--only-binary=:all:", "-d", str(house), *missing_wheels(house)], root)
            argv = [*argv, "--no-index", "--find-links", str(house)]
        run(argv, cwd=root)
    return venv


def test_serving_venv_has_no_training_stack(image_venv: Path) -> None:
    probe = (
        "import importlib.util as u, json; "
        "print(json.dumps({m: u.find_spec(m) is not None for m in "
        "('torch', 'onnxruntime', 'fastapi', 'uvicorn', 'service.app', 'models.manifest')}))"
    )
    out = subprocess.run(
        [str(image_venv / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=image_venv,
    )
    found = json.loads(out.stdout)
    assert found.pop("torch") is False, "torch in the serving image"
    assert all(found.values()), found


def test_entrypoint_serves_a_prediction_and_drains(image_venv: Path, tmp_path: Path) -> None:
    models = bundled_models()
    if not models:
        pytest.skip(f"no model in {BUNDLED.relative_to(REPO)} yet (`make model` builds it)")
    model, version = models[0]
    _, stages = dockerfile_stages(DOCKERFILE.read_text())
    entry = json.loads(next(i.args for i in stages[-1].instructions if i.keyword == "ENTRYPOINT"))
    argv = [str(image_venv / "bin" / entry[0]), *entry[1:]]

    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.pop("PYTHONPATH", None)
    env.update(
        {
            f"{ENV_PREFIX}MODEL_REPOSITORY": str(BUNDLED),
            f"{ENV_PREFIX}HOST": "127.0.0.1",
            f"{ENV_PREFIX}HTTP_PORT": str(port),
            f"{ENV_PREFIX}METRICS_PORT": str(metrics_port),
            f"{ENV_PREFIX}DEVICE": "cpu",
            f"{ENV_PREFIX}INTRA_OP_THREADS": "1",
            f"{ENV_PREFIX}DRAIN_TIMEOUT_S": "5",
        }
    )
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        # cwd outside the repository: only the venv's copy of the code may be imported.
        process = subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"exitserve serve exited {process.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"not ready after {READY_TIMEOUT_S} s:\n{log_path.read_text()}")
            time.sleep(0.2)

        meta = httpx.get(f"{url}/v2/models/{model}/versions/{version}", timeout=10).json()
        inputs = []
        for spec in meta["inputs"]:
            shape = [1, *(abs(d) for d in spec["shape"][1:])]
            size = 1
            for d in shape:
                size *= d
            inputs.append(
                {
                    "name": spec["name"],
                    "shape": shape,
                    "datatype": spec["datatype"],
                    "data": [0.5] * size,
                }
            )
        response = httpx.post(
            f"{url}/v2/models/{model}/versions/{version}/infer", json={"inputs": inputs}, timeout=30
        )
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o for o in response.json()["outputs"]}
        assert {"label", "exit_index"} <= set(outputs), outputs
        assert len(outputs["label"]["data"]) == 1

        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert "exitserve_samples_total" in scraped
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            pytest.fail(f"no exit 30 s after SIGTERM:\n{log_path.read_text()}")
    assert code == 0, f"SIGTERM drain exited {code}:\n{log_path.read_text()}"
