"""The engine's memory budget, enforced where memory is allocated.

The budget is split between the two places a served model's memory comes from:

* three quarters cap ONNX Runtime: every session of the process allocates its tensors
  from one shared CPU arena registered with ONNX Runtime's environment
  (``create_and_register_allocator``) with that maximum; sessions opt in with
  ``session.use_env_allocators``;
* an eighth bounds each input Batchlab generates itself (``sample_input``, warm-up, "Run
  one prediction"), checked before anything is allocated (:func:`check_elements`): the
  input and the copy of its output live outside the arena, so together they stay within
  the last quarter.

ONNX Runtime keeps what its arena has grown to for reuse, so the arena's cap is what
bounds the process; after a large output the arena is shrunk once the output is gone
(:mod:`core.models.shrink`). A model that asks for more than is left — a 218-byte ``ConstantOfShape([30000, 30000])`` wants 3.6 GB on its first
run — then fails that run with ONNX Runtime's "Available memory of ... is smaller than
requested bytes" (surfaced as an :class:`~core.errors.InferenceError` of that request)
instead of growing the process until the kernel kills it; other models keep serving.

The arena is per process and can be registered once: the first engine's budget holds
for the life of the process (:func:`memory_budget` says which is in force).

Example:
    >>> install_memory_budget(2 * 2**30)      # once per process; returns the budget in force
    2147483648
    >>> check_elements("input 'x'", (1, 2**31 - 1), np.float32, generated_input_limit(2**31))
    Traceback (most recent call last):
    ResourceLimitError: input 'x' of shape [1,2147483647] float32 needs 8.0 GiB, over ...
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import threading
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from core.errors import ResourceLimitError

__all__ = ["default_memory_budget", "install_memory_budget", "memory_budget",
           "request_bytes_limit",
           "arena_limit", "generated_input_limit", "check_elements", "peak_rss_bytes",
           "current_rss_bytes", "proc_status_bytes", "format_bytes"]

log = logging.getLogger("batchlab.memory")

_lock = threading.Lock()
_installed: int | None = None

#: Shares of the budget: ONNX Runtime's arena, and one generated input.
ARENA_SHARE = 0.75
GENERATED_SHARE = 0.125

_MIN_BUDGET = 512 * 2**20
_MAX_BUDGET = 16 * 2**30


def format_bytes(n: float) -> str:
    """``'1.5 GiB'``, ``'640 KiB'``: a size the way messages and pages show it."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def default_memory_budget() -> int:
    """A quarter of the machine's physical memory, between 512 MiB and 16 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return int(min(_MAX_BUDGET, max(_MIN_BUDGET, total // 4)))


def install_memory_budget(budget_bytes: int) -> int:
    """Register the shared, capped CPU arena (once per process); returns the budget in
    force, which is the first one installed."""
    global _installed
    with _lock:
        if _installed is not None:
            if budget_bytes != _installed:
                log.warning("the memory budget of this process is already %s; %s asked for "
                            "by a later engine is not applied", format_bytes(_installed),
                            format_bytes(budget_bytes))
            return _installed
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                 ort.OrtMemType.DEFAULT)
        # max_mem, arena_extend_strategy (-1: default), initial_chunk_size_bytes,
        # max_dead_bytes_per_chunk (defaults)
        ort.create_and_register_allocator(
            info, ort.OrtArenaCfg(arena_limit(int(budget_bytes)), -1, -1, -1))
        _installed = int(budget_bytes)
        return _installed


def arena_limit(budget_bytes: int) -> int:
    """What ONNX Runtime's shared arena may hold under ``budget_bytes``."""
    return int(budget_bytes * ARENA_SHARE)


def generated_input_limit(budget_bytes: int | None) -> int | None:
    """The largest input Batchlab generates itself under ``budget_bytes``."""
    return None if budget_bytes is None else int(budget_bytes * GENERATED_SHARE)


def request_bytes_limit(budget_bytes: int | None = None) -> int:
    """What one request may take beyond the arena, at least 64 MiB: its JSON parsed, its
    answer's JSON, a model's queued inputs (the share of :func:`generated_input_limit`, of
    ``budget_bytes``, else of the budget in force, else of the default)."""
    budget = budget_bytes or memory_budget() or default_memory_budget()
    return max(64 * 2**20, int(budget * GENERATED_SHARE))


def memory_budget() -> int | None:
    """The budget in force in this process (``None`` before any engine installed one)."""
    return _installed


def check_elements(what: str, shape: Sequence[int], dtype: np.dtype | type,
                   limit_bytes: int | None) -> int:
    """Bytes an array of ``shape`` and ``dtype`` needs; raises :class:`ResourceLimitError`
    naming ``what`` and its largest dimension when that is over ``limit_bytes`` (see
    :func:`generated_input_limit`)."""
    itemsize = np.dtype(dtype).itemsize
    n = 1
    for d in shape:
        n *= int(d)
    need = n * itemsize
    if limit_bytes is not None and need > limit_bytes:
        dims = ",".join(str(int(d)) for d in shape)
        big = max(range(len(shape)), key=lambda i: int(shape[i])) if len(shape) else 0
        raise ResourceLimitError(
            f"{what} of shape [{dims}] {np.dtype(dtype)} needs {format_bytes(need)}, over the "
            f"{format_bytes(limit_bytes)} the engine generates at most (1/8 of its memory "
            f"budget of {format_bytes(limit_bytes / GENERATED_SHARE)}; dimension {big} is "
            f"{int(shape[big]) if len(shape) else 0}); use fewer rows, a smaller size for "
            "dynamic dimensions, or raise EngineConfig.memory_budget_bytes")
    return need


def proc_status_bytes(field: str) -> int | None:
    """A size field of ``/proc/self/status`` (``VmHWM``, ``VmSize``...) in bytes; ``None``
    where it is unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far.

    From ``VmHWM`` in /proc (the high-water mark of this address space); ``ru_maxrss`` is
    only the fallback, as on Linux it carries over the parent's RSS at fork into a child.
    """
    hwm = proc_status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks",
                                               "keepcost")]


def libc_function(name: str) -> Any:
    """The C library's function ``name`` (``malloc_trim``, ``mallopt``, ``mallinfo2``...),
    or None where this process's C library has none of that name (not glibc, or older)."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def _mallinfo2() -> Any:
    fn = libc_function("mallinfo2")   # glibc 2.33+
    if fn is not None:
        fn.restype = _MallInfo2
    return fn


_MALLINFO2 = _mallinfo2()


def heap_in_use_bytes() -> int:
    """Bytes malloc has handed out and not had back, every thread's (glibc's
    ``mallinfo2``: what ONNX Runtime allocates goes there); the resident set where that is
    not available. Unlike the resident set, a session made in memory freed before is seen."""
    if _MALLINFO2 is None:
        return current_rss_bytes()
    info = _MALLINFO2()
    return int(info.uordblks + info.hblkhd)


def current_rss_bytes() -> int:
    """This process's resident set size now (from /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
