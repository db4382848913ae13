"""Small real-data fixtures for the model tests: MNIST subsets and a quickly trained net.

Torch is imported inside the fixtures that train, never at module level, so the torch-free
tests beside them (manifest, data, placement) run on an install without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from models.data import DataError, Dataset, limit, load_mnist, split_off
from tests.conftest import MNIST_HINT

if TYPE_CHECKING:
    from models.build import BuildConfig, Trained

TORCH_HINT = "needs torch (the train extra: `make install`)"


@pytest.fixture(scope="session")
def mnist_train() -> Dataset:
    """MNIST's 60k training images (decompressed once per session)."""
    try:
        return load_mnist("train")
    except DataError as exc:
        pytest.skip(f"MNIST unavailable ({MNIST_HINT}): {exc}")


@pytest.fixture(scope="session")
def small_splits(mnist_train: Dataset) -> tuple[Dataset, Dataset]:
    """2000 training and 500 held-out MNIST samples for quick training tests."""
    subset = limit(mnist_train, 2500, seed=7)
    return split_off(subset, 500, seed=7)


@pytest.fixture(scope="session")
def quick_config() -> BuildConfig:
    """A barely trained tiny net: enough for export and parity, where quality is irrelevant."""
    pytest.importorskip("torch", reason=TORCH_HINT)
    from models.build import BuildConfig, tiny_config
    from models.sources import SplitSizes
    from models.train import TrainConfig

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
    from models.build import train_model

    return train_model(quick_config)
