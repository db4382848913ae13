"""Request heads already checked: a client sends the same JSON head with every request.

A binary-tensor request is a small JSON head (input name, shape, datatype, byte count,
outputs, parameters) and the tensor bytes. Clients build the head once per request shape,
so the server sees the same few heads over and over; parsing and checking one costs more
than the tensor's own decoding. A head that passed every check is remembered with what it
said; the same bytes again (for the same model version and sample limit) skip straight to
the tail, whose length is still checked per request. Heads carrying the data as JSON are
not kept: they are large and differ every time.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.manifest import Manifest
from service.protocol.outputs import OutputRequest
from service.protocol.tensors import F32, from_binary
from service.types import InferenceInput, PolicyOverride

MAX_HEAD = 1024  # bytes; a longer head is not kept
MAX_HEADS = 256  # heads kept at once; all are dropped when it is reached


@dataclass(frozen=True)
class Head:
    """What a checked binary-tensor head said."""

    manifest: Manifest
    request_id: str | None
    policy: PolicyOverride
    outputs: tuple[OutputRequest, ...]
    shape: list[int]
    datatype: str
    size: int  # bytes of tensor data that follow the head

    def request(self, data: F32) -> InferenceInput:
        m = self.manifest
        return InferenceInput(m.name, m.version, data, self.policy, self.request_id or "")

    def tensor(self, tail: memoryview, field: str) -> F32:
        """The tail as the input tensor (its length checked as a fresh parse would)."""
        return from_binary(tail, self.datatype, self.shape, field)


class HeadCache:
    """Checked heads by (bytes, model version, sample limit); safe from any thread, since
    each operation is one dict call under the GIL."""

    def __init__(self) -> None:
        self._heads: dict[tuple[bytes, int, int], Head] = {}

    def get(self, head: memoryview, manifest: Manifest, max_samples: int) -> Head | None:
        if len(head) > MAX_HEAD:
            return None
        found = self._heads.get((bytes(head), id(manifest), max_samples))
        return found if found is not None and found.manifest is manifest else None

    def put(self, head: memoryview, entry: Head, max_samples: int) -> None:
        if len(head) > MAX_HEAD:
            return
        if len(self._heads) >= MAX_HEADS:
            self._heads = {}
        self._heads[(bytes(head), id(entry.manifest), max_samples)] = entry
