"""All server settings in one place: flags and `EXITSERVE_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.paths import bundled_repository
from service.fidelity.config import FidelityConfig

ENV_PREFIX = "EXITSERVE_"


class BatchingConfig(BaseModel):
    """Per-stage batching, overridable per model (Triton's dynamic batcher knobs)."""

    max_batch_size: int = Field(32, ge=1, le=4096, description="most samples in one segment run")
    max_queue_delay_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="longest a sample waits for its batch to fill; 0 = greedy: a free stage "
        "runs at once on what is queued, so batches form from what arrived while it was busy",
    )
    survivor_delay_ms: float | None = Field(
        None,
        ge=0,
        le=1000,
        description="the same wait at the stages after the first, where survivors of earlier "
        "batches merge; None = max_queue_delay_ms. Those batches are small, and a request "
        "waits for its slowest row: 0 on GPUs (docs/benchmarks.md, GPU section)",
    )

    max_batch_sizes: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=list,
        description="per-stage max_batch_size, stage 0 first (comma-separated as a flag); a "
        "stage past the list's end takes max_batch_size, and entries past a model's last stage "
        "are ignored (the list may serve models of several depths). On a GPU a small stage-0 "
        "batch leaves it idle while later stages see few rows",
    )
    batches_in_flight: int = Field(
        1,
        ge=1,
        le=16,
        description="batches of one stage running at once, each on its own worker thread "
        "(executor_threads): 1 on CPU, where one run already uses every core; 2 on GPUs, so "
        "the device runs the next batch while the last one's answers are handled",
    )

    def max_batch_at(self, stage: int) -> int:
        """The most rows in one run of `stage`."""
        sizes = self.max_batch_sizes
        return sizes[stage] if stage < len(sizes) else self.max_batch_size

    def delay_at(self, stage: int) -> float:
        """The wait, in seconds, at `stage`."""
        later = self.survivor_delay_ms
        ms = self.max_queue_delay_ms if stage == 0 or later is None else later
        return ms / 1000.0


