"""What a sweep or quick search is asked to measure, checked before anything runs, and the
hold it keeps on its model's settings while it measures.

Example:
    >>> check_grid("sweep", [8, 32], [0, 2.0], duration_s=3.0)
    >>> check_grid("sweep", [2.5], [0])
    ConfigError: sweep: max_batch_size must be an int >= 1 and <= 65536, got 2.5
"""

from __future__ import annotations

import numbers
import threading
from typing import Any, Callable, Sequence

from core.config import (BatchConfig, SessionConfig, _check_float, _check_int, _shown_number,
                         as_list, as_seed, plain)
from core.errors import ConfigError, EngineClosedError
from .stability import StabilityRule

__all__ = ["check_grid", "check_rate_range", "check_rates", "closed_here", "is_remote", "pin_settings",
           "put_back", "hold_copy"]


def check_grid(kind: str, max_batch_sizes: Sequence[Any], max_waits_ms: Sequence[Any],
               duration_s: Any = 3.0, seed: Any = 0, instances: Any = 1,
               policy: str = "deadline", latency_slo_ms: Any = None, slo_ms: Any = None,
               session_threads: Sequence[Any] | None = None) -> None:
    """Refuse up front what a point could not be run as: every size and wait as a model's
    batch settings take them (2.5 rows were run as 2, True as 1, a wait past the limit
    failed the sweep at its point), a duration of seconds, a seed numpy takes, an SLO
    that is a time, a thread count ONNX Runtime is given. ``kind`` names the work."""
    sizes = as_list("max_batch_sizes", max_batch_sizes)
    waits = as_list("max_waits_ms", max_waits_ms, "[0, 2.0]")
    if not sizes or not waits:
        raise ConfigError(f"{kind}: give at least one max batch size and one max wait (an "
                          "empty list measured nothing and said nothing)")
    try:
        for b, w in [(b, waits[0]) for b in sizes] + [(sizes[0], w) for w in waits]:
            BatchConfig(max_batch_size=plain(b), max_wait_ms=plain(w),
                        instances=plain(instances), policy=policy,
                        latency_slo_ms=plain(latency_slo_ms))
        _check_float("duration_s", plain(duration_s), 0.05, 86_400.0)
        if seed is None or as_seed(plain(seed)) < 0:   # ("or None, got None"; a reviewer)
            raise ConfigError(f"seed must be a whole number >= 0, got {seed!r}")
        if slo_ms is not None:
            _check_float("slo_ms", plain(slo_ms), 0.001, 86_400_000.0)
        for t in as_list("session_threads", session_threads or [], "[1, 2]"):
            _check_int("session_threads", plain(t), 1, 1024)
            # (more than the cores: measured its first points, then refused at the swap)
            try:
                SessionConfig(intra_op_threads=plain(t))
            except ConfigError as err:
                raise ConfigError(f"session_threads {t}: {err}") from None
    except ConfigError as err:
        raise ConfigError(f"{kind}: {err}") from None


def _rule(duration_s: float, stability: StabilityRule | bool) -> StabilityRule | None:
    """The rule a point of ``duration_s`` is measured by (None: one window)."""
    if stability is True:
        return StabilityRule(window_s=max(0.05, duration_s / 3.0))
    if stability not in (False, None) and not isinstance(stability, StabilityRule):
        # (stability="x" failed the job with "'str' object has no attribute 'window_s'")
        raise ConfigError(f"stability must be True (the default rule), False (one window) "
                          f"or a StabilityRule(...), got {stability!r:.60}")
    return stability or None


def check_rate_range(rates_rps: Sequence[Any], max_rps: float = 1_000_000.0) -> None:
    """Refuse a rate that is not a number above 0 and up to ``max_rps`` (one process's
    generator; load agents offer more)."""
    def out(rate: Any) -> bool:   # (NaN, a word, "5", 10**400 too)
        rate = plain(rate)
        try:
            return not isinstance(rate, numbers.Real) or isinstance(rate, bool) \
                or not 0 < float(rate) <= max_rps
        except OverflowError:
            return True
    if bad := [r for r in rates_rps if out(r)]:
        raise ConfigError(f"load {_shown_number(bad[0])} req/s: a rate is a number above 0 "
                          f"and at most {max_rps:,.0f} req/s")


