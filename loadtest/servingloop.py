"""The serving-loop ceiling: the server's data plane, stages and runtime in one process, no HTTP.

What the server could answer if HTTP, the protocol and the client cost nothing: requests
go straight into `DataPlane.submit`, `concurrency` of them in flight, as the HTTP layer
would submit them. Run as its own process (`python -m loadtest.servingloop`), configured by
the same EXITSERVE_* variables as the server, so it has a process of its own as the server
does and the benchmark's own threads and heap stay out of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry

from loadtest.report import cpu_share, process_cpu_s
from models.data import load_mnist
from service.dataplane import DataPlane
from service.metrics import Metrics
from service.settings import Settings
from service.types import InferenceInput, PolicyOverride


async def drive(
    plane: DataPlane,
    model: str,
    batches: list[npt.NDArray[np.float32]],
    concurrency: int,
    seconds: float,
    full_depth: bool = False,
) -> dict[str, float]:
    """Keep `concurrency` requests in flight for `seconds`; samples/s and CPU share."""
    policy = PolicyOverride(full_depth=full_depth)
    done = 0

    async def client(first: int, deadline: float) -> None:
        nonlocal done
        i = first
        while time.perf_counter() < deadline:
            data = batches[i % len(batches)]
            await plane.infer(InferenceInput(model, None, data, policy))
            done += len(data)
            i += concurrency

    warm = time.perf_counter() + min(0.5, seconds / 4)
    await asyncio.gather(*(client(c, warm) for c in range(concurrency)))
    done, cpu, start = 0, process_cpu_s(), time.perf_counter()
    await asyncio.gather(*(client(c, start + seconds) for c in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu_used = process_cpu_s() - cpu
    return {"samples_per_s": done / elapsed, "cpu": cpu_share(cpu_used, elapsed)}


async def _main(
    repository: Path,
    model: str,
    batches: list[npt.NDArray[np.float32]],
    concurrency: int,
    seconds: float,
    full_depth: bool,
) -> dict[str, float | str]:
    plane = DataPlane(Settings(model_repository=repository), Metrics(CollectorRegistry()))
    await plane.start()
    try:
        result = await drive(plane, model, batches, concurrency, seconds, full_depth)
        return {**result, "provider": plane.registry.get(model).runtime.placement.provider}
    finally:
        await plane.stop()


def measure(
    repository: Path,
    model: str,
    env: Mapping[str, str],
    per_request: int,
    concurrency: int,
    seconds: float,
    samples: int,
    full_depth: bool = False,
) -> dict[str, Any]:
    """Run the ceiling in a fresh process with the server's EXITSERVE_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EXITSERVE_")}
    cmd = [
        *(sys.executable, "-m", "loadtest.servingloop", "--repository", str(repository)),
        *("--model", model, "--per-request", str(per_request), "--samples", str(samples)),
        *("--concurrency", str(concurrency), "--seconds", str(seconds)),
        *(["--full-depth"] if full_depth else []),
    ]
    out = subprocess.run(
        cmd, env={**clean, **env}, capture_output=True, text=True, timeout=seconds + 300
    )
    if out.returncode != 0:
        raise RuntimeError(f"serving-loop ceiling failed ({out.returncode}):\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@click.command()
@click.option("--repository", type=click.Path(path_type=Path), required=True)
@click.option("--model", default="mnist", show_default=True)
@click.option("--per-request", default=32, show_default=True, help="samples per request")
@click.option("--concurrency", default=4, show_default=True, help="requests in flight")
@click.option("--seconds", default=3.0, show_default=True)
@click.option("--samples", default=4000, show_default=True, help="MNIST test samples used")
@click.option("--full-depth", is_flag=True, help="every sample to the last exit")
def main(
    repository: Path,
    model: str,
    per_request: int,
    concurrency: int,
    seconds: float,
    samples: int,
    full_depth: bool,
) -> None:
    """Print the serving-loop ceiling (samples/s and this process's CPU share) as JSON."""
    x = load_mnist("t10k").x[:samples]
    n = len(x) // per_request * per_request
    batches = [x[i : i + per_request] for i in range(0, n, per_request)]
    result = _main(repository, model, batches, concurrency, seconds, full_depth)
    click.echo(json.dumps(asyncio.run(result)))


if __name__ == "__main__":
    main()
