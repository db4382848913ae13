"""Small real-data fixtures for the model tests: MNIST subsets and a quickly trained net."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from models.build import BuildConfig, Trained, tiny_config, train_model  # noqa: E402
from models.data import DataError, Dataset, limit, load_mnist, split_off  # noqa: E402
from models.sources import SplitSizes  # noqa: E402
from models.train import TrainConfig  # noqa: E402


@pytest.fixture(scope="session")
def mnist_train() -> Dataset:
    """MNIST's 60k training images (decompressed once per session)."""
    try:
        return load_mnist("train")
    except DataError as exc:
        pytest.skip(f"MNIST unavailable: {exc}")


@pytest.fixture(scope="session")
def small_splits(mnist_train: Dataset) -> tuple[Dataset, Dataset]:
    """2000 training and 500 held-out MNIST samples for quick training tests."""
    subset = limit(mnist_train, 2500, seed=7)
    return split_off(subset, 500, seed=7)


@pytest.fixture(scope="session")
def quick_config() -> BuildConfig:
    """A barely trained tiny net: enough for export and parity, where quality is irrelevant."""
    base = tiny_config("quick")
    return BuildConfig(
        name="quick",
        arch="resnet",
        arch_options={"width": 4, "depth": (1, 1, 1)},
        percentiles=base.percentiles,
        sizes=SplitSizes(train_samples=256, val_samples=128, test_samples=128),
        train=TrainConfig(epochs=1, batch_size=64, threads=1, progress=False),
        parity_samples=32,
    )


@pytest.fixture(scope="session")
def quick_trained(quick_config: BuildConfig) -> Trained:
    """`quick_config` trained once per session."""
    return train_model(quick_config)
