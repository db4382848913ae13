"""A stream of MNIST-like images that drifts in phases, for the fidelity benchmark.

Clean MNIST test images, then shifts of different kinds (pixel noise, geometry, contrast,
another data set), then clean again: each phase asks the fidelity controller to react,
and the last one asks it to give the savings back. numpy only, seeded, so that the
benchmark and the offline replay see the same samples on any machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.data import load_fashion_mnist, load_mnist

FloatArray = npt.NDArray[np.float32]
Shift = Callable[[FloatArray, np.random.Generator], FloatArray]
DEFAULT_PHASES = ("clean", "noise", "rotate", "contrast", "fashion", "clean")
NOISE_SIGMA = 0.3  # issue 11's measurement: 40% agreement with static thresholds
ROTATE_DEGREES = (20.0, 40.0)  # magnitude, random sign
SHIFT_PIXELS = 3  # plus a random translation of up to this many pixels
CONTRAST = (0.25, 0.45)  # pixel scale, around a grey background


@dataclass(frozen=True)
class Phase:
    """Rows [start, stop) of the stream come from one distribution."""

    name: str
    start: int
    stop: int


@dataclass(frozen=True)
class DriftStream:
    """The images in serving order and the phases they fall into."""

    x: FloatArray  # (N, 1, 28, 28) float32 in [0, 1]
    phases: tuple[Phase, ...]


def noise(x: FloatArray, rng: np.random.Generator) -> FloatArray:
    """Gaussian pixel noise, clipped back to the valid range."""
    return np.clip(x + rng.normal(0.0, NOISE_SIGMA, x.shape), 0.0, 1.0).astype(np.float32)


def rotate(x: FloatArray, rng: np.random.Generator) -> FloatArray:
    """Rotation by 20-40 degrees either way and a small translation (nearest neighbour)."""
    n, _, h, w = x.shape
    angle = np.deg2rad(rng.uniform(*ROTATE_DEGREES, n) * rng.choice([-1.0, 1.0], n))
    shift = rng.integers(-SHIFT_PIXELS, SHIFT_PIXELS + 1, (2, n))
    dy, dx = shift[0], shift[1]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    # inverse map: where each output pixel comes from
    src_y = cos * (yy - cy) - sin * (xx - cx) + cy - dy[:, None, None]
    src_x = sin * (yy - cy) + cos * (xx - cx) + cx - dx[:, None, None]
    iy, ix = np.rint(src_y).astype(np.int64), np.rint(src_x).astype(np.int64)
    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    rows = np.arange(n)[:, None, None]
    out = np.where(inside, x[rows, 0, iy.clip(0, h - 1), ix.clip(0, w - 1)], 0.0)
    return out[:, None].astype(np.float32)


def contrast(x: FloatArray, rng: np.random.Generator) -> FloatArray:
    """Washed out: strokes scaled down over a grey background (a bad scan or camera)."""
    scale = rng.uniform(*CONTRAST, (len(x), 1, 1, 1))
    return np.clip(x * scale + (1.0 - scale) / 2.0, 0.0, 1.0).astype(np.float32)


SHIFTS: dict[str, Shift] = {"noise": noise, "rotate": rotate, "contrast": contrast}


def drift_stream(
    phase_samples: int = 6000,
    phases: tuple[str, ...] = DEFAULT_PHASES,
    seed: int = 0,
) -> DriftStream:
    """`phase_samples` images per phase; "clean" and "fashion" draw from their test sets
    (a fresh permutation per phase), the other names apply that shift to clean ones."""
    rng = np.random.default_rng(seed)
    mnist = load_mnist("t10k").x
    fashion: FloatArray | None = None
    parts, spans, start = [], [], 0
    for name in phases:
        if name == "fashion":
            fashion = load_fashion_mnist("t10k").x if fashion is None else fashion
            part = _draw(fashion, phase_samples, rng)
        elif name == "clean":
            part = _draw(mnist, phase_samples, rng)
        elif name in SHIFTS:
            part = SHIFTS[name](_draw(mnist, phase_samples, rng), rng)
        else:
            raise ValueError(f"unknown phase {name!r}; expected clean, fashion or {list(SHIFTS)}")
        parts.append(part)
        spans.append(Phase(name, start, start + phase_samples))
        start += phase_samples
    return DriftStream(np.ascontiguousarray(np.concatenate(parts)), tuple(spans))


def _draw(images: FloatArray, count: int, rng: np.random.Generator) -> FloatArray:
    """`count` images in random order, without repeats until the set is used up."""
    order = np.concatenate([rng.permutation(len(images)) for _ in range(-(-count // len(images)))])
    return np.asarray(images[order[:count]], dtype=np.float32)
