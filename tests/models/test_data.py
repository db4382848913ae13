"""Data loaders: idx files, user arrays and image folders, and reproducible splits."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from models.data import (
    DataError,
    Dataset,
    limit,
    load_fashion_mnist,
    load_folder,
    load_mnist,
    load_npz,
    read_idx,
    split_off,
    to_unit_pixels,
)
from models.sources import SplitSizes, load_splits


def test_read_idx_parses_header_and_payload(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">III", 2, 3, 4) + data.tobytes())
    np.testing.assert_array_equal(read_idx(path), data)


def test_read_idx_rejects_truncated_files(tmp_path: Path) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(struct.pack(">BBBB", 0, 0, 8, 1) + struct.pack(">I", 10) + b"\x01\x02")
    with pytest.raises(DataError, match="holds 2 values"):
        read_idx(path)


def test_mnist_is_the_real_thing() -> None:
    try:
        test = load_mnist("t10k")
    except DataError as exc:
        pytest.skip(str(exc))
    assert test.x.shape == (10000, 1, 28, 28)
    assert test.x.dtype == np.float32
    assert test.x.min() == 0.0
    assert test.x.max() == 1.0
    assert np.bincount(test.y).tolist()[:2] == [980, 1135]  # MNIST's known class counts


def test_fashion_mnist_loads_with_names() -> None:
    try:
        test = load_fashion_mnist("t10k")
    except DataError as exc:
        pytest.skip(str(exc))
    assert len(test) == 10000
    assert test.labels[9] == "Ankle boot"


def test_user_arrays_are_scaled_and_moved_to_nchw() -> None:
    hwc = np.full((2, 5, 6, 3), 255, dtype=np.uint8)
    out = to_unit_pixels(hwc)
    assert out.shape == (2, 3, 5, 6)
    assert out.dtype == np.float32
    assert out.max() == 1.0
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        to_unit_pixels(np.full((2, 4, 4), 3.0))


def test_npz_labels_are_encoded_and_test_split_kept(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x=rng.random((6, 8, 8)),
        y=np.array(["b", "a", "c", "a", "b", "c"]),
        x_test=rng.random((2, 8, 8)),
        y_test=np.array(["c", "a"]),
    )
    train, test = load_npz(path)
    assert train.labels == ("a", "b", "c")
    assert train.y.tolist() == [1, 0, 2, 0, 1, 2]
    assert test is not None
    assert test.y.tolist() == [2, 0]
    assert test.x.shape == (2, 1, 8, 8)


def test_npz_without_arrays_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match="'x' and 'y'"):
        load_npz(path)


def test_folder_of_images_by_class(tmp_path: Path) -> None:
    from PIL import Image

    for name, value in (("cat", 0), ("dog", 255)):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(np.full((12, 10), value, dtype=np.uint8)).save(
                tmp_path / name / f"{i}.png"
            )
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    data = load_folder(tmp_path)
    assert data.labels == ("cat", "dog")
    assert data.x.shape == (6, 1, 12, 10)
    assert data.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.x[3].min() == 1.0


def test_splits_are_seeded_and_disjoint() -> None:
    x = (np.arange(100) / 100).astype(np.float32).reshape(100, 1, 1, 1)
    data = Dataset(x, np.arange(100) % 2, ("a", "b"))
    rest, held = split_off(data, 20, seed=1)
    _again, held_again = split_off(data, 20, seed=1)
    assert len(held) == 20
    assert len(rest) == 80
    np.testing.assert_array_equal(held.x, held_again.x)
    assert not set(held.x.ravel()) & set(rest.x.ravel())
    assert not np.array_equal(split_off(data, 20, seed=2)[1].x, held.x)
    assert len(limit(data, 10, seed=0)) == 10
    assert limit(data, None, seed=0) is data


def test_sources_hold_out_validation_from_training(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.random.default_rng(0).random((50, 4, 4)), y=np.arange(50) % 2)
    splits = load_splits(f"npz:{path}", SplitSizes(val_fraction=0.2, test_fraction=0.2), seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (32, 8, 10)
    with pytest.raises(DataError, match="unknown data source"):
        load_splits("imagenet", SplitSizes(), seed=0)
