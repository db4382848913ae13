"""The model repository contract: `manifest.json` beside the segment files.

Written by the export step, read and validated by the server. Torch-free on purpose: the
serving path imports this module.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION: Literal[1] = 1
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
VERSION_PATTERN = r"^[0-9]{1,9}$"
POLICIES = ("confidence", "entropy", "margin")
PolicyName = Literal["confidence", "entropy", "margin", "patience"]


class ManifestError(ValueError):
    """A manifest that is missing, unreadable or inconsistent; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """A tensor's name, v2 datatype and shape without the batch axis (-1: the sequence axis
    of a text model, which varies per batch)."""

    name: str = Field(min_length=1)
    datatype: Literal["FP32", "FP16", "INT64", "INT32"] = "FP32"
    shape: list[int] = Field(min_length=1)

    @field_validator("shape")
    @classmethod
    def _positive(cls, shape: list[int]) -> list[int]:
        if any(d <= 0 and d != -1 for d in shape):
            raise ValueError("every dimension must be a positive integer (or -1: dynamic)")
        return shape

    @property
    def dynamic(self) -> bool:
        return -1 in self.shape


class TextInput(_Strict):
    """How a text model's requests become segment 0's inputs: the server's preprocessing.

    One UTF-8 string per sample arrives as `input_name` (v2 BYTES, shape [-1]); the
    `tokenizers` library loads `tokenizer_file` from the version folder, truncates each text
    to `max_length` tokens (special tokens included) and pads each batch to its longest
    text with `pad_id`; segment 0 takes the ids and the mask (1 = token, 0 = padding).
    """

    input_name: str = Field("text", min_length=1)
    datatype: Literal["BYTES"] = "BYTES"
    tokenizer_file: str = Field(pattern=r"^[A-Za-z0-9_.-]+\.json$")
    max_length: int = Field(ge=2, le=4096)
    truncation: Literal["longest_first"] = Field(
        "longest_first", description="texts over max_length tokens are cut, not refused"
    )
    padding: Literal["batch_longest"] = Field(
        "batch_longest", description="pad to the longest text of each batch, not max_length"
    )
    pad_token: str = "[PAD]"
    pad_id: int = Field(0, ge=0)


class Segment(_Strict):
    """Segment k: the blocks after exit k-1 up to exit k, plus exit k's head."""

    index: int = Field(ge=0)
    file: str = Field(pattern=r"^[A-Za-z0-9_.-]+\.onnx$")
    input: TensorSpec
    hidden_output: TensorSpec | None = Field(
        description="hidden state passed to the next segment; None for the last segment"
    )
    mask_input: TensorSpec | None = Field(
        None, description="text: the attention mask (INT64 [-1]) every segment takes too"
    )
    logits_output: str
    probs_output: str
    macs: int = Field(gt=0, description="multiply-accumulates per sample, counted by the code")
    cumulative_fraction: float = Field(gt=0, le=1.0, description="share of full-depth compute")
    thresholds: dict[str, float] = Field(
        description="calibrated threshold per policy: confidence >= t, entropy <= t, margin >= t"
    )

    @field_validator("thresholds")
    @classmethod
    def _known_policies(cls, thresholds: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(thresholds) - set(POLICIES))
        if unknown:
            raise ValueError(f"unknown policies {unknown}; expected some of {list(POLICIES)}")
        for policy, value in thresholds.items():
            # NaN would make every comparison false: a policy that silently never exits
            if not math.isfinite(value):
                raise ValueError(f"{policy} threshold must be a finite number, got {value}")
            if policy in ("confidence", "margin") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{policy} threshold must lie in [0, 1], got {value}")
            if policy == "entropy" and value < 0.0:
                raise ValueError(f"entropy threshold must be >= 0, got {value}")
        return thresholds


class Calibration(_Strict):
    """How the thresholds were chosen and what they are expected to do."""

    policy: Literal["confidence", "entropy", "margin"]
    tolerance_pp: float = Field(ge=0)
    split: str = "validation"
    final_exit_accuracy: float = Field(ge=0, le=1)
    accuracy: float = Field(ge=0, le=1)
    exit_distribution: list[float]
    compute_fraction: float = Field(gt=0, le=1)
    per_policy: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="accuracy and compute_fraction per calibrated policy"
    )
    test: dict[str, float | list[float]] = Field(
        default_factory=dict, description="the same figures measured on the test set"
    )


class Training(_Strict):
    """Where the weights came from, so a result can be reproduced."""

    dataset: str
    mode: Literal["joint", "layerwise", "heads", "two_stage"]
    distill: float = Field(0.0, ge=0, le=1)
    seed: int
    epochs: int = Field(ge=0)
    exit_weights: list[float] = Field(default_factory=list)
    train_samples: int = Field(ge=0)
    val_samples: int = Field(ge=0)
    test_accuracy_per_exit: list[float] = Field(default_factory=list)
    torch_version: str = ""


