"""Texts to (input ids, attention mask) with the `tokenizers` library, as the server will.

Torch-free and transformers-free on purpose: this is the tokenisation the manifest
declares (tokenizer file, max length, truncation, padding to the batch's longest text),
so training, calibration, the parity check and the serving side all share one definition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TextEncoder:
    """A tokenizer file with its max length; pads to the longest text of each call."""

    file: Path
    max_length: int
    pad_token: str = "[PAD]"

    def encode(self, texts: Sequence[str]) -> tuple[IntArray, IntArray]:
        """(ids, mask), both int64 (N, L) with L the longest text's length, at most max_length."""
        from tokenizers import Tokenizer  # the serving side's library, imported when used

        tokenizer = Tokenizer.from_file(str(self.file))
        # the file's own truncation/padding settings are replaced: the manifest's rule wins
        tokenizer.enable_truncation(max_length=self.max_length)
        tokenizer.enable_padding(pad_id=self.pad_id(tokenizer), pad_token=self.pad_token)
        encoded = tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encoded], dtype=np.int64).reshape(len(texts), -1)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64).reshape(ids.shape)
        return ids, mask

    def pad_id(self, tokenizer: object | None = None) -> int:
        """The padding token's id in this vocabulary (what padded positions hold)."""
        from tokenizers import Tokenizer

        tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.from_file(str(self.file))
        found = tok.token_to_id(self.pad_token)
        if found is None:
            raise ValueError(f"{self.file.name} has no {self.pad_token} token")
        return int(found)
