"""Texts to (input ids, attention mask) with the `tokenizers` library, as the server will.

Torch-free and transformers-free on purpose: this is the tokenisation the manifest
declares (tokenizer file, max length, truncation, padding to the batch's longest text),
so training, calibration, the parity check and the serving side all share one definition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from tokenizers import Tokenizer

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TextEncoder:
    """A tokenizer file with its max length; pads to the longest text of each call."""

    file: Path
    max_length: int
    pad_token: str = "[PAD]"

    def encode(self, texts: Sequence[str]) -> tuple[IntArray, IntArray]:
        """(ids, mask), both int64 (N, L) with L the longest text's length, at most max_length."""
        encoded = _tokenizer(self.file, self.max_length, self.pad_token).encode_batch(list(texts))
        ids = np.array([e.ids for e in encoded], dtype=np.int64).reshape(len(texts), -1)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64).reshape(ids.shape)
        return ids, mask

    def pad_id(self) -> int:
        """The padding token's id in this vocabulary (what padded positions hold)."""
        return _pad_id(_tokenizer(self.file, self.max_length, self.pad_token), self.pad_token)


def _pad_id(tokenizer: Tokenizer, pad_token: str) -> int:
    found = tokenizer.token_to_id(pad_token)
    if found is None:
        raise ValueError(f"the tokenizer has no {pad_token} token")
    return int(found)


@lru_cache(maxsize=16)
def _tokenizer(file: Path, max_length: int, pad_token: str) -> Tokenizer:
    """The file's tokenizer set to the manifest's rule, loaded once per process (the server
    encodes every request with it; `encode_batch` may be called from several threads)."""
    from tokenizers import Tokenizer  # imported when used: image-only servers never load it

    tokenizer = Tokenizer.from_file(str(file))
    # the file's own truncation/padding settings are replaced: the manifest's rule wins
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=_pad_id(tokenizer, pad_token), pad_token=pad_token)
    return tokenizer