class Manifest(_Strict):
    """One model version: what the server needs to load and run its segments."""

    format_version: Literal[1] = FORMAT_VERSION
    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    architecture: str
    input: TensorSpec
    labels: list[str] = Field(min_length=2)
    segments: list[Segment] = Field(min_length=1)
    default_policy: Literal["confidence", "entropy", "margin"] = "confidence"
    calibration: Calibration | None = None
    training: Training | None = None
    text: TextInput | None = Field(None, description="text models only: their tokenisation")
    patience: int | None = Field(
        None, ge=1, description="calibrated PABEE patience; None where none holds the tolerance"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        self._check_segments()
        self._check_text()
        fractions = [s.cumulative_fraction for s in self.segments]
        if fractions != sorted(fractions) or abs(fractions[-1] - 1.0) > 1e-6:
            raise ValueError("segments' cumulative_fraction must increase to 1.0")
        if self.calibration and len(self.calibration.exit_distribution) != len(self.segments):
            raise ValueError("calibration.exit_distribution needs one entry per segment")
        return self

    def _check_text(self) -> None:
        """Text: INT64 ids and a mask into every segment; images: no mask, no dynamic axes."""
        if self.text is None:
            for k, seg in enumerate(self.segments):
                if seg.mask_input is not None:
                    raise ValueError(f"segments[{k}].mask_input is for text models only")
            specs = [self.input, *(s.hidden_output for s in self.segments if s.hidden_output)]
            if any(spec.dynamic for spec in specs):
                raise ValueError("dynamic (-1) dimensions are for text models only")
            return
        if self.input.datatype != "INT64" or self.input.shape != [-1]:
            raise ValueError("input: a text model takes INT64 token ids of shape [-1]")
        for k, seg in enumerate(self.segments):
            mask = seg.mask_input
            if mask is None or mask.datatype != "INT64" or mask.shape != [-1]:
                raise ValueError(f"segments[{k}].mask_input must be an INT64 [-1] mask")

    def _check_segments(self) -> None:
        for k, seg in enumerate(self.segments):
            where = f"segments[{k}]"
            if seg.index != k:
                raise ValueError(f"{where}.index is {seg.index}, expected {k}")
            last = k == len(self.segments) - 1
            if last != (seg.hidden_output is None):
                raise ValueError(f"{where}.hidden_output must be null exactly for the last segment")
            if k == 0 and seg.input != self.input:
                raise ValueError(f"{where}.input must equal the model input")
            if k > 0:
                prev = self.segments[k - 1].hidden_output
                if prev is None or prev.shape != seg.input.shape:
                    raise ValueError(f"{where}.input.shape must equal segments[{k - 1}] hidden")
            if self.default_policy not in seg.thresholds:
                raise ValueError(f"{where}.thresholds lacks the default policy")

    @property
    def num_exits(self) -> int:
        return len(self.segments)


def load_manifest(version_dir: Path) -> Manifest:
    """Read and validate `<version_dir>/manifest.json`, checking that every segment file exists."""
    path = version_dir / MANIFEST_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ManifestError(f"{path.parent.name}: {MANIFEST_FILE} is missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{MANIFEST_FILE} is not valid JSON: {exc}") from exc
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(_describe(exc)) from exc
    missing = [s for s in manifest.segments if not (version_dir / s.file).is_file()]
    if missing:
        fields = ", ".join(f"segments.{s.index}.file" for s in missing)
        raise ManifestError(f"segment files missing: {[s.file for s in missing]} ({fields})")
    if manifest.text and not (version_dir / manifest.text.tokenizer_file).is_file():
        raise ManifestError(f"text.tokenizer_file {manifest.text.tokenizer_file!r} is missing")
    return manifest


def save_manifest(manifest: Manifest, version_dir: Path) -> Path:
    """Write the manifest, pretty-printed so that a diff of it reads well."""
    path = version_dir / MANIFEST_FILE
    # an image manifest reads as before: the text-only fields are left out while unset
    dumped = manifest.model_dump_json(indent=2, exclude=_unset_text_fields(manifest))
    path.write_text(dumped + "\n", encoding="utf-8")
    return path


def _unset_text_fields(manifest: Manifest) -> dict[str, Any]:
    exclude: dict[str, Any] = {f: True for f in ("patience",) if manifest.patience is None}
    if manifest.text is None:
        exclude |= {"text": True, "segments": {"__all__": {"mask_input"}}}
    return exclude


def _describe(exc: ValidationError) -> str:
    """One line per problem, each naming the field by its dotted path."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "manifest"
        parts.append(f"{loc}: {re.sub(r'^Value error, ', '', err['msg'])}")
    return "invalid manifest: " + "; ".join(parts)
