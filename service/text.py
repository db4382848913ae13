"""Text models on the serving path: strings to token rows, and rows that carry their mask.

A text model's segments take two tensors (token ids or hidden states, and the attention
mask) whose sequence axis differs from batch to batch: each request is tokenised and
padded to its longest text, a stage batch pads its pieces to the longest among them, and
survivors are trimmed to their own longest text before the next stage, so no stage pays
for padding a batch no longer holds. Padding is right-sided and masked, so trimming or
adding padded columns leaves every real token's result unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.manifest import Manifest
from models.tokenize import TextEncoder

IntArray = npt.NDArray[np.int64]
BYTES_PER_TOKEN = 256  # a text longer than max_length * this is refused, not tokenised
GROUP_MIN_ROWS = 8  # a smaller batch is run as it is: another run costs more than padding
GROUP_WASTE = 1.25  # positions run / real tokens above which a batch is split by length


@dataclass(frozen=True)
class TextRows:
    """Rows of one text batch: `data` is (N, T) ids or (N, T, H) hidden states, `mask`
    (N, T) int64 with 1 for a token and 0 for padding (ones first in every row)."""

    data: npt.NDArray[Any]
    mask: IntArray

    def __len__(self) -> int:
        return len(self.data)

    @property
    def nbytes(self) -> int:
        """Host memory the rows hold (the scheduler's bytes-in-flight budget counts it)."""
        return int(self.data.nbytes + self.mask.nbytes)

    @property
    def width(self) -> int:
        """The sequence axis's length T."""
        return int(self.mask.shape[1])

    def take(self, rows: IntArray) -> TextRows:
        """Rows `rows`, in that order, trimmed to the longest of them."""
        mask = self.mask[rows]
        width = max(int(mask.sum(axis=1).max(initial=0)), 1)
        return TextRows(self.data[rows, :width], mask[:, :width])


def concat_rows(parts: Sequence[TextRows]) -> TextRows:
    """The rows of every part, in order, padded to the longest width among them."""
    if len(parts) == 1:
        return parts[0]
    width = max(p.width for p in parts)
    data = [_pad(p.data, width) for p in parts]
    mask = [_pad(p.mask, width) for p in parts]
    return TextRows(np.concatenate(data), np.concatenate(mask))


def length_groups(x: TextRows) -> list[IntArray] | None:
    """Two row groups, shorter texts first, when padding to the longest would cost more
    than GROUP_WASTE times the real tokens; None when the batch should run as one.

    Each group is then trimmed to its own longest text (`take`), and a group may be split
    again: a batch of mixed lengths costs about what its texts do, not rows × longest."""
    if len(x) < GROUP_MIN_ROWS:
        return None
    lengths = x.mask.sum(axis=1)
    if len(x) * x.width <= GROUP_WASTE * float(lengths.sum()):
        return None
    order = np.argsort(lengths, kind="stable")
    half = len(order) // 2
    return [order[:half], order[half:]]


def _pad(x: npt.NDArray[Any], width: int) -> npt.NDArray[Any]:
    """Zeros after the sequence axis's end up to `width` (pad ids are 0 in the manifests
    exitserve writes; a padded position is masked, so its value never matters)."""
    if x.shape[1] == width:
        return x
    pad = [(0, 0), (0, width - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
    return np.pad(x, pad)


class TextInputError(ValueError):
    """A text the model cannot take; the message names the element and the problem."""


class Tokens:
    """A version's tokenisation, as its manifest declares it (the tokenizer file is in the
    version folder), with the input checks the protocol layer cannot make alone."""

    def __init__(self, manifest: Manifest, version_dir: Path) -> None:
        if manifest.text is None:
            raise ValueError(f"model '{manifest.name}' is not a text model")
        spec = manifest.text
        self.name = spec.input_name
        self.max_length = spec.max_length
        self.max_bytes = spec.max_length * BYTES_PER_TOKEN
        self._encoder = TextEncoder(
            version_dir / spec.tokenizer_file, spec.max_length, spec.pad_token
        )
        self._encoder.pad_id()  # a tokenizer file that cannot load fails the load, not a request

    def encode(self, items: Sequence[bytes | str]) -> TextRows:
        """Ids and mask for the texts, padded to the longest; bad elements are named."""
        texts = [self._text(i, item) for i, item in enumerate(items)]
        ids, mask = self._encoder.encode(texts)
        return TextRows(ids, mask)

    def _text(self, index: int, item: bytes | str) -> str:
        where = f"input '{self.name}' element {index}"
        if len(item) > self.max_bytes:
            raise TextInputError(
                f"{where} is {len(item)} long; the limit is {self.max_bytes} "
                f"(texts are cut to {self.max_length} tokens anyway)"
            )
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TextInputError(f"{where} is not valid UTF-8 (byte {exc.start})") from None
        if not item.strip():
            raise TextInputError(f"{where} is empty: a text needs at least one word")
        return item
