"""A head seen before skips its checks (service/protocol/v2_heads.py): the answer must be
what a fresh parse gives, for every tail, model version and sample limit."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from service.errors import BadRequest
from service.protocol import v2_decode
from service.protocol.v2_decode import DecodedInfer, decode_infer
from service.protocol.v2_heads import HeadCache
from tests.service.api.test_codec import MANIFEST, X, _binary, _json


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    v2_decode.HEADS = HeadCache()
    yield
    v2_decode.HEADS = HeadCache()


def _uncached(body: bytes, length: str | None, max_samples: int = 8) -> DecodedInfer:
    v2_decode.HEADS = HeadCache()
    return decode_infer(body, length, MANIFEST, max_samples)


def test_the_same_head_with_new_data_decodes_the_new_data() -> None:
    body, length = _binary(X, parameters={"threshold": 0.5}, id="same")
    first = decode_infer(body, length, MANIFEST, 8)
    other = (X + 1.0).astype(np.float32)
    body2, length2 = _binary(other, parameters={"threshold": 0.5}, id="same")
    assert length2 == length
    second = decode_infer(body2, length2, MANIFEST, 8)
    assert v2_decode.HEADS.get(memoryview(body2)[: int(length)], MANIFEST, 8) is not None
    np.testing.assert_array_equal(first.request.data, X)
    np.testing.assert_array_equal(second.request.data, other)
    assert second.request.policy.threshold == 0.5
    fresh = _uncached(body2, length2)
    np.testing.assert_array_equal(fresh.request.data, second.request.data)
    assert (fresh.request_id, fresh.outputs) == (second.request_id, second.outputs)
    assert (fresh.request.model, fresh.request.version) == (second.request.model, "3")
    assert fresh.request.policy == second.request.policy


@pytest.mark.parametrize("cut", [-4, 4], ids=["short tail", "stray bytes"])
def test_a_known_head_with_a_wrong_tail_is_refused_as_a_fresh_parse_would(cut: int) -> None:
    body, length = _binary()
    decode_infer(body, length, MANIFEST, 8)
    bad = body[:cut] if cut < 0 else body + b"\0" * cut
    with pytest.raises(BadRequest) as cached:
        decode_infer(bad, length, MANIFEST, 8)
    with pytest.raises(BadRequest) as fresh:
        _uncached(bad, length)
    assert cached.value.message == fresh.value.message


def test_a_head_is_kept_per_version_and_sample_limit() -> None:
    body, length = _binary()
    decode_infer(body, length, MANIFEST, 8)
    with pytest.raises(BadRequest, match="batch must be between 1 and 1"):
        decode_infer(body, length, MANIFEST, 1)
    other = MANIFEST.model_copy(update={"version": "4"})
    assert decode_infer(body, length, other, 8).request.version == "4"


def test_json_data_is_not_kept() -> None:
    decode_infer(_json(), None, MANIFEST, 8)
    assert not v2_decode.HEADS._heads
