"""Where the bundled model repository lives, found the same way from a checkout or a wheel.

Torch-free: the server and its tests call this to serve the default model.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEFAULT_MODEL = "mnist"
DEFAULT_VERSION = "1"
LENET_MODEL = "mnist-lenet"


TEXT_MODEL = "sentiment"
BENCH_DEEP_MODEL = "fashion"


def bundled_repository() -> Path:
    """The `repository/` folder shipped inside the `models` package (package data)."""
    return Path(str(resources.files("models"))) / "repository"


def bundled_bench_repository() -> Path:
    """`bench-repository/`: models only the benchmarks serve (`fashion`, whose exits are hit
    later than mnist's). A checkout's folder, not package data: never served by default."""
    return Path(str(resources.files("models"))) / "bench-repository"


def bundled_model_dir(name: str = DEFAULT_MODEL, version: str = DEFAULT_VERSION) -> Path:
    """`<repository>/<name>/<version>`; raises with a hint when it has not been built."""
    path = bundled_repository() / name / version
    if not (path / "manifest.json").is_file():
        raise FileNotFoundError(f"no bundled model at {path}: run `make model` to build it")
    return path
