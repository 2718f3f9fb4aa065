"""Frozen, validated configuration objects.

Each config validates itself in ``__post_init__`` and says exactly what is wrong, so a
bad value is refused where it is written, not deep inside a thread later.

Example:
    >>> BatchConfig(max_batch_size=32, max_wait_ms=5.0)
    BatchConfig(max_batch_size=32, max_wait_ms=5.0, policy='deadline', max_queue=2048, timeout_ms=30000.0, latency_slo_ms=None)
    >>> BatchConfig(max_batch_size=0)
    Traceback (most recent call last):
    ConfigError: max_batch_size must be an int >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any

from core.errors import ConfigError

__all__ = ["POLICIES", "OPTIMIZATION_LEVELS", "BatchConfig", "SessionConfig", "EngineConfig",
           "default_intra_op_threads", "check_timeout_ms", "machine_cores"]

#: Batching policies, one module each in ``core/policies/``. ``deadline``: a batch is
#: released when full or when its oldest request has waited ``max_wait_ms`` (Triton / TF
#: Serving / Ray Serve). ``fixed_window``: the seed design, a free-running window of
#: ``max_wait_ms`` restarted after each flush. ``adaptive``: learns the batch cost
#: t(n) = a + b*n and the arrival rate online and waits (up to ``max_wait_ms``) only while
#: waiting for the next row costs less than the fixed cost ``a`` it saves; with
#: ``latency_slo_ms`` it sheds requests that cannot meet it. ``aimd``: Clipper's
#: additive-increase / multiplicative-decrease batch size against a latency objective.
from core.policies import POLICIES  # noqa: E402
from core.policies import registered as registered_policies  # noqa: E402

OPTIMIZATION_LEVELS = ("disabled", "basic", "extended", "all")

_MAX_BATCH_LIMIT = 65536
_MAX_WAIT_LIMIT_MS = 60_000.0


def _shown(value: Any) -> str:
    """``repr(value)``, cut to 40 characters (a number with 400 digits is not read)."""
    try:
        text = repr(value)
    except ValueError:     # an int past Python's 4,300 digits for a str
        return f"an int of {value.bit_length():,} bits"
    return text if len(text) <= 40 else f"{text[:30]}... ({len(text)} characters)"


def _shown_number(value: Any) -> str:
    """A number in a refusal as people write it: a whole one with thousands separators
    ('100,000', not '100000.0'), a fraction or one past 1e15 as ``%g`` ('2.5', '1e+300',
    not its 301 digits), anything else (a bool, a word, 10**400) as :func:`_shown`."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            v = float(value)
            return f"{value:,.0f}" if v.is_integer() and abs(v) < 1e15 else f"{v:g}"
        except (OverflowError, ValueError, TypeError):   # (10**400)
            pass
    return _shown(value)


def plain(value: Any) -> Any:
    """A numpy number as the Python one (a notebook's np.int64(8)); anything else as it is.
    The checks here take Python numbers: a RemoteEngine's wire made numpy's so, and an
    Engine refused them."""
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


def _plain_fields(config: Any) -> None:
    """Numpy scalars in a config's fields become Python's (:func:`plain`)."""
    for f in dataclasses.fields(config):
        object.__setattr__(config, f.name, plain(getattr(config, f.name)))


