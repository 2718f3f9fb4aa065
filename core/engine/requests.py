"""Requests into the engine: route a name (a model, or an A/B experiment that picks an arm
and may send B a shadow copy), validate, hand to what serves the model — going to its
current version when a hot swap retired the one looked up — and count every refusal.

Example:
    >>> fut = router.submit("mlp", x)          # Future[Prediction]
"""

from __future__ import annotations

import time
from concurrent.futures import Future, TimeoutError as FuturesTimeout
from typing import Any, Callable

import numpy as np

from core.ab import ABExperiment
from core.batching import Prediction, Request
from core.config import MAX_TIMEOUT_MS, check_timeout_ms
from core.metrics import check_priority
from core.errors import (BatchlabError, ConfigError, EngineClosedError, InputValidationError,
                         ModelNotFoundError, RequestTimeoutError)
from .namespace import Namespace
from .registry import ModelEntry

__all__ = ["Router"]

# A submit that meets this many hot swaps in a row gives up (and says so).
_MAX_SWAPS = 8


class Router:
    """The request path of the engine: :meth:`submit` (the hot path, no engine lock) and
    :meth:`predict` (submit, then wait within the request's timeout)."""

    def __init__(self, namespace: Namespace, is_closed: Callable[[], bool]) -> None:
        self.ns = namespace
        self.registry = namespace.registry
        self.experiments = namespace.experiments
        self._is_closed = is_closed

    def submit(self, name: str, x: Any, timeout_ms: float | None = None,
               key: Any = None, priority: int | None = None, check: Any = None) -> Future:
        if priority is not None:
            check_priority(priority)
        if timeout_ms is not None:   # (as predict does: an argument's mistake is counted
            check_timeout_ms(timeout_ms)   # by no model, whichever method is called)
        if check is not None and not callable(check):   # (it failed later, as an error)
            raise ConfigError(f"check must be a function of the prediction (raising to "
                              f"refuse the answer), got {type(check).__name__}")
        entry = self.registry.models.get(name)
        if entry is not None:
            return self._submit_model(name, entry, x, timeout_ms, None, None, None, priority,
                                      check)
        exp = self.experiments.get(name)
        if exp is None:
            raise self.ns.not_found(name)
        if self._is_closed():   # (before routing: an arm, its bandit and its report count
            raise _closed()     # no request of a closed engine, as no model does)
        arm, model, mode, label, sinks, extra = exp.route_to(key)
        if mode == "bandit":
            return self._bandit_submit(exp, arm, model, x, timeout_ms, priority, check,
                                       (label, sinks, extra))
        if mode != "shadow":
            return self._submit_model(model, None, x, timeout_ms, label, sinks, name,
                                      priority, check)
        kept: list[dict[str, Any]] = []

        def keep(pred: Prediction, own: Any = check) -> None:
            # A's answer as it left the model, before its caller holds it: compared with
            # B's, it cannot change with what the caller does to it (np.exp(p, out=p))
            kept.append({k: v.copy() if isinstance(v, np.ndarray) else v
                         for k, v in pred.outputs.items()})
            if own is not None:
                own(pred)
        fut = self._submit_model(model, None, x, timeout_ms, label, sinks, name, priority,
                                 keep)
        self._shadow_copy(exp, x, fut, kept, timeout_ms, extra, check)
        return fut

    def _submit_model(self, model: str, entry: ModelEntry | None, x: Any,
                      timeout_ms: float | None, arm: str | None, sink: Any,
                      experiment: str | None = None, priority: int | None = None,
                      check: Any = None) -> Future:
        for _ in range(_MAX_SWAPS):
            if entry is None:
                entry = self.registry.models.get(model)
                if entry is None:
                    err = ModelNotFoundError(
                        f"A/B experiment {experiment!r} routes arm {arm} to model {model!r}, "
                        "which is not loaded; load it or update the experiment with "
                        "engine.update_ab()")
                    _record_refused(None, sink, err)
                    raise err
            try:
                arrays, rows = entry.validator(x)
                return entry.served.submit(arrays, rows, timeout_ms, arm, sink, priority,
                                           check)
            except EngineClosedError:
                # A hot swap may have retired this batcher between lookup and submit:
                # go to the model's current version.
                current = self.registry.models.get(model)
                closed = self._is_closed()
                if closed:   # (counted nowhere: a model's figures never counted them, and
                    raise _closed() from None   # arm A's said 50 % errors after close)
                if current is None or current is entry:
                    err = EngineClosedError(
                        f"model {model!r} was unloaded and accepts no more requests")
                    _record_refused(None, sink, err)
                    raise err from None
                entry = current
            except BatchlabError as err:
                if priority is not None:  # the class's metrics count its refusals too
                    sink = entry.served.classes.sink(priority, sink)
                _record_refused(entry, sink, err)
                raise
        raise EngineClosedError(f"model {model!r} was replaced too many times during one "
                                "submit; try again")

    def _bandit_submit(self, exp: ABExperiment, arm: str, model: str, x: Any,
                       timeout_ms: float | None, priority: int | None, check: Any,
                       routed: tuple[Any, Any, Any]) -> Future:
        """A bandit's request: its arm is rewarded when it ends (within the SLO, no error),
        or now, with a failure, if it is refused. ``routed``: the arm's label, metrics and
        the bandit, as :meth:`ABExperiment.route_to` read them."""
        label, sinks, bandit = routed
        t0 = time.perf_counter()
        try:
            fut = self._submit_model(model, None, x, timeout_ms, label, sinks, exp.name,
                                     priority, check)
        except InputValidationError:
            bandit.unsend(arm)   # the caller's input: no arm's doing, and never judged (it
            raise                # counted as sent: sent and ended never agreed; an adversary)
        except BatchlabError as err:
            if isinstance(err, EngineClosedError) and self._is_closed():
                bandit.unsend(arm)   # the engine's closing: no arm's doing
            else:
                bandit.reward(arm, False)   # refused (overloaded, unloaded...): the arm's
            raise
        bandit.watch(arm, fut, t0)
        return fut

    def _shadow_copy(self, exp: ABExperiment, x: Any, a_fut: Future,
                     a_outputs: list[dict[str, Any]], timeout_ms: float | None,
                     routed: tuple[str, Any, Any, Any], check: Any = None) -> None:
        """Send a copy of a request to arm B; nothing about it can reach the caller.
        ``a_outputs``: A's answer as it left the model (filled before A is settled). The
        copy has the caller's timeout too (without it, B never timed out where A did, and
        the report said "B has fewer errors" of identical models), and its ``check`` (an
        answer A could not send in the caller's form counted against A only). ``routed``:
        B's model, label, metrics and the shadow figures, as the request was routed."""
        b, label, sinks, shadow = routed
        try:
            b_fut = self._submit_model(b, None, x, timeout_ms, label, sinks,
                                       experiment=exp.name, check=check)
        except BatchlabError:
            shadow.failed()
            return
        exp.watch_shadow(a_fut, b_fut, a_outputs, shadow)

    def predict(self, name: str, x: Any, timeout: float | None = None, key: Any = None, *,
                timeout_ms: float | None = None, priority: int | None = None,
                check: Any = None) -> Prediction:
        if timeout is not None:
            if timeout_ms is not None:
                raise ConfigError("pass timeout_ms (milliseconds) or timeout (seconds), "
                                  "not both")
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
                    or not 0 < timeout <= MAX_TIMEOUT_MS / 1000:   # (1e308 s made "inf ms")
                raise ConfigError(f"timeout must be a positive number of seconds, at most "
                                  f"{MAX_TIMEOUT_MS / 1000:,.0f} (a day), got {timeout!r:.40}")
            timeout_ms = timeout * 1000.0
        fut = self.submit(name, x, timeout_ms, key, priority, check)
        if timeout_ms is None:
            entry = self.registry.models.get(name)
            t_ms = entry.served.config.timeout_ms if entry is not None else None
        else:
            t_ms = timeout_ms
        try:
            return fut.result(wait_s_for(t_ms))
        except FuturesTimeout:
            return settle_late(fut, name, t_ms)


def wait_s_for(timeout_ms: float | None) -> float | None:
    """How long a caller waits for a request with this deadline: the supervisor settles the
    request at its deadline; the extra second only covers a supervisor that is late (a busy
    machine)."""
    return None if timeout_ms is None else timeout_ms / 1000.0 + 1.0


def settle_late(fut: Future, name: str, timeout_ms: float | None) -> Any:
    """A request whose caller waited :func:`wait_s_for` in vain: fail it with the timeout
    (counted as such) and raise that, or return its answer if it just arrived."""
    err = RequestTimeoutError(
        f"request to model {name!r} did not complete within {timeout_ms or 0:.0f} ms; raise "
        "timeout_ms, lower the load, or check the model's latency on the Monitor page")
    if isinstance(fut, Request) and fut.fail(err):
        raise err from None
    return fut.result(0)


def _closed() -> EngineClosedError:
    return EngineClosedError("the engine is closed and accepts no more requests; create a "
                             "new Engine")


def _record_refused(entry: ModelEntry | None, sink: Any, err: BaseException) -> None:
    if entry is not None:
        entry.metrics.record_refused(type(err).__name__, str(err))
    for m in sink or ():
        m.record_refused(type(err).__name__, str(err))
