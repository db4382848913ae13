"""Issue 15, items 2 and 3: bad data and bad options are one-line usage errors, found
before the first training step, and a refused build leaves no folder behind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import models.build
from tests.models.digits import digits_arrays, error_line, invoke, leftovers
from tests.models.digits import digits_npz_fixture as digits_npz_fixture

Builder = Callable[[Path], str]


@pytest.fixture(autouse=True)
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every case here must fail before training: reaching it fails the test."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("training started before the error was found")

    monkeypatch.setattr(models.build, "train", refuse)


def _npz(tmp_path: Path, **arrays: np.ndarray) -> str:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


def _nan_in_x(tmp_path: Path) -> str:
    x, y = digits_arrays()
    x[5, 3, 3] = np.nan
    return _npz(tmp_path, x=x, y=y)


def _nan_in_y(tmp_path: Path) -> str:
    x, y = digits_arrays()
    labels = y.astype(np.float64)
    labels[7] = np.nan
    return _npz(tmp_path, x=x, y=labels)


def _x_test_without_y_test(tmp_path: Path) -> str:
    x, y = digits_arrays()
    return _npz(tmp_path, x=x[:1500], y=y[:1500], x_test=x[1500:])


def _complex_pixels(tmp_path: Path) -> str:
    x, y = digits_arrays()
    return _npz(tmp_path, x=x.astype(np.complex64), y=y)


def _string_pixels(tmp_path: Path) -> str:
    x, y = digits_arrays()
    return _npz(tmp_path, x=x.astype(str), y=y)


def _test_images_of_another_size(tmp_path: Path) -> str:
    x, y = digits_arrays()
    wider = np.pad(x[1500:], ((0, 0), (1, 1), (1, 1)))
    return _npz(tmp_path, x=x[:1500], y=y[:1500], x_test=wider, y_test=y[1500:])


def _corrupt_png_in_folder(tmp_path: Path) -> str:
    from PIL import Image

    x, y = digits_arrays()
    root = tmp_path / "images"
    for i in range(200):
        folder = root / str(y[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((x[i] * 255).astype(np.uint8)).save(folder / f"{i}.png")
    broken = root / "3" / "broken.png"
    broken.write_bytes((root / "3" / "3.png").read_bytes()[:40])  # header, then cut off
    return f"folder:{root}"


DATA_ERRORS: list[tuple[Builder, str]] = [
    (_nan_in_x, "x has NaN or infinite pixels in 1 samples (first: #5)"),
    (_nan_in_y, "y has 1 NaN or infinite labels (first: #7)"),
    (_x_test_without_y_test, "has 'x_test' but no 'y_test'"),
    (_complex_pixels, "x must hold real numbers"),
    (_string_pixels, "x must hold real numbers"),
    (_test_images_of_another_size, "x_test images are 1×10×10 but x images are 1×8×8"),
    (_corrupt_png_in_folder, "cannot read image"),
]


@pytest.mark.parametrize(
    ("make", "expected"), DATA_ERRORS, ids=[make.__name__[1:] for make, _ in DATA_ERRORS]
)
def test_bad_data_is_a_one_line_error_before_training(
    make: Builder, expected: str, tmp_path: Path
) -> None:
    out = tmp_path / "repo"
    result = invoke("build", "--data", make(tmp_path), "--name", "m", "--out", str(out))
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert line.startswith("Error: Invalid value for '--data': ")
    assert expected in line
    assert leftovers(out) == []


OPTION_ERRORS = [
    (["--exit-weights", "1,1"], "'--exit-weights'", "need 4 non-negative exit weights"),
    (["--exit-weights", "1,-1,1,1"], "'--exit-weights'", "greater than or equal to 0"),
    (["--device", "gpu"], "'--device'", "'gpu' is not one of 'auto', 'cpu', 'cuda'"),
    (["--epochs", "0"], "'--epochs'", "0 is not in the range x>=1"),
    (["--batch-size", "0"], "'--batch-size'", "0 is not in the range x>=1"),
    (["--lr", "-1"], "'--lr'", "-1.0 is not in the range x>0"),
    (["--name", "my model"], "'--name'", "'my model': String should match pattern"),
    (["--version", "v1"], "'--version'", "'v1': String should match pattern"),
    (["--val-samples", "5000"], "'--val-samples'", "holding out 5000 of the 1438"),
    (["--val-fraction", "1.5"], "'--val-fraction'", "1.5 is not in the range 0<x<1"),
    (["--val-fraction", "0.99"], "'--val-fraction'", "training needs at least 100"),
    (["--train-samples", "5"], "'--train-samples'", "5 training samples are too few"),
    (["--percentiles", "0.5,0.2,1"], "'--percentiles'", "strictly increasing"),
    (["--arch-option", "colour=3"], "'--arch-option'", "resnet has no options ['colour']"),
    (["--tolerance", "-1"], "'--tolerance'", "-1.0 is not in the range x>=0"),
]


@pytest.mark.parametrize(
    ("args", "option", "expected"), OPTION_ERRORS, ids=[" ".join(a) for a, _, _ in OPTION_ERRORS]
)
def test_bad_options_are_one_line_usage_errors_before_training(
    args: list[str], option: str, expected: str, digits_npz: Path, tmp_path: Path
) -> None:
    out = tmp_path / "repo"
    name = [] if "--name" in args else ["--name", "m"]
    result = invoke("build", "--data", f"npz:{digits_npz}", *name, "--out", str(out), *args)
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert line.startswith(f"Error: Invalid value for {option}: ")
    assert expected in line
    assert leftovers(out) == []


def test_export_checks_its_options_before_loading_anything(tmp_path: Path) -> None:
    checkpoint = tmp_path / "m.pt"
    checkpoint.write_bytes(b"not read: the options fail first")
    result = invoke(
        "export",
        "--checkpoint",
        str(checkpoint),
        "--name",
        "m",
        "--out",
        str(tmp_path / "r"),
        "--tolerance",
        "-1",
    )
    assert result.exit_code == 2
    assert "Error: Invalid value for '--tolerance': -1.0 is not in the range x>=0" in error_line(
        result
    )


def test_help_shows_every_default() -> None:
    result = invoke("build", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--mode [joint|layerwise|heads|two_stage]" in text
    assert "then the other heads on the frozen backbone [default: joint]" in text
    assert "[default: enough for about 500 optimiser steps]" in text
    assert "--reference [final|best] calibrate against" in text
