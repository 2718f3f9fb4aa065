"""Triton's model configuration, translated in one place: the batching fields Batchlab reads
and writes (``max_batch_size``, ``dynamic_batching.max_queue_delay_microseconds``, the
default queue policy's size and timeout, ``instance_group`` counts as ``instances``), as JSON (the repository extension,
``GET .../config``) and as ``config.pbtxt`` text (the export).

One rule for ``max_batch_size``: Triton's ``0`` means the model takes no batch dimension
and requests are never combined, which Batchlab serves as ``max_batch_size=1``; and
without a ``dynamic_batching`` block requests are not held to form batches
(``max_wait_ms=0``).

Example:
    >>> batch_changes({"max_batch_size": 16,
    ...                "dynamic_batching": {"max_queue_delay_microseconds": 2000}})
    ({'max_batch_size': 16, 'max_wait_ms': 2.0}, [])
    >>> read_batching({"max_batch_size": 0})
    (0, 0.0)
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from core.errors import ConfigError

__all__ = ["batch_changes", "model_config", "read_batching", "with_batching", "pbtxt",
           "batchlab_max_batch_size", "model_statistics", "read_statistics"]

_KNOWN = {"max_batch_size", "dynamic_batching", "name", "platform", "backend", "input",
          "output", "instance_group"}


def batchlab_max_batch_size(triton_max_batch_size: int) -> int:
    """Batchlab's ``max_batch_size`` for Triton's (0, no batching, is one request at a time)."""
    return max(1, int(triton_max_batch_size))


def _us_to_ms(us: float) -> float:
    return float(us) / 1000.0


def _ms_to_us(ms: float) -> int:
    return int(round(float(ms) * 1000))


def batch_changes(config: Any) -> tuple[dict[str, Any], list[str]]:
    """Batchlab ``configure`` changes from a Triton model configuration (a dict, checked
    strictly: a wrong field is refused with what is expected), and the names of fields
    that have no meaning here (ignored)."""
    if not isinstance(config, dict):
        raise ConfigError("parameters.config must be a JSON object (Triton's model "
                          f"configuration), got {type(config).__name__}")
    changes: dict[str, Any] = {}
    ignored = sorted(k for k in config if k not in _KNOWN)
    if "max_batch_size" in config:
        mbs = config["max_batch_size"]
        if not isinstance(mbs, int) or isinstance(mbs, bool) or mbs < 0:
            raise ConfigError("config.max_batch_size must be an integer >= 0, got "
                              f"{_shown(mbs)}")
        changes["max_batch_size"] = batchlab_max_batch_size(mbs)
    db = config.get("dynamic_batching")
    if db is None:
        changes["max_wait_ms"] = 0.0
    elif not isinstance(db, dict):
        raise ConfigError("config.dynamic_batching must be an object, e.g. "
                          '{"max_queue_delay_microseconds": 2000}')
    else:
        delay = db.get("max_queue_delay_microseconds", 0)
        if not _finite(delay) or delay < 0:
            raise ConfigError("dynamic_batching.max_queue_delay_microseconds must be a number "
                              f">= 0, got {_shown(delay)}")
        changes["max_wait_ms"] = _us_to_ms(delay)
        changes.update(_queue_policy(db.get("default_queue_policy")))
        ignored += [f"dynamic_batching.{k}" for k in db
                    if k not in ("max_queue_delay_microseconds", "default_queue_policy")]
        ignored += [f"dynamic_batching.default_queue_policy.{k}"
                    for k in db.get("default_queue_policy") or {} if k not in _POLICY]
    if "instance_group" in config:
        changes["instances"] = _instance_count(config["instance_group"])
    return changes, ignored


_POLICY = ("max_queue_size", "default_timeout_microseconds")


def _finite(value: Any) -> bool:
    """A JSON number a float holds (not a bool, NaN, an infinity or an int past 1e308)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _queue_policy(policy: Any) -> dict[str, Any]:
    """Batchlab's ``max_queue`` and ``timeout_ms`` from Triton's ``default_queue_policy``
    (checked as ``max_batch_size`` is: a wrong value is refused with what is expected).
    Triton's 0 is "no limit": no queue bound leaves ``max_queue`` as it is, no timeout is
    ``timeout_ms=None``."""
    where = "config.dynamic_batching.default_queue_policy"
    if policy is None:
        return {}
    if not isinstance(policy, dict):
        raise ConfigError(f"{where} must be an object, e.g. "
                          f'{{"max_queue_size": 100, "default_timeout_microseconds": 5000000}}, '
                          f"got {type(policy).__name__} {_shown(policy)}")
    out: dict[str, Any] = {}
    size = policy.get("max_queue_size", 0)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ConfigError(f"{where}.max_queue_size must be an integer >= 0 (requests; 0: no "
                          f"limit), got {type(size).__name__} {_shown(size)}")
    if size > 0:
        out["max_queue"] = size
    if "default_timeout_microseconds" in policy:
        us = policy["default_timeout_microseconds"]
        if not _finite(us) or us < 0:
            raise ConfigError(f"{where}.default_timeout_microseconds must be a number >= 0 "
                              f"(microseconds; 0: no timeout), got {type(us).__name__} "
                              f"{_shown(us)}")
        out["timeout_ms"] = _us_to_ms(us) if us > 0 else None
    return out


