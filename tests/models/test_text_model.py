"""A text model end to end: the pretrained MiniLM cut to 2 layers, built, exported, served.

The version is run on bare onnxruntime from strings (models.textchain, the serving side's
reference), and must answer as PyTorch did on real test sentences, whatever the padding:
alone, in a batch with longer sentences, or padded far beyond its length.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from models.build import BuildConfig, Trained, train_model  # noqa: E402
from models.manifest import ManifestError, load_manifest  # noqa: E402
from models.package import package  # noqa: E402
from models.sources import SplitSizes  # noqa: E402
from models.textchain import encoder_for, run_segments, text_probabilities  # noqa: E402
from models.textdata import load_rotten_tomatoes  # noqa: E402
from models.textnets import minilm_dir  # noqa: E402
from models.train import TrainConfig, exit_probabilities  # noqa: E402
from service.cli import main  # noqa: E402

TINY_TEXT = {"layers": 2, "max_length": 24, "head_width": 16}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Trained, Path]:
    """2-layer MiniLM, exits after layers 1 and 2, heads trained briefly; FP16-stored weights."""
    config = BuildConfig(
        name="tinytext",
        arch="minilm",
        arch_options=TINY_TEXT,
        percentiles=(0.5, 1.0),
        data="rotten-tomatoes",
        sizes=SplitSizes(train_samples=96, val_samples=64, test_samples=64),
        train=TrainConfig(
            mode="heads", epochs=1, batch_size=32, lr=1e-3, threads=1, progress=False
        ),
        parity_samples=32,
        force=True,
        weights="fp16",
    )
    trained = train_model(config)
    return trained, package(trained, config, tmp_path_factory.mktemp("text"))


def test_manifest_declares_tokenisation_masks_and_dynamic_axes(built: tuple[Trained, Path]) -> None:
    _, version = built
    manifest = load_manifest(version)
    assert manifest.text is not None
    assert (manifest.text.input_name, manifest.text.datatype) == ("text", "BYTES")
    assert (manifest.text.max_length, manifest.text.pad_id) == (24, 0)
    assert (manifest.text.truncation, manifest.text.padding) == ("longest_first", "batch_longest")
    shipped = (version / manifest.text.tokenizer_file).read_bytes()
    assert shipped == (minilm_dir() / "tokenizer.json").read_bytes()
    assert manifest.input.datatype == "INT64"
    assert manifest.input.shape == [-1]
    assert manifest.training is not None
    assert manifest.training.mode == "heads"
    for seg in manifest.segments:
        graph = onnx.load(str(version / seg.file), load_external_data=False).graph
        inputs = {
            i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in graph.input
        }
        first = "input_ids" if seg.index == 0 else "hidden_in"
        assert list(inputs) == [first, "attention_mask"]
        assert inputs["attention_mask"] == ["batch", "sequence"]
        assert inputs[first][:2] == ["batch", "sequence"]
        assert seg.mask_input is not None
        assert seg.mask_input.shape == [-1]
    assert manifest.segments[0].hidden_output is not None
    assert manifest.segments[0].hidden_output.shape == [-1, 384]


def test_weights_are_stored_as_fp16_and_computed_in_fp32(built: tuple[Trained, Path]) -> None:
    _, version = built
    graph = onnx.load(str(version / "segment_0.onnx")).graph
    big = [i for i in graph.initializer if np.prod(i.dims) >= 1024]
    assert big
    assert all(i.data_type == onnx.TensorProto.FLOAT16 for i in big)
    assert any(n.op_type == "Cast" for n in graph.node)
    # the vocabulary's 30522 x 384 table alone is 47 MB in FP32
    assert (version / "segment_0.onnx").stat().st_size < 30e6


def test_onnx_answers_as_pytorch_did_on_real_sentences(built: tuple[Trained, Path]) -> None:
    trained, version = built
    texts = list(trained.splits.test.texts[:24])  # type: ignore[union-attr]
    expected = exit_probabilities(trained.model, trained.splits.test.take(slice(0, 24)))
    got = text_probabilities(version, texts)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert len({len(t.split()) for t in texts}) > 5  # lengths differ: padding was exercised


def test_padding_never_changes_an_answer(built: tuple[Trained, Path]) -> None:
    _, version = built
    manifest = load_manifest(version)
    texts = list(load_rotten_tomatoes().texts[:6])
    encoder = encoder_for(version, manifest)
    ids, mask = encoder.encode(texts)
    batched = run_segments(version, manifest, ids, mask)
    wide_ids = np.pad(ids, ((0, 0), (0, 9)), constant_values=manifest.text.pad_id)  # type: ignore[union-attr]
    wide_mask = np.pad(mask, ((0, 0), (0, 9)))
    padded = run_segments(version, manifest, wide_ids, wide_mask)
    alone = [run_segments(version, manifest, *encoder.encode([t])) for t in texts]
    for k in range(manifest.num_exits):
        np.testing.assert_allclose(padded[k], batched[k], atol=1e-5)
        np.testing.assert_allclose(np.concatenate([a[k] for a in alone]), batched[k], atol=1e-5)


def test_long_texts_are_truncated_to_max_length(built: tuple[Trained, Path]) -> None:
    _, version = built
    encoder = encoder_for(version, load_manifest(version))
    ids, mask = encoder.encode(["word " * 200, "short"])
    assert ids.shape == (2, 24)
    assert mask[0].sum() == 24
    assert mask[1].sum() < 5
    assert ids[1, mask[1].sum() :].tolist() == [0] * (24 - int(mask[1].sum()))


def _float_input(manifest: dict[str, Any]) -> None:
    for spec in (manifest["input"], manifest["segments"][0]["input"]):
        spec["datatype"] = "FP32"


def test_manifest_refuses_inconsistent_text_fields(
    built: tuple[Trained, Path], tmp_path: Path
) -> None:
    _, version = built
    raw: dict[str, Any] = json.loads((version / "manifest.json").read_text())
    for name in ("segment_0.onnx", "segment_1.onnx"):
        (tmp_path / name).symlink_to(version / name)
    cases = [
        (lambda m: m["segments"][1].pop("mask_input"), "segments[1].mask_input"),
        (lambda m: m.pop("text"), "mask_input is for text models only"),
        (_float_input, "INT64 token ids"),
        (lambda m: m.update(patience=0), "patience: Input should be greater than or equal to 1"),
    ]
    for change, message in cases:
        broken = json.loads(json.dumps(raw))
        change(broken)
        (tmp_path / "manifest.json").write_text(json.dumps(broken))
        with pytest.raises(ManifestError, match=message.replace("[", r"\[").replace("]", r"\]")):
            load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match=r"text\.tokenizer_file 'tokenizer\.json' is missing"):
        load_manifest(tmp_path)


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_cli_builds_a_text_model_from_a_users_file(tmp_path: Path, suffix: str) -> None:
    reviews = load_rotten_tomatoes().take(slice(0, 60))
    rows = [
        {"review": t, "verdict": reviews.labels[y]}
        for t, y in zip(reviews.texts, reviews.y, strict=False)
    ]
    path = tmp_path / f"reviews.{suffix}"
    if suffix == "csv":
        import csv

        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, ["review", "verdict"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    args = [
        *("build", "--data", f"{suffix}:{path}", "--text-column", "review"),
        *("--label-column", "verdict", "--arch", "minilm", "--percentiles", "0.5,1"),
        *("--arch-option", "layers=2", "--arch-option", "max_length=16"),
        *("--mode", "two_stage", "--epochs", "1", "--batch-size", "16", "--lr", "1e-4"),
        *("--head-lr", "1e-3", "--distill", "0.5", "--val-samples", "12", "--threads", "1"),
        *("--no-progress", "--force", "--name", "mine", "--out", str(tmp_path / "repo")),
    ]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    version = tmp_path / "repo" / "mine" / "1"
    manifest = load_manifest(version)
    assert manifest.labels == ["fresh", "rotten"]
    assert manifest.text is not None
    assert manifest.training is not None
    assert manifest.training.mode == "two_stage"
    assert manifest.training.distill == 0.5
    assert text_probabilities(version, ["a fine film"]).shape == (2, 1, 2)
