"""The v2 (Open Inference Protocol) and v1 JSON objects as pydantic models, for the OpenAPI
schema and the docs. Descriptions quote the spec (kserve/open-inference-protocol, REST).

The hot path does not validate bodies with these models (see `v2_decode`); they document
what that code accepts and what the routes return.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.types import PolicyKind

TensorData = list[Any]
DATA_DOC = (
    "The tensor's elements in row-major order, as a flat list or nested lists; "
    "omitted when the binary tensor extension carries them."
)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorResponse(BaseModel):
    """`$inference_error_response`: `{"error": <error message string>}`."""

    error: str = Field(description="what went wrong, naming the field at fault")


class ServerMetadataResponse(_Open):
    """`$metadata_server_response`."""

    name: str
    version: str
    extensions: list[str] = Field(description="the protocol extensions this server supports")


class MetadataTensor(BaseModel):
    """`$metadata_tensor`: a tensor's name, datatype and shape (-1 for a variable size)."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadataResponse(_Open):
    """`$metadata_model_response`."""

    name: str
    versions: list[str] | None = None
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class LiveResponse(BaseModel):
    live: bool


class ReadyResponse(BaseModel):
    ready: bool


class ModelReadyResponse(BaseModel):
    name: str
    version: str | None = None
    ready: bool


class InferenceParameters(BaseModel):
    """Request `parameters`: exitserve's exit-policy overrides and Triton's output switch."""

    model_config = ConfigDict(extra="forbid")

    policy: PolicyKind | None = Field(None, description="exit policy; default: the model's")
    threshold: float | None = Field(
        None, description="for every exit: confidence >= t, entropy <= t or margin >= t"
    )
    patience: int | None = Field(None, ge=1, description="PABEE's k: same label k exits running")
    max_exit: int | None = Field(None, ge=0, description="deepest exit a sample may take (0-based)")
    full_depth: bool | None = Field(None, description="run every sample to the last exit")
    binary_data_output: bool | None = Field(
        None, description="binary tensor extension: every output as raw bytes after the JSON"
    )
    priority: int | None = Field(None, description="accepted from Triton clients and ignored")
    timeout: int | None = Field(None, description="accepted from Triton clients and ignored")


class TensorParameters(_Open):
    binary_data_size: int | None = Field(
        None, ge=0, description="binary tensor extension: this input's byte count in the tail"
    )


class RequestInput(BaseModel):
    """`$request_input`."""

    name: str
    shape: list[int]
    datatype: Literal[
        "FP32",
        "FP64",
        "FP16",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
    ]
    parameters: TensorParameters | None = None
    data: TensorData | None = Field(None, description=DATA_DOC)


class OutputParameters(_Open):
    binary_data: bool | None = Field(None, description="send this output as raw bytes")


class RequestOutput(BaseModel):
    """`$request_output`: an output the client wants; all of them when none are named."""

    name: Literal["label", "probabilities", "confidence", "exit_index"]
    parameters: OutputParameters | None = None


class InferenceRequest(BaseModel):
    """`$inference_request`."""

    id: str | None = Field(None, description="echoed in the response")
    parameters: InferenceParameters | None = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    """`$response_output`."""

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data_size` when the data follows the JSON as raw bytes"
    )
    data: TensorData | None = Field(None, description=DATA_DOC)


class InferenceResponse(BaseModel):
    """`$inference_response`: label, probabilities, confidence and the 0-based exit_index."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class PredictRequest(BaseModel):
    """v1: `instances` are samples shaped like the model input (nested or flat)."""

    instances: list[Any] = Field(min_length=1)
    parameters: InferenceParameters | None = None


class Prediction(BaseModel):
    label: int
    confidence: float
    exit: int = Field(description="0-based exit that answered the sample")
    probabilities: list[float]


class PredictResponse(BaseModel):
    predictions: list[Prediction]


# Every model whose schema the OpenAPI document must hold, also when only referenced.
COMPONENTS: tuple[type[BaseModel], ...] = (InferenceRequest, PredictRequest)