def _instance_count(groups: Any) -> int:
    """Batchlab's ``instances`` from Triton's ``instance_group``: the sum of the groups'
    ``count`` (each 1 when not given)."""
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise ConfigError('config.instance_group must be a list of objects, e.g. '
                          '[{"count": 2, "kind": "KIND_CPU"}]')
    total = 0
    for g in groups:
        count = g.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ConfigError("instance_group count must be an integer >= 1, got "
                              f"{_shown(count)}")
        total += count
    return max(1, total)


def read_batching(config: Any) -> tuple[int | None, float | None]:
    """``(max_batch_size, max_wait_ms)`` as a server reports them in its configuration
    (read leniently: what is missing or malformed is None). ``max_batch_size`` is Triton's
    own value (0: no batch dimension); a configuration without ``dynamic_batching`` holds
    nobody (``max_wait_ms=0``)."""
    if not isinstance(config, dict):
        return None, None
    mbs = config.get("max_batch_size")
    mbs = mbs if isinstance(mbs, int) and not isinstance(mbs, bool) else None
    db = config.get("dynamic_batching")
    wait: float | None = None
    if isinstance(db, dict):
        delay = db.get("max_queue_delay_microseconds", 0)
        try:
            wait = _us_to_ms(delay) if not isinstance(delay, bool) else None
        except (TypeError, ValueError, OverflowError):
            wait = None
        if wait is not None and not (math.isfinite(wait) and wait >= 0):
            wait = None
    elif mbs is not None:
        wait = 0.0
    return mbs, wait


def model_config(name: str, cfg: Any, batchable: bool = True) -> dict[str, Any]:
    """A model's batch settings (a :class:`~core.config.BatchConfig`) as Triton's model
    configuration (``GET .../config``): the inverse of :func:`batch_changes` for the fields
    both have. A model that cannot batch says ``max_batch_size: 0``."""
    out: dict[str, Any] = {"name": name, "platform": "onnxruntime_onnx",
                           "max_batch_size": cfg.max_batch_size if batchable else 0}
    if cfg.max_wait_ms > 0 or cfg.max_batch_size > 1:
        policy: dict[str, Any] = {"max_queue_size": cfg.max_queue}
        if cfg.timeout_ms is not None:
            policy["default_timeout_microseconds"] = _ms_to_us(cfg.timeout_ms)
        out["dynamic_batching"] = {"max_queue_delay_microseconds": _ms_to_us(cfg.max_wait_ms),
                                   "default_queue_policy": policy}
    out["instance_group"] = [{"count": getattr(cfg, "instances", 1), "kind": "KIND_CPU"}]
    return out


def with_batching(config: Any, max_batch_size: int | None = None,
                  max_wait_ms: float | None = None) -> dict[str, Any]:
    """A copy of a server's configuration with new batch settings (what a repository load
    sends to change them); other fields are kept as the server gave them."""
    out = dict(config) if isinstance(config, dict) else {}
    if max_batch_size is not None:
        out["max_batch_size"] = int(max_batch_size)
    if max_wait_ms is not None:
        db = dict(out.get("dynamic_batching") or {})
        db["max_queue_delay_microseconds"] = _ms_to_us(max_wait_ms)
        out["dynamic_batching"] = db
    return out


def pbtxt(max_batch_size: int, max_wait_ms: float,
          preferred_batch_sizes: Sequence[int] | None = None,
          max_queue: int | None = None, instances: int | None = None,
          intra_op_threads: int | None = None, comment: str | None = None) -> str:
    """A Triton ``config.pbtxt`` fragment: ``max_batch_size``, a ``dynamic_batching`` block,
    given ``instances`` an ``instance_group`` of that many CPU instances, given
    ``intra_op_threads`` the ONNX Runtime backend's ``intra_op_thread_count``, and
    ``comment`` (where the settings come from) as ``#`` lines at the top.

    Triton's ``max_queue_delay_microseconds`` is the same deadline rule as Batchlab's
    default policy (the wait starts with the oldest request).
    """
    lines = [f"# {line}".rstrip() for line in (comment or "").splitlines()]
    lines.append(f"max_batch_size: {int(max_batch_size)}")
    if max_batch_size > 0:   # (0: a model that must not be batched, no batcher)
        lines.append("dynamic_batching {")
        for size in preferred_batch_sizes or [int(max_batch_size)]:
            lines.append(f"  preferred_batch_size: {int(size)}")
        lines.append(f"  max_queue_delay_microseconds: {_ms_to_us(max_wait_ms)}")
        if max_queue is not None:
            lines += ["  default_queue_policy {", f"    max_queue_size: {int(max_queue)}", "  }"]
        lines.append("}")
    if instances is not None:
        lines.append(f"instance_group [ {{ count: {int(instances)} kind: KIND_CPU }} ]")
    if intra_op_threads is not None:
        lines += ["parameters {", '  key: "intra_op_thread_count"',
                  f'  value: {{ string_value: "{int(intra_op_threads)}" }}', "}"]
    return "\n".join(lines) + "\n"


