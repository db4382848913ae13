"""Turn a trained network into a published repository version.

Order matters: export and parity-check first (a broken export must not be calibrated and
shipped), then calibrate on validation outputs, measure on the test split, write manifest
and report into a scratch folder, validate the manifest as the server will, and only then
swap the folder into place so a server watching the repository never sees half a version.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from models.batches import model_inputs
from models.build import BuildConfig, Trained
from models.calibrate import (
    PATIENCE,
    POLICIES,
    accuracy_per_exit,
    apply,
    best_exit,
    calibrate,
    pick_default,
)
from models.compress import round_weights, store_fp16
from models.export import LOGITS, PROBS, ExportedSegment, check_parity, export_segments
from models.flops import count_macs
from models.gate import Figures, QualityError, baseline_accuracy, judge
from models.manifest import (
    Calibration,
    Manifest,
    Segment,
    TextInput,
    Training,
    load_manifest,
    save_manifest,
)
from models.multiexit import MultiExitNet
from models.report import ReportData, summary, write_report
from models.sources import describe
from models.textnets import TOKENIZER_FILE
from models.train import exit_probabilities

log = logging.getLogger(__name__)


def segment_macs(model: MultiExitNet) -> list[int]:
    """MACs per sample of each served segment (block + head), counted by forward hooks
    (text: at max_length tokens; every layer scales alike, so the shares hold at any length)."""
    x = model.example(1)
    costs = []
    for block, head in zip(model.blocks, model.heads, strict=True):
        with torch.no_grad():
            hidden = block.eval()(x)
        costs.append(count_macs(block, x) + count_macs(head, hidden))
        x = hidden
    return costs


def cumulative_fractions(costs: list[int]) -> list[float]:
    """Each exit's share of the full-depth cost; exactly 1.0 at the last exit."""
    running = np.cumsum(costs) / float(sum(costs))
    return [*(float(f) for f in running[:-1]), 1.0]


