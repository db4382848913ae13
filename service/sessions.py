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

import ctypes
import logging
import os
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
_cuda: tuple[bool, str] | None = None  # (usable, why), probed once per process
_announced: set[Placement] = set()
ORT_DEFAULT_SEVERITY = 2  # onnxruntime's own default (warning); this server never changes it
ORT_QUIET = 4  # fatal only


class ProviderError(RuntimeError):
    """The configured device cannot be used (e.g. device=cuda without a working CUDA)."""


@dataclass(frozen=True)
class Placement:
    """Where a model's sessions run; `device_type` is OrtValue's name for it."""

    provider: str
    device_type: str  # "cuda" or "cpu"
    device_id: int = 0


def choose_placement(settings: Settings) -> Placement:
    """CUDA where it can be created (device=auto|cuda), else CPU; says which, once."""
    if settings.device == "cpu":
        return _announce(Placement(CPU, "cpu"), "device=cpu")
    usable, why = cuda_probe()
    if usable:
        return _announce(Placement(CUDA, "cuda"), f"device={settings.device}: {why}")
    if settings.device == "cuda":
        raise ProviderError(f"device=cuda, but onnxruntime cannot use CUDA: {why}")
    return _announce(Placement(CPU, "cpu"), f"device=auto and {why}")


def _announce(placement: Placement, why: str) -> Placement:
    """One INFO line per process and placement: the operator's answer to "CPU or GPU?"."""
    with _lock:
        if placement not in _announced:
            _announced.add(placement)
            log.info("onnxruntime execution provider: %s (%s)", placement.provider, why)
    return placement


def cuda_available() -> bool:
    """Whether a CUDA session can really be created; probed once per process."""
    return cuda_probe()[0]


def cuda_probe() -> tuple[bool, str]:
    """(usable, why): whether onnxruntime can run sessions on CUDA here, and the reason.

    `get_available_providers` lists CUDA whenever onnxruntime-gpu is installed, even on a
    host without a GPU or without the CUDA libraries, so only a real session tells. Its
    failure is logged by onnxruntime in red at error level on every CPU-only start, so the
    probe runs with onnxruntime's logger quieted and finds the reason itself.
    """
    global _cuda
    with _lock:
        if _cuda is None:
            _cuda = _probe_cuda()
        return _cuda


def _probe_cuda() -> tuple[bool, str]:
    if CUDA not in ort.get_available_providers():
        return False, "this onnxruntime build has no CUDA provider"
    from service.ort_graphs import gather_model  # a tiny graph is enough to probe

    ort.set_default_logger_severity(ORT_QUIET)
    try:
        sess = ort.InferenceSession(gather_model(1, 2), providers=[CUDA, CPU])
        got = sess.get_providers()[0]
    except Exception as exc:  # any failure means "no CUDA here"
        return False, f"CUDA provider failed: {type(exc).__name__}"
    finally:
        ort.set_default_logger_severity(ORT_DEFAULT_SEVERITY)
    if got == CUDA:
        return True, "CUDA provider available"
    return False, f"CUDA provider unavailable: {_cuda_library_problem()}"


def _cuda_library_problem() -> str:
    """Why onnxruntime's CUDA provider library does not load, in the loader's own words.

    Loaded the way onnxruntime loads it (the shared bridge first, with global symbols);
    called only after onnxruntime itself fell back to CPU, so a working GPU host never
    loads anything here.
    """
    capi = Path(ort.__file__).parent / "capi"
    try:
        ctypes.CDLL(str(capi / "libonnxruntime_providers_shared.so"), mode=os.RTLD_GLOBAL)
        ctypes.CDLL(str(capi / "libonnxruntime_providers_cuda.so"))
    except OSError as exc:
        return str(exc).replace(str(capi) + os.sep, "")
    return "its libraries load, but no usable GPU or driver was found"


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
    log.debug("%s runs on %s", label, got)
    return sess
