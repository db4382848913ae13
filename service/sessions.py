"""Creating onnxruntime sessions: which provider, which thread pool.

Several segment sessions run concurrently in one process, so thread pools are configured
deliberately. Measured on 2 cores (3-segment chain, 3 stages overlapping; medians of 6
interleaved runs): per-session pools with spinning off were the fastest and used the
least CPU; onnxruntime's Python API cannot switch spinning off for the global pool, whose
idle threads then compete with the other stages. Hence the default `thread_pool =
"per_session"` with `allow_spinning = False`; `"global"` remains a setting for hosts where
one shared pool wins. The global pool is process-wide and, once created, onnxruntime
refuses per-session pools, so from then on every session in the process uses it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from service.settings import Settings

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

_lock = threading.Lock()
_global_pool: tuple[int, int] | None = None
_cuda_ok: bool | None = None


class ProviderError(RuntimeError):
    """The configured device cannot be used (e.g. device=cuda without a working CUDA)."""


@dataclass(frozen=True)
class Placement:
    """Where a model's sessions run; `device_type` is OrtValue's name for it."""

    provider: str
    device_type: str  # "cuda" or "cpu"
    device_id: int = 0


def choose_placement(settings: Settings) -> Placement:
    """CUDA where it can be created (device=auto|cuda), else CPU."""
    if settings.device == "cpu":
        return Placement(CPU, "cpu")
    if cuda_available():
        return Placement(CUDA, "cuda")
    if settings.device == "cuda":
        raise ProviderError("device=cuda, but onnxruntime cannot create its CUDA provider")
    return Placement(CPU, "cpu")


def cuda_available() -> bool:
    """Whether a CUDA session can really be created; probed once per process.

    `get_available_providers` lists CUDA whenever onnxruntime-gpu is installed, even on a
    host without a GPU or without the CUDA libraries, so only a real session tells.
    """
    global _cuda_ok
    with _lock:
        if _cuda_ok is None:
            _cuda_ok = _probe_cuda()
            log.info("CUDA execution provider %s", "available" if _cuda_ok else "unavailable")
        return _cuda_ok


def _probe_cuda() -> bool:
    if CUDA not in ort.get_available_providers():
        return False
    from service.ort_graphs import gather_model  # a tiny graph is enough to probe

    try:
        sess = ort.InferenceSession(gather_model(1, 2), providers=[CUDA, CPU])
    except Exception:  # any failure means "no CUDA here"
        return False
    return bool(sess.get_providers()[0] == CUDA)


def session_options(settings: Settings) -> ort.SessionOptions:
    """Thread settings per `settings.thread_pool`; spinning per `settings.allow_spinning`."""
    opts = ort.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # once a process has the global pool, onnxruntime refuses per-session pools
    if settings.thread_pool == "global" or _global_pool is not None:
        _ensure_global_pool(settings.intra_op_threads)
        opts.use_per_session_threads = False
    else:
        opts.intra_op_num_threads = settings.intra_op_threads
        spin = "1" if settings.allow_spinning else "0"
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return opts


def _ensure_global_pool(intra: int) -> None:
    """onnxruntime allows one global pool per process: set it once, keep it after."""
    global _global_pool
    with _lock:
        wanted = (intra, 1)
        if _global_pool is None:
            try:
                ort.set_global_thread_pool_sizes(intra, 1)
            except Exception as exc:  # created earlier in this process
                log.warning("global onnxruntime thread pool already exists: %s", exc)
            _global_pool = wanted
        elif _global_pool != wanted:
            log.warning("the process-wide onnxruntime pool keeps its %s threads", _global_pool)


def cuda_options(settings: Settings, placement: Placement) -> dict[str, str]:
    """CUDA provider options; the algorithm search matters because batch sizes vary."""
    options: dict[str, str] = {"cudnn_conv_algo_search": settings.cudnn_conv_algo_search}
    if placement.device_id:  # naming device 0 makes onnxruntime 1.31 warn per session
        options["device_id"] = str(placement.device_id)
    return options


def create_session(
    source: Path | bytes, settings: Settings, placement: Placement, label: str
) -> ort.InferenceSession:
    """A session on `placement`; a silent fallback to another provider is an error.

    The CUDA probe already decided where the model runs, and a model whose sessions sit on
    different devices would break the bound (device-resident) path.
    """
    providers: list[str | tuple[str, dict[str, str]]] = [CPU]
    if placement.provider == CUDA:
        providers.insert(0, (CUDA, cuda_options(settings, placement)))
    model = str(source) if isinstance(source, Path) else source
    sess = ort.InferenceSession(model, session_options(settings), providers=providers)
    got = sess.get_providers()[0]
    if got != placement.provider:
        raise ProviderError(f"{label}: wanted {placement.provider}, onnxruntime gave {got}")
    log.info("%s runs on %s", label, got)
    return sess