def check_rates(rates_rps: Sequence[float], duration_s: float,
                stability: StabilityRule | bool, max_rps: float = 1_000_000.0) -> None:
    """Refuse up front a rate out of range (``check_rate_range``), or one that sends no
    request in a window (1 req/s in 2 s / 3)."""
    check_rate_range(rates_rps, max_rps)
    rule = _rule(duration_s, stability)
    window = rule.window_s if rule is not None else duration_s
    too_low = [r for r in rates_rps if r * window < 1.0]
    if too_low:
        raise ConfigError(
            f"rate {too_low[0]:g} req/s sends no request in a measuring window of "
            f"{window:.3g} s; sweep rates of at least {1.0 / window:.3g} req/s, or give "
            f"each point more seconds (duration_s)")


def closed_here(engine: Any) -> bool:
    """Whether ``engine`` is an in-process engine that has closed (a RemoteEngine's closed
    is its client's: the server's model keeps what it was given)."""
    from core.engine import EngineCore
    return isinstance(engine, EngineCore) and engine.closed


def put_back(engine: Any, model: str, **settings: Any) -> None:
    """``engine.configure(model, **settings)`` at the end of work that changed them; when
    this process's engine has closed meanwhile there is nothing to put back (a
    RemoteEngine's closed client raises: the server's model was not put back)."""
    try:
        engine.configure(model, **settings)
    except EngineClosedError:
        if not closed_here(engine):
            raise


def is_remote(engine: Any, model: str) -> bool:
    """Whether ``model`` is served by another server (its settings are that server's)."""
    return engine.remote_info(model) is not None if hasattr(engine, "remote_info") else False


def pin_settings(engine: Any, model: str,
                 refusal: Callable[[str], str] | None = None) -> Callable[[], None]:
    """Refuse other threads' changes to ``model`` while this thread measures it; returns
    what lets them again. A job's are refused by the lab already; a notebook's sweep() or
    quick_search() were not: a configure() from another thread went into the point under
    way and was undone at the restore, unsaid (an adversary). In this process only: a
    RemoteEngine's server is not asked to hold its model for a client (run the sweep as a
    job there: ``start_job``). ``refusal(what)``: the words other threads are refused
    with; given, the model is held whole: a reset of its metrics or making it an A/B arm
    are refused too (a replay's private copy, see :func:`hold_copy`)."""
    guards = getattr(engine, "settings_guards", None)
    if guards is None or not hasattr(engine, "_settings_locked"):
        return lambda: None
    me = threading.get_ident()

    def guard(name: str, what: str) -> None:
        if name == model and threading.get_ident() != me:
            raise ConfigError(refusal(what) if refusal is not None else (
                f"model {name!r} is being measured by a sweep or quick search run from "
                "this process (not a job), which sets its batch settings for each point "
                f"and puts the model's own back when it ends: to {what} now, stop it (the "
                "stop event it was given) or wait for it"))
    guard.holds_use = refusal is not None   # type: ignore[attr-defined]

    def start() -> None:   # (under the lock configure() asks its guards under)
        if busy := engine._busy_with(model):
            raise ConfigError(f"measuring {model!r} not started: {busy} is going on with "
                              "it; start again when that has ended")
        # a job measuring it, or another thread's sweep, refuses this one at once (it
        # started, and the two then refused each other's points and restores: the model
        # was left at a point's settings; a reviewer)
        engine._guard(model, "measure it")
        guards.append(guard)

    engine._settings_locked(start)
    done: list[bool] = []

    def unpin() -> None:
        if not done:
            done.append(True)
            guards.remove(guard)
    return unpin


def hold_copy(engine: Any, model: str, copy: str) -> Callable[[], None]:
    """Hold a replay's private copy ``copy`` of ``model`` from this thread, before it is
    loaded, until the replay lets it go (the returned callable): other threads' changes
    (its settings, a warm-up, a sweep of it, replacing or unloading it), a reset of its
    metrics and making it an A/B arm are refused. Another tab set its batch size to 1 and
    the replay's verdict changed unsaid; a sweep of it, or its unload, lost the replay (an
    adversary)."""
    return pin_settings(engine, copy, lambda what: (
        f"{copy!r} is a replay's private copy of {model!r}, unloaded when the replay "
        f"ends: to {what}, wait for the replay or cancel it"))
