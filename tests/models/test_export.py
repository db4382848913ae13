"""ONNX segments: names, dynamic batch, parity with PyTorch, and a corrupted export caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

from models.build import Trained  # noqa: E402
from models.export import (  # noqa: E402
    OPSET,
    ExportError,
    check_parity,
    export_segments,
    open_session,
)


@pytest.fixture(scope="module")
def exported(quick_trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("export")
    export_segments(quick_trained.model, folder)
    return folder


def test_one_file_per_segment_with_the_contract_names(
    quick_trained: Trained, exported: Path
) -> None:
    n = quick_trained.model.num_exits
    assert sorted(p.name for p in exported.glob("*.onnx")) == [
        f"segment_{k}.onnx" for k in range(n)
    ]
    for k in range(n):
        model = onnx.load(str(exported / f"segment_{k}.onnx"))
        inputs = [i.name for i in model.graph.input]
        outputs = [o.name for o in model.graph.output]
        assert inputs == ["input" if k == 0 else "hidden_in"]
        assert outputs == (["logits", "probs"] if k == n - 1 else ["hidden", "logits", "probs"])
        assert model.opset_import[0].version >= OPSET
        batch = model.graph.input[0].type.tensor_type.shape.dim[0]
        assert batch.dim_param
        assert not batch.dim_value


def test_parity_on_real_samples(quick_trained: Trained, exported: Path) -> None:
    diffs = check_parity(quick_trained.model, exported, quick_trained.splits.test.x[:32])
    assert len(diffs) == quick_trained.model.num_exits
    assert max(diffs) < 1e-4


@pytest.mark.parametrize("batch", [1, 7])
def test_chained_segments_match_pytorch_at_any_batch(
    quick_trained: Trained, exported: Path, batch: int
) -> None:
    x = quick_trained.splits.test.x[:batch]
    expected = [
        torch.softmax(z, 1).detach().numpy() for z in quick_trained.model(torch.from_numpy(x))
    ]
    hidden = x
    for k in range(quick_trained.model.num_exits):
        session = open_session(exported / f"segment_{k}.onnx")
        out = dict(
            zip(
                [o.name for o in session.get_outputs()],
                session.run(None, {session.get_inputs()[0].name: hidden}),
                strict=True,
            )
        )
        np.testing.assert_allclose(out["probs"], expected[k], atol=1e-5)
        np.testing.assert_allclose(out["probs"].sum(axis=1), 1.0, atol=1e-5)
        hidden = out.get("hidden", hidden)


def test_a_corrupted_segment_fails_the_check(
    quick_trained: Trained, exported: Path, tmp_path: Path
) -> None:
    for f in exported.glob("*.onnx"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    model = onnx.load(str(tmp_path / "segment_1.onnx"))
    weight = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(weight).copy()
    values.flat[: max(1, values.size // 10)] *= -3.0  # a silent bit of damage in one layer
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(model, str(tmp_path / "segment_1.onnx"))
    with pytest.raises(ExportError, match="segment 1 differs"):
        check_parity(quick_trained.model, tmp_path, quick_trained.splits.test.x[:32])


def test_an_unreadable_segment_fails_the_check(
    quick_trained: Trained, exported: Path, tmp_path: Path
) -> None:
    for f in exported.glob("*.onnx"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "segment_0.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(ExportError, match="segment 0"):
        check_parity(quick_trained.model, tmp_path, quick_trained.splits.test.x[:8])