def package(trained: Trained, config: BuildConfig, out: Path) -> Path:
    """Export, check, calibrate, gate, describe and publish `trained` as `out/name/version`.

    Whatever fails (export, parity, the quality gate, an interrupt), nothing is left
    behind: no scratch folder, and no model or repository folder this call created.
    """
    final_dir = out / config.name / config.version
    scratch = out / config.name / f".{config.version}.building"
    created = [d for d in (out / config.name, out) if not d.exists()]
    try:
        _build(trained, config, scratch)
        _publish(scratch, final_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        for folder in created:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    return final_dir


def _build(trained: Trained, config: BuildConfig, scratch: Path) -> None:
    """Everything a version holds, written into `scratch`; raises when the gate refuses."""
    model = trained.model.eval()
    shutil.rmtree(scratch, ignore_errors=True)
    started = time.monotonic()
    if config.weights == "fp16":
        round_weights(model)  # before anything is measured: what is served is what is judged
    exported = export_segments(model, scratch)
    if config.weights == "fp16":
        stored = sum(store_fp16(scratch / seg.file) for seg in exported)
        log.info("stored %d weight tensors as FP16 (computed in FP32)", stored)
    real = trained.splits.test.take(slice(0, config.parity_samples))
    diffs = check_parity(model, scratch, model_inputs(model, real))
    if model.encoder is not None:
        shutil.copyfile(model.encoder.file, scratch / TOKENIZER_FILE)
    log.info("exported %d segments; max abs diff vs PyTorch %.2g", len(exported), max(diffs))
    report = gated(measure(trained, config), config)
    save_manifest(make_manifest(trained, config, exported, report), scratch)
    load_manifest(scratch)  # the server's own validation, before anything is published
    write_report(report, scratch)
    log.info("built %s in %.0fs", scratch, time.monotonic() - started)


def gated(report: ReportData, config: BuildConfig) -> ReportData:
    """`report` with the gate's warnings; raises QualityError on a refusal unless forced."""
    test = report.test[report.default_policy]
    verdict = judge(
        Figures(
            test_accuracy_per_exit=report.test_accuracy_per_exit,
            val_accuracy_per_exit=report.val_accuracy_per_exit,
            test_samples=report.test_samples,
            val_samples=report.val_samples,
            baseline=report.baseline_accuracy,
            tolerance_pp=report.tolerance_pp,
            reference=report.reference_index,
            test_drop_pp=100
            * (report.test_accuracy_per_exit[report.reference_index] - test.accuracy),
            feasible=report.choices[report.default_policy].feasible,
            reference_option=report.reference,
        )
    )
    report = replace(report, warnings=verdict.warnings)
    if verdict.refusals and not config.force:
        reasons = "\n".join(f"  - {r}" for r in verdict.refusals)
        message = f"{report.model} not published (--force publishes anyway):\n{reasons}"
        raise QualityError(message, summary(report))
    return replace(report, forced=verdict.refusals)


def measure(trained: Trained, config: BuildConfig) -> ReportData:
    """Costs, per-exit accuracies, thresholds calibrated on val and their effect on test."""
    model, splits = trained.model, trained.splits
    costs = segment_macs(model)
    cumulative = np.asarray(cumulative_fractions(costs), dtype=np.float32)
    val_probs = exit_probabilities(model, splits.val)
    test_probs = exit_probabilities(model, splits.test)
    log.info("evaluated %d val + %d test samples", len(splits.val), len(splits.test))
    val_accuracy = accuracy_per_exit(val_probs, splits.val.y)
    reference = best_exit(val_accuracy) if config.reference == "best" else len(costs) - 1
    choices = calibrate(
        val_probs, splits.val.y, cumulative, config.tolerance_pp, reference=reference
    )
    return ReportData(
        model=f"{config.name}/{config.version}",
        tolerance_pp=config.tolerance_pp,
        default_policy=pick_default(choices),
        segment_macs=costs,
        cumulative=cumulative.tolist(),
        val_accuracy_per_exit=val_accuracy,
        test_accuracy_per_exit=accuracy_per_exit(test_probs, splits.test.y),
        choices=choices,
        test={
            p: apply(test_probs, splits.test.y, p, c.thresholds, cumulative)
            for p, c in choices.items()
        },
        baseline_accuracy=baseline_accuracy(
            splits.train.y, splits.test.y, len(splits.train.labels)
        ),
        val_samples=len(splits.val),
        test_samples=len(splits.test),
        reference=config.reference,
        reference_exit=reference,
    )


def make_manifest(
    trained: Trained, config: BuildConfig, exported: list[ExportedSegment], report: ReportData
) -> Manifest:
    """The repository contract for this version, filled from measured figures only."""
    segments = [
        Segment(
            index=seg.index,
            file=seg.file,
            input=seg.input,
            hidden_output=seg.hidden_output,
            mask_input=seg.mask_input,
            logits_output=LOGITS,
            probs_output=PROBS,
            macs=report.segment_macs[seg.index],
            cumulative_fraction=report.cumulative[seg.index],
            thresholds={
                p: c.thresholds[seg.index] for p, c in report.choices.items() if p in POLICIES
            },
        )
        for seg in exported
    ]
    arch = trained.model.config  # a bring-your-own model's name, not the config's default
    options = ", ".join(f"{k}={v}" for k, v in sorted(arch.options.items()) if v != "")
    return Manifest(
        name=config.name,
        version=config.version,
        architecture=f"{arch.arch}({options})",
        input=exported[0].input,
        labels=list(trained.splits.train.labels),
        segments=segments,
        default_policy=report.default_policy,
        calibration=_calibration(report),
        training=_training(trained, config, report),
        text=_text_input(trained.model),
        patience=_patience(report),
    )


def _text_input(model: MultiExitNet) -> TextInput | None:
    """The tokenisation the server must repeat, exactly as training and calibration did."""
    if model.encoder is None:
        return None
    encoder = model.encoder
    return TextInput(
        tokenizer_file=TOKENIZER_FILE,
        max_length=encoder.max_length,
        pad_token=encoder.pad_token,
        pad_id=encoder.pad_id(),
    )


def _patience(report: ReportData) -> int | None:
    """The calibrated k, or None where no k holds the tolerance (the policy is refused)."""
    choice = report.choices.get(PATIENCE)
    return int(choice.thresholds[0]) if choice is not None and choice.feasible else None


def _calibration(report: ReportData) -> Calibration:
    chosen = report.choices[report.default_policy]
    test = report.test[report.default_policy]
    test_figures: dict[str, float | list[float]] = {
        "accuracy": test.accuracy,
        "final_exit_accuracy": report.test_accuracy_per_exit[-1],
        "compute_fraction": test.compute_fraction,
        "exit_distribution": test.exit_distribution,
        "accuracy_per_exit": report.test_accuracy_per_exit,
    }
    for policy, outcome in report.test.items():
        test_figures[f"{policy}_accuracy"] = outcome.accuracy
        test_figures[f"{policy}_compute_fraction"] = outcome.compute_fraction
    return Calibration(
        policy=report.default_policy,
        tolerance_pp=report.tolerance_pp,
        final_exit_accuracy=report.val_accuracy_per_exit[-1],
        accuracy=chosen.val.accuracy,
        exit_distribution=chosen.val.exit_distribution,
        compute_fraction=chosen.val.compute_fraction,
        per_policy={
            p: {
                "accuracy": c.val.accuracy,
                "compute_fraction": c.val.compute_fraction,
                "feasible": float(c.feasible),
            }
            for p, c in report.choices.items()
        },
        test=test_figures,
    )


def _training(trained: Trained, config: BuildConfig, report: ReportData) -> Training:
    weights = config.train.exit_weights or (1.0,) * trained.model.num_exits
    return Training(
        dataset=describe(config.data),
        mode=config.train.mode,
        distill=config.train.distill,
        seed=config.train.seed,
        epochs=config.train.epochs or trained.result.epochs,
        exit_weights=list(weights),
        train_samples=len(trained.splits.train),
        val_samples=len(trained.splits.val),
        test_accuracy_per_exit=report.test_accuracy_per_exit,
        torch_version=torch.__version__,
    )


def _publish(scratch: Path, final_dir: Path) -> None:
    """Swap the finished version in; the old one (if any) is removed only afterwards."""
    old = final_dir.with_name(f".{final_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final_dir.exists():
        final_dir.rename(old)
    scratch.rename(final_dir)
    shutil.rmtree(old, ignore_errors=True)
