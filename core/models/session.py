"""ONNX Runtime sessions: created with the engine's options, and the providers on offer.

Example:
    >>> session = create_session(data, SessionConfig(intra_op_threads=1))
"""

from __future__ import annotations

import atexit
import os
import tempfile

import onnxruntime as ort

from core.config import SessionConfig, default_intra_op_threads
from core.errors import ModelLoadError
from .memory import memory_budget

__all__ = ["create_session", "available_providers"]

_OPT_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def available_providers() -> list[str]:
    """Short names of the execution providers this onnxruntime build offers ('cpu', 'cuda')."""
    have = set(ort.get_available_providers())
    return [short for short, full in _PROVIDERS.items() if full in have]


#: How a session's creation failure begins (the probe tells it from a refusal by this).
SESSION_FAILED = "ONNX Runtime could not create a session for this model"


_EMPTY_DIR: list[str] = []


def _empty_dir() -> str:
    """A folder of this process's own that stays empty (0700): where ONNX Runtime looks for
    a model's external data, so a tensor the checks missed finds nothing to read (loaded
    from bytes, it looked in the working directory: the server's data and logs)."""
    if not _EMPTY_DIR:
        path = tempfile.mkdtemp(prefix="batchlab-no-external-data-")
        atexit.register(_remove, path)
        _EMPTY_DIR.append(path)
    return _EMPTY_DIR[0]


def _remove(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:   # (gone, or not empty: left as it is)
        pass


def create_session(data: bytes, options: SessionConfig, arena: bool = True,
                   fold: bool = True) -> ort.InferenceSession:
    """A session of ``data`` with ``options``; ``fold=False``: without ONNX Runtime's
    constant folding (for a model whose folded sizes cannot be told before it folds:
    :mod:`core.models.folding`), what it would fold then computed at run time, in the
    arena, under the budget."""
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                  _empty_dir())
    opts.enable_cpu_mem_arena = arena
    opts.intra_op_num_threads = (default_intra_op_threads() if options.intra_op_threads is None
                                 else options.intra_op_threads)
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = _OPT_LEVELS[options.graph_optimization]
    # Fatal only: every error of a run reaches its request as an exception, and runs
    # stopped on purpose (RunOptions.terminate) would otherwise log an error each.
    opts.log_severity_level = 4
    if memory_budget() is not None and arena:
        # Allocate from the process's shared arena, capped at the engine's memory budget.
        opts.add_session_config_entry("session.use_env_allocators", "1")
    provider = _PROVIDERS[options.provider]
    if provider not in ort.get_available_providers():
        raise ModelLoadError(
            f"execution provider {options.provider!r} is not available in this onnxruntime "
            f"build (available: {', '.join(available_providers())}); install onnxruntime-gpu "
            "for CUDA, or use provider='cpu'")
    providers = [provider] if provider == "CPUExecutionProvider" else [provider,
                                                                        "CPUExecutionProvider"]
    try:
        return ort.InferenceSession(data, sess_options=opts, providers=providers,
                                    disabled_optimizers=None if fold else ["ConstantFolding"])
    except Exception as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"{SESSION_FAILED}: {msg}. "
                             "Check that its opset and operators are supported by onnxruntime "
                             f"{ort.__version__}") from None