# -- the statistics extension (GET /v2/models[/NAME[/versions/V]]/stats) --------------------
def _duration(count: int, seconds: float) -> dict[str, int]:
    return {"count": int(count), "ns": int(round(seconds * 1e9))}


def model_statistics(name: str, counters: dict[str, Any]) -> dict[str, Any]:
    """One ``$model_stat`` of Triton's statistics extension from an engine model's
    cumulative counters (:meth:`core.Engine.counters`).

    Batchlab times a batch's run as one span: it is ``compute_infer``; ``compute_input``
    and ``compute_output`` count the same executions with 0 ns. Failed requests are
    counted, not timed (``fail.ns`` is 0). ``inference_count`` and ``execution_count``
    count the rows of successful requests and the runs that succeeded, as Triton's do (a
    run that raised is in neither); ``batch_stats`` counts every run by its size."""
    ok = int(counters.get("success_count", 0))
    last = counters.get("last_batch_wall")
    sizes = counters.get("batch_sizes") or {}
    run_s = counters.get("batch_compute_s") or {}
    zero = {"count": 0, "ns": 0}
    batch_stats = []
    for size in sorted(sizes):
        n = int(sizes[size])
        batch_stats.append({"batch_size": int(size),
                            "compute_input": {"count": n, "ns": 0},
                            "compute_infer": _duration(n, float(run_s.get(size, 0.0))),
                            "compute_output": {"count": n, "ns": 0}})
    return {"name": name, "version": "1",
            "last_inference": 0 if last is None else int(last * 1000),
            "inference_count": int(counters.get("rows_ok", counters.get("rows", 0))),
            "execution_count": int(counters.get("batches_ok", counters.get("batches", 0))),
            "inference_stats": {
                "success": _duration(ok, counters.get("sum_total_s", 0.0)),
                "fail": {"count": int(counters.get("error_count", 0)), "ns": 0},
                "queue": _duration(ok, counters.get("sum_queue_s", 0.0)),
                "compute_input": {"count": ok, "ns": 0},
                "compute_infer": _duration(ok, counters.get("sum_compute_s", 0.0)),
                "compute_output": {"count": ok, "ns": 0},
                "cache_hit": dict(zero), "cache_miss": dict(zero)},
            "batch_stats": batch_stats}


def _count_ns(stat: Any) -> tuple[int, float]:
    if not isinstance(stat, dict):
        return 0, 0.0
    try:
        return int(stat.get("count") or 0), float(stat.get("ns") or 0) / 1e9
    except (TypeError, ValueError):
        return 0, 0.0


def read_statistics(answer: Any, name: str) -> dict[str, Any] | None:
    """What a server's statistics answer (Triton's schema: Triton, Batchlab) says of model
    ``name``: successes, failures, executions, inferences (rows), the mean queue and
    compute time per request (ms), and executions and mean run time (ms) per batch size.
    None when the answer has no such model."""
    stats = answer.get("model_stats") if isinstance(answer, dict) else None
    if not isinstance(stats, list):
        return None
    mine = [m for m in stats if isinstance(m, dict) and m.get("name") == name]
    if not mine:
        return None
    m = mine[-1]
    inf = m.get("inference_stats") if isinstance(m.get("inference_stats"), dict) else {}
    ok, total_s = _count_ns(inf.get("success"))
    failed, _ = _count_ns(inf.get("fail"))
    nq, queue_s = _count_ns(inf.get("queue"))
    parts = [_count_ns(inf.get(k)) for k in ("compute_input", "compute_infer",
                                               "compute_output")]
    compute_s = sum(s for _, s in parts)
    nc = max((n for n, _ in parts), default=0)
    by_size = {}
    for b in m.get("batch_stats") or []:
        if not isinstance(b, dict) or not isinstance(b.get("batch_size"), int):
            continue
        parts = [_count_ns(b.get(k)) for k in ("compute_input", "compute_infer",
                                                 "compute_output")]
        n = max(c for c, _ in parts)
        if n:
            by_size[b["batch_size"]] = {"executions": n,
                                        "mean_run_ms": sum(s for _, s in parts) / n * 1e3}

    def _int(v: Any) -> int:
        try:
            return int(v or 0)
        except (TypeError, ValueError):
            return 0

    executions, inferences = _int(m.get("execution_count")), _int(m.get("inference_count"))
    return {"success": ok, "fail": failed, "executions": executions,
            "inferences": inferences,
            "mean_batch_rows": inferences / executions if executions else float("nan"),
            "mean_total_ms": total_s / ok * 1e3 if ok else float("nan"),
            "mean_queue_ms": queue_s / nq * 1e3 if nq else float("nan"),
            "mean_compute_ms": compute_s / nc * 1e3 if nc else float("nan"),
            "batch_sizes": by_size}