class Settings(BaseSettings):
    """Server settings; each can be set as `EXITSERVE_<NAME>` or as a CLI flag."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    model_repository: Path = Field(
        default_factory=bundled_repository,
        description="folder of <model>/<version>/manifest.json + segments",
    )
    host: str = Field("127.0.0.1", description="bind address; 0.0.0.0 in containers")
    http_port: int = Field(8000, ge=1, le=65535, description="v2/v1 inference API port")
    metrics_port: int = Field(8002, ge=0, le=65535, description="Prometheus /metrics; 0 = off")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA provider where it can be created, else CPU"
    )
    intra_op_threads: int = Field(
        0, ge=0, le=256, description="threads in the shared onnxruntime pool; 0 = one per core"
    )
    allow_spinning: bool = Field(
        False, description="let idle onnxruntime threads spin; off so stages don't steal cores"
    )
    thread_pool: Literal["per_session", "global"] = Field(
        "per_session",
        description="onnxruntime CPU threads: a pool per segment session (spinning per "
        "allow_spinning) or one process-wide pool; per_session measured faster on 2 cores",
    )
    cudnn_conv_algo_search: Literal["HEURISTIC", "EXHAUSTIVE", "DEFAULT"] = Field(
        "HEURISTIC",
        description="how the CUDA provider picks convolution algorithms; early exit sends "
        "batches of every size, and EXHAUSTIVE benchmarks each new shape (measured on an "
        "H100: early exit 4.5x slower than full depth with it, docs/benchmarks.md)",
    )
    io_binding: Literal["auto", "on", "off"] = Field(
        "auto",
        description="keep hidden states where the provider put them (I/O binding); auto = "
        "on for CUDA, off for CPU; on forces the bound path on CPU too (tests)",
    )
    executor_threads: int = Field(
        0,
        ge=0,
        le=64,
        description="worker threads that run segment batches off the event loop; 0 = auto: "
        "1 on CPU (one run already uses every core; more only oversubscribe them), 4 on CUDA",
    )
    inline_max_ms: float = Field(
        2.0,
        ge=0,
        le=100,
        description="run a segment on the event loop, not a worker thread, when its request "
        "is the only one in flight and the run is expected to take at most this long: two "
        "thread handoffs saved at low load (stage 0 then runs as the request is admitted, "
        "without the queue); 0 = never (docs/benchmarks.md)",
    )
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    scheduling: Literal["stage", "naive", "none"] = Field(
        "stage",
        description="stage: survivors of several batches merge at each stage (the product); "
        "naive: a batch runs on alone until all its rows exit; none: one request per batch. "
        "The last two exist to benchmark against.",
    )
    model_batching: dict[str, BatchingConfig] = Field(
        default_factory=dict, description="per-model overrides of `batching`, keyed by model name"
    )
    fidelity: FidelityConfig = Field(
        default_factory=FidelityConfig,
        description="fidelity control (docs/fidelity.md): shadow sampling and threshold "
        "control, on for every model with a calibration",
    )
    model_fidelity: dict[str, FidelityConfig] = Field(
        default_factory=dict, description="per-model overrides of `fidelity`, keyed by model name"
    )
    max_body_bytes: int = Field(16 << 20, ge=1024, description="largest request body accepted")
    max_samples_per_request: int = Field(1024, ge=1, description="largest batch one request sends")
    max_queue_samples: int = Field(
        4096, ge=1, description="samples waiting per stage before new requests get 429"
    )
    max_inflight_bytes: int = Field(
        512 << 20,
        ge=1,
        description="bytes admitted requests may hold, all models together, before new ones "
        "get 429: each request counts its input plus, per sample, the model's largest hidden "
        "state and its answer. Rows alone cannot bound memory: a sample's hidden state can be "
        "30x its input (mnist: 3 KB in, 100 KB hidden). 512 MiB fits the 2 GiB pod limit",
    )
    request_timeout_s: float = Field(30.0, gt=0, description="504 after this long in the server")
    drain_timeout_s: float = Field(
        20.0, gt=0, description="on SIGTERM, how long queued requests get to finish"
    )
    max_header_bytes: int = Field(
        32 << 10,
        ge=1024,
        le=1 << 20,
        description="largest request head (request line + headers); a longer one gets 431 "
        "and the connection closes. Also bounds the parser's header building, whose cost "
        "grows with the square of a header's length",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="a request head must be complete this long after its first byte (or "
        "after the connection opens); else 408 and the connection closes (slowloris)",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="a request body must be complete this long after its head; else 408 and "
        "the connection closes. At max_body_bytes' default this asks about 0.56 MB/s of a client",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="open HTTP connections served at once; a request on a connection beyond "
        "them gets 503 + Retry-After and the connection closes. Each costs at most "
        "max_header_bytes before its head, max_body_bytes after",
    )
    keep_alive_timeout_s: int = Field(
        5,
        ge=1,
        le=3600,
        description="an idle keep-alive connection closes after this long; behind a load "
        "balancer that reuses connections, set it above the balancer's idle timeout",
    )
    max_requests_per_connection: int = Field(
        1000,
        ge=0,
        description="answer with `Connection: close` after this many requests on one "
        "connection, so long-lived clients spread over replicas again; 0 = no limit",
    )
    admin_token: SecretStr | None = Field(None, description="bearer token for /v2/repository")
    admin_auth_disabled: bool = Field(
        False, description="explicitly allow repository calls without a token"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = Field(
        False,
        description="log one line per HTTP request; off by default, it costs throughput: v2 "
        "infer then goes through FastAPI's routes, not the protocol's infer lane",
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.metrics_port and self.metrics_port == self.http_port:
            raise ValueError("metrics_port must differ from http_port")
        if not self.model_repository.is_dir():
            raise ValueError(f"model_repository {self.model_repository} is not a folder")
        return self

    def batching_for(self, model: str) -> BatchingConfig:
        """The model's own batching override, else the server default."""
        if self.scheduling == "none":
            return BatchingConfig(max_batch_size=1, max_queue_delay_ms=0)
        return self.model_batching.get(model, self.batching)

    def fidelity_for(self, model: str) -> FidelityConfig:
        """The model's own fidelity settings, else the server default."""
        return self.model_fidelity.get(model, self.fidelity)
