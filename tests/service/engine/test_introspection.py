"""Server/model metadata, Triton model config and statistics on the real model."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from service.errors import NotFound
from service.settings import Settings
from service.types import InferenceInput
from tests.service.engine.conftest import Reference, run, started


def test_metadata_config_and_stats(
    make_settings: Callable[..., Settings], reference: Reference
) -> None:
    settings = make_settings(batching={"max_batch_size": 16, "max_queue_delay_ms": 1.5})

    async def test() -> None:
        async with started(settings) as plane:
            server = plane.server_metadata()
            assert server["name"] == "exitserve"
            assert "binary_tensor_data" in server["extensions"]

            meta = plane.model_metadata("tiny")
            assert meta["platform"] == "onnxruntime_onnx"
            assert meta["versions"] == ["1"]
            assert meta["inputs"] == [
                {"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}
            ]
            assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
                "label": ("INT64", [-1]),
                "probabilities": ("FP32", [-1, 10]),
                "confidence": ("FP32", [-1]),
                "exit_index": ("INT32", [-1]),
            }

            config = plane.model_config("tiny", "1")
            assert config["max_batch_size"] == settings.max_samples_per_request
            assert config["input"][0]["data_type"] == "TYPE_FP32"
            assert config["input"][0]["dims"] == [1, 28, 28]
            assert config["dynamic_batching"] == {
                "max_queue_delay_microseconds": 1500,
                "preferred_batch_size": [16],
            }
            assert config["parameters"]["exits"] == {"string_value": "3"}

            await plane.infer(InferenceInput("tiny", None, reference.x[:5]))
            (stats,) = plane.model_stats("tiny")["model_stats"]
            assert stats["name"] == "tiny"
            assert stats["version"] == "1"
            assert stats["inference_count"] == 5
            assert stats["execution_count"] >= 1
            assert stats["last_inference"] > 0
            infer = stats["inference_stats"]
            assert infer["compute_infer"]["count"] == stats["execution_count"]
            assert infer["compute_infer"]["ns"] > 0
            assert infer["queue"]["count"] >= 1
            assert plane.model_stats()["model_stats"] == [stats]
            with pytest.raises(NotFound):
                plane.model_stats("tiny", "9")
            with pytest.raises(NotFound):
                plane.model_config("nope")

    run(test)
