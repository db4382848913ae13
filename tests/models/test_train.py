"""Joint and layer-wise training on a tiny real MNIST subset."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.architectures import build_model  # noqa: E402
from models.data import Dataset  # noqa: E402
from models.train import TrainConfig, exit_probabilities, train, train_stage  # noqa: E402

CONFIG = TrainConfig(epochs=2, batch_size=32, lr=1e-2, seed=3, threads=1, progress=False)


def _tiny() -> object:
    torch.manual_seed(0)
    return build_model(
        "resnet", (1, 28, 28), 10, percentiles=(0.3, 0.65, 1.0), width=6, depth=(1, 1, 1)
    )


def _accuracy(model: object, data: Dataset) -> np.ndarray:
    probs = exit_probabilities(model, data.x)  # type: ignore[arg-type]
    return np.asarray((probs.argmax(-1) == data.y[None, :]).mean(axis=1))


def test_joint_training_learns_every_exit(small_splits: tuple[Dataset, Dataset]) -> None:
    train_set, held_out = small_splits
    model = _tiny()
    result = train(model, train_set, CONFIG)  # type: ignore[arg-type]
    steps = result.step_losses
    assert np.mean(steps[-10:]) < 0.5 * np.mean(steps[:10])
    assert result.epoch_losses[1] < result.epoch_losses[0]
    assert (_accuracy(model, held_out) > 0.6).all()  # chance is 0.1


def test_layerwise_trains_each_block_and_leaves_earlier_ones_frozen(
    small_splits: tuple[Dataset, Dataset],
) -> None:
    train_set, held_out = small_splits
    model = _tiny()
    config = replace(CONFIG, mode="layerwise", epochs=1)
    train_stage(model, 0, train_set, config)  # type: ignore[arg-type]
    frozen = {k: v.clone() for k, v in model.blocks[0].state_dict().items()}  # type: ignore[attr-defined]
    block1 = {k: v.clone() for k, v in model.blocks[1].state_dict().items()}  # type: ignore[attr-defined]
    train_stage(model, 1, train_set, config)  # type: ignore[arg-type]
    after = model.blocks[0].state_dict()  # type: ignore[attr-defined]
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)  # weights and BN statistics
    changed = model.blocks[1].state_dict()  # type: ignore[attr-defined]
    assert any(not torch.equal(block1[k], changed[k]) for k in block1)
    accuracy = _accuracy(model, held_out)
    assert accuracy[0] > 0.6
    assert accuracy[1] > 0.6


def test_layerwise_mode_trains_all_exits(small_splits: tuple[Dataset, Dataset]) -> None:
    train_set, held_out = small_splits
    model = _tiny()
    result = train(model, train_set, replace(CONFIG, mode="layerwise", epochs=1))  # type: ignore[arg-type]
    assert len(result.epoch_losses) == 3  # one epoch per stage
    assert (_accuracy(model, held_out) > 0.5).all()
    assert all(p.requires_grad for p in model.parameters())  # type: ignore[attr-defined]


def test_training_is_deterministic_for_a_seed(small_splits: tuple[Dataset, Dataset]) -> None:
    data = small_splits[0].take(slice(0, 256))
    config = replace(CONFIG, epochs=1)
    runs = []
    for seed in (1, 1, 2):
        model = _tiny()
        runs.append(train(model, data, replace(config, seed=seed)).step_losses)  # type: ignore[arg-type]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_exit_weights_must_match_the_exits(small_splits: tuple[Dataset, Dataset]) -> None:
    with pytest.raises(ValueError, match="exit weights"):
        train(_tiny(), small_splits[0], replace(CONFIG, exit_weights=(1.0, 1.0)))  # type: ignore[arg-type]


def test_epochs_come_from_a_step_budget_unless_given() -> None:
    from models.train import MAX_AUTO_EPOCHS, TARGET_STEPS, auto_epochs, resolve_epochs

    assert TARGET_STEPS == 500
    assert auto_epochs(1294, 128) == 46  # digits: 11 steps an epoch, not 2 epochs = 22 steps
    assert auto_epochs(55_000, 128) == 2  # MNIST-sized: 430 steps an epoch
    assert auto_epochs(600_000, 128) == 1  # at least one pass over large data
    assert auto_epochs(10, 128) == MAX_AUTO_EPOCHS
    assert resolve_epochs(replace(CONFIG, epochs=None), 1294).epochs == 13  # batch 32
    assert resolve_epochs(CONFIG, 1294).epochs == CONFIG.epochs


def test_progress_stays_on_screen_with_a_line_per_epoch(
    small_splits: tuple[Dataset, Dataset],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="models.train")
    data = small_splits[0].take(slice(0, 128))
    config = replace(CONFIG, epochs=2, batch_size=64, progress=True)
    result = train(_tiny(), data, config)  # type: ignore[arg-type]
    assert result.epochs == 2
    bar = capsys.readouterr().err.split("\r")[-1]
    assert "joint epoch 2/2: 100%" in bar  # the finished bar is left, not cleared
    assert bar.endswith("\n")
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "joint epoch 1/2",
        "joint epoch 2/2",
    ]