def as_seed(value: Any) -> int:
    """A seed as a Python int (numpy's too); a ConfigError if it is not a whole number."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    raise ConfigError(f"seed must be a whole number (or None), got {_shown(value)}")


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        bound = f">= {low} and <= {high}" if high < 2**62 else f">= {low}"
        raise ConfigError(f"{name} must be an int {bound}, got {_shown(value)}")


def _check_float(name: str, value: Any, low: float, high: float) -> None:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not low <= value <= high or not math.isfinite(value)):
        # (the range first: math.isfinite of an int past a float's range raises)
        raise ConfigError(f"{name} must be a number >= {low:g} and <= {high:g}, "
                          f"got {_shown(value)}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


@dataclass(frozen=True)
class BatchConfig:
    """How one model's requests are batched; changed live with ``Engine.configure``.

    ``max_batch_size`` counts rows, not requests. ``max_queue`` counts requests; a submit
    to a full queue is refused at once. ``timeout_ms`` is the default per-request timeout
    (queue + compute); ``None`` waits for ever. ``instances``: how many of the model's
    batches may run at once (Triton's ``instance_group`` count): with 2, one batch computes
    while the next forms, on another core; each run uses the session's intra-op threads.

    Example:
        >>> cfg = BatchConfig(max_batch_size=16, max_wait_ms=2.0, policy="fixed_window")
        >>> cfg.replace(max_batch_size=64).max_batch_size
        64
    """

    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    policy: str = "deadline"
    max_queue: int = 2048
    timeout_ms: float | None = 30_000.0
    latency_slo_ms: float | None = None
    instances: int = 1

    def __post_init__(self) -> None:
        _plain_fields(self)
        _check_int("max_batch_size", self.max_batch_size, 1, _MAX_BATCH_LIMIT)
        _check_int("instances", self.instances, 1, MAX_INSTANCES)
        _check_float("max_wait_ms", self.max_wait_ms, 0.0, _MAX_WAIT_LIMIT_MS)
        _check_choice("policy", self.policy, tuple(registered_policies()))
        _check_int("max_queue", self.max_queue, 1, 10_000_000)
        if self.timeout_ms is not None:
            _check_float("timeout_ms", self.timeout_ms, 0.001, MAX_TIMEOUT_MS)
        if self.latency_slo_ms is not None:
            _check_float("latency_slo_ms", self.latency_slo_ms, 0.001, 86_400_000.0)
            uses = [n for n, c in registered_policies().items() if c.uses_slo]
            if self.policy not in uses:
                raise ConfigError(f"latency_slo_ms works with policies {uses} (adaptive "
                                  "sheds requests that cannot meet it; aimd sizes batches "
                                  "to it); set one of them, or leave latency_slo_ms=None "
                                  f"for policy={self.policy!r}")
        object.__setattr__(self, "max_wait_ms", float(self.max_wait_ms))
        if self.timeout_ms is not None:
            object.__setattr__(self, "timeout_ms", float(self.timeout_ms))

    def replace(self, **changes: Any) -> BatchConfig:
        """A copy with ``changes`` applied (and validated); unknown names are refused."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(
                f"unknown batch setting(s) {sorted(unknown)}; expected some of "
                f"{[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)


#: The most runs of one model at once (``BatchConfig.instances``).
MAX_INSTANCES = 8


#: The longest per-request timeout (a day, as for ``BatchConfig.timeout_ms``).
MAX_TIMEOUT_MS = 86_400_000.0
#: The shortest (a microsecond).
MIN_TIMEOUT_MS = 0.001


def check_timeout_ms(value: Any) -> float:
    """A per-request timeout: a finite number of milliseconds from a microsecond (shorter
    ones vanish in the clock's arithmetic: 1e-300 ms was a timeout of 0) to a day."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not MIN_TIMEOUT_MS <= value <= MAX_TIMEOUT_MS or not math.isfinite(value)):
        raise ConfigError(f"timeout_ms must be a positive finite number of milliseconds, "
                          f"from {MIN_TIMEOUT_MS:g} (a microsecond) to {MAX_TIMEOUT_MS:,.0f} "
                          f"(a day), got {_shown(value)}")
    return float(value)


def as_list(name: str, value: Any, example: str = "[8, 32]") -> list:
    """``value`` (a list, tuple, array, range...) as a list; a ConfigError for one number or
    a string (8 for [8] was "TypeError: 'int' object is not iterable")."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigError(f"{name} must be a list such as {example}, got {_shown(value)}")
    return list(value)


def check_wait_s(value: Any, name: str = "timeout_s") -> float | None:
    """How long a caller waits (seconds): None for as long as it takes, else a number >= 0
    (a bare TypeError from deep inside for "1", and inf overflowed a clock)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ConfigError(f"{name} must be a number of seconds >= 0 (or None: no limit), got "
                          f"{_shown(value)}")
    return float(value)


def check_positive_s(name: str, value: Any, none_means: str | None = None) -> Any:
    """A span of seconds > 0 (inf too: all there is); None when ``none_means`` says what
    None is. A ConfigError otherwise: "30" was a TypeError, and True was taken as 1 s."""
    if value is None and none_means is not None:
        return None
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not value > 0):
        also = f" (or None for {none_means})" if none_means is not None else ""
        raise ConfigError(f"{name} must be > 0 seconds{also}, got {_shown(value)}")
    return value


def machine_cores() -> int:
    """The cores the machine has (``os.cpu_count``; at least one)."""
    return os.cpu_count() or 1


def default_intra_op_threads() -> int:
    """All cores this process may run on but one (at least one): what
    ``intra_op_threads=None`` means. (The dashboard's engine server is given fewer cores
    than the machine has: ``core.serving.split_cores``.)"""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform
        cores = os.cpu_count() or 2
    return max(1, cores - 1)


@dataclass(frozen=True)
class SessionConfig:
    """ONNX Runtime session options used when a model is loaded.

    ``intra_op_threads=None`` (the default) uses all cores but one, leaving a core for the
    Python threads that batch and resolve requests: on a 2-core machine ONNX Runtime's own
    default (all cores, ``0``) halved the engine's capacity (docs/benchmarks.md).
    ``provider`` is ``"cpu"`` or ``"cuda"`` (the latter only when onnxruntime-gpu is
    installed).

    Example:
        >>> SessionConfig(intra_op_threads=1, graph_optimization="extended")
        SessionConfig(intra_op_threads=1, graph_optimization='extended', provider='cpu')
    """

    intra_op_threads: int | None = None
    graph_optimization: str = "all"
    provider: str = "cpu"

    def __post_init__(self) -> None:
        _plain_fields(self)
        if self.intra_op_threads is not None:
            cores = machine_cores()
            _check_int("intra_op_threads", self.intra_op_threads, 0, 1024)
            if self.intra_op_threads > cores:
                raise ConfigError(
                    f"intra_op_threads={self.intra_op_threads} is more than this machine's "
                    f"{cores} core(s): ONNX Runtime starts that many threads for each "
                    "session, they take turns on the cores and slow every model (three "
                    "sessions of 1,024 took 55 s each to load); use 1 to "
                    f"{cores}, 0 for ONNX Runtime's default, or None for all cores but one")
        _check_choice("graph_optimization", self.graph_optimization, OPTIMIZATION_LEVELS)
        _check_choice("provider", self.provider, ("cpu", "cuda"))


@dataclass(frozen=True)
class EngineConfig:
    """Engine-wide limits and defaults.

    Example:
        >>> EngineConfig(max_model_bytes=64 * 2**20, cache_size=4).cache_size
        4
    """

    max_model_bytes: int = 256 * 2**20
    cache_size: int = 8
    demo_models: bool = True
    session: SessionConfig = field(default_factory=SessionConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    #: Seconds of per-second metrics kept per model: the Monitor's longest window (up to
    #: ~8 KB per busy second; docs/benchmarks.md).
    timeseries_seconds: int = 900
    close_timeout_s: float = 10.0
    #: Memory ONNX Runtime may allocate in this process (a shared, capped arena), and the
    #: bound on inputs Batchlab generates; ``None``: a quarter of the machine's memory.
    memory_budget_bytes: int | None = None
    warmup_time_limit_s: float = 120.0
    #: Try every model loaded without ``probe=`` in a child process first (core/models/probe.py):
    #: on for the dashboard, whose uploads come from anyone with the page open.
    probe_models: bool = False
    probe_time_limit_s: float = 30.0
    #: Requests kept per model for ``Engine.timeline`` (core/metrics/trace.py); 0 turns tracing off.
    trace_requests: int = 20_000
    #: What loaded models may hold together (each counted as what its session holds,
    #: measured as it is made, at least twice its file: the bytes kept for trial runs and
    #: replays, and its session's weights); ``None``: the memory budget.
    #: A load past it is refused, naming the least recently used models to unload.
    max_models_bytes: int | None = None

    def __post_init__(self) -> None:
        _plain_fields(self)
        _check_int("max_model_bytes", self.max_model_bytes, 1, 2**62)
        _check_int("cache_size", self.cache_size, 1, 1024)
        if not isinstance(self.demo_models, bool):
            raise ConfigError(f"demo_models must be True or False, got {self.demo_models!r}")
        if not isinstance(self.session, SessionConfig):
            raise ConfigError(f"session must be a SessionConfig, got {type(self.session).__name__}")
        if not isinstance(self.batch, BatchConfig):
            raise ConfigError(f"batch must be a BatchConfig, got {type(self.batch).__name__}")
        _check_int("timeseries_seconds", self.timeseries_seconds, 10, 86_400)
        if self.max_models_bytes is not None:
            _check_int("max_models_bytes", self.max_models_bytes, 1, 2**62)
        _check_float("close_timeout_s", self.close_timeout_s, 0.0, 3600.0)
        if self.memory_budget_bytes is not None:
            _check_int("memory_budget_bytes", self.memory_budget_bytes, 64 * 2**20, 2**50)
        _check_float("warmup_time_limit_s", self.warmup_time_limit_s, 0.01, 86_400.0)
        if not isinstance(self.probe_models, bool):
            raise ConfigError(f"probe_models must be True or False, got {self.probe_models!r}")
        _check_float("probe_time_limit_s", self.probe_time_limit_s, 0.1, 3600.0)
        _check_int("trace_requests", self.trace_requests, 0, 10_000_000)


# An annotation's plain types, as a remote caller's value is checked against them (a
# number for a float, a whole number for an int; numpy's scalars are numbers too).
_PLAIN: dict[str, tuple[type, ...]] = {
    "int": (numbers.Integral,), "float": (numbers.Real,), "str": (str,), "bool": (bool,),
    "None": (type(None),), "bytes": (bytes, bytearray), "list": (list, tuple),
    "dict": (dict,)}


def plain_types(annotation: Any) -> tuple[type, ...] | None:
    """The types an annotation such as ``"float | None"`` allows; None for one that is not
    only plain types (``Any``, ``Path``, ``dict[str, int | None]``: not checked here)."""
    if not isinstance(annotation, str):
        return None
    kinds: list[type] = []
    for part in annotation.split("|"):
        base = part.strip().split("[", 1)[0]
        if base not in _PLAIN or part.count("[") != part.count("]"):
            return None
        kinds += _PLAIN[base]
    return tuple(kinds)
