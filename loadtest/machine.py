"""What the benchmark ran on, read from the machine rather than typed into the document."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

import onnxruntime as ort

from loadtest.report import cores
from loadtest.wrk import wrk_version

PACKAGES = ("onnxruntime-gpu", "numpy", "fastapi", "uvicorn", "aiohttp")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def facts() -> dict[str, object]:
    """CPU model, cores usable and present, OS, Python, library versions, wrk."""
    return {
        "cpu_model": cpu_model(),
        "cores": cores(),
        "cores_present": os.cpu_count() or 0,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libraries": {p: _version(p) for p in PACKAGES},
        "onnxruntime_providers": ort.get_available_providers(),
        "wrk": wrk_version(),
    }
