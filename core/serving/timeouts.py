"""A server's cap on request timeouts: what comes over the wire can't hold a request (and its
bytes, in the queue) longer than the server allows, nor switch timeouts off.

In-process, an engine takes any timeout up to a day, or none (a notebook's choice); behind
a server anyone who reaches it could otherwise queue requests on a hung model that stay
forever (40 queued requests of 60 MiB with timeouts off held 2.55 GB). The cap
(``--max-timeout-s``, 600 s by default) is checked on the data plane's ``timeout``
parameters, on every control call that sets one (``configure``, ``predict``, a
``BatchConfig`` given to ``load_model`` or ``add_remote``) and on a repository load's
Triton configuration.

Example:
    >>> check_batch(BatchConfig(timeout_ms=None), 600_000.0, "load_model")
    Traceback (most recent call last):
    ConfigError: load_model: timeout_ms=None would switch request timeouts off; ...
"""

from __future__ import annotations

import inspect
import sys
import time
from typing import Any

from core.config import MAX_TIMEOUT_MS, MIN_TIMEOUT_MS, BatchConfig, _shown, check_timeout_ms, plain
from core.errors import ConfigError, RequestTimeoutError

__all__ = ["MAX_TIMEOUT_S", "check_timeout", "check_batch", "check_call", "request_timeout_ms"]

#: The default cap on a request's timeout behind a server (seconds).
MAX_TIMEOUT_S = 600.0


def _why(where: str, cap_ms: float) -> str:
    return (f"this server holds a request at most {cap_ms / 1000:g} s (its --max-timeout-s); "
            f"give {where} a number of milliseconds up to {cap_ms:,.0f}")


def check_timeout(value_ms: float | None, cap_ms: float | None, where: str) -> None:
    """A timeout given over the wire: None (switching timeouts off) or over the cap is
    refused, naming the cap."""
    if cap_ms is None:
        return
    if value_ms is None:
        raise ConfigError(f"{where}: timeout_ms=None would switch request timeouts off; "
                          + _why(where, cap_ms))
    try:   # (a 0-d array is a time the engine takes: compared, not waved through)
        if isinstance(value_ms, (bool, str, bytes)):
            raise TypeError
        value_ms = float(plain(value_ms))
    except (TypeError, ValueError, OverflowError):
        return   # (not a time: what takes it refuses it in its own words; "5" was a 500)
    if value_ms > cap_ms:
        raise ConfigError(f"{where}: timeout_ms={value_ms:g} is longer than "
                          + _why(where, cap_ms))


def request_timeout_ms(params: dict, cap_ms: float | None) -> float | None:
    """An inference request's timeout in milliseconds, from its parameters: ``timeout_ms``
    (Batchlab's) or else ``timeout`` (Triton's, in microseconds); None when neither is
    given. One out of range is refused in the unit it was given in, naming this server's
    cap when it is past it (1e12 was told "up to a day" by a server that holds 600 s)."""
    if (raw := params.get("timeout_ms")) is not None:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool) and cap_ms is not None \
                and cap_ms < raw <= sys.float_info.max:   # (past a float's range: none)
            check_timeout(float(raw), cap_ms, "the request's timeout")
        value = check_timeout_ms(raw)
        check_timeout(value, cap_ms, "the request's timeout")
        return value
    us = params.get("timeout")
    if us is None:
        return None
    cap_us = 1000.0 * (MAX_TIMEOUT_MS if cap_ms is None else min(cap_ms, MAX_TIMEOUT_MS))
    if isinstance(us, bool) or not isinstance(us, (int, float)) or not 0 < us <= cap_us:
        # (NaN and infinity fail it too; "5" was ignored: the model's own timeout applied)
        held = (f"this server holds a request at most {cap_ms / 1000:g} s (its "
                "--max-timeout-s)" if cap_ms is not None else "at most a day")
        raise ConfigError(f"parameters.timeout (Triton's, in microseconds) must be a "
                          f"positive number of microseconds up to {cap_us:,.0f}: {held}; "
                          f"got {_shown(us)}")
    return us / 1000.0


def after_parse_ms(timeout_ms: float, read_at: float | None) -> float:
    """What is left of a request's ``timeout_ms`` once its body, read at ``read_at``
    (``time.monotonic``; None: parsed as it was read), has been parsed: a large JSON body
    waits for the parser behind others. None left: a 504 (it was not run)."""
    if read_at is None:
        return timeout_ms
    waited_ms = (time.monotonic() - read_at) * 1000.0
    if timeout_ms - waited_ms >= MIN_TIMEOUT_MS:
        return timeout_ms - waited_ms
    raise RequestTimeoutError(
        f"the request spent {waited_ms:,.0f} ms waiting for and in the parse of its JSON "
        f"body (large bodies are parsed one at a time), past its timeout of {timeout_ms:g} "
        "ms; it was not run (send the tensors as binary data to skip the parse, or give it "
        "a longer timeout)")


def check_batch(cfg: Any, cap_ms: float | None, where: str) -> None:
    if isinstance(cfg, BatchConfig):
        check_timeout(cfg.timeout_ms, cap_ms, where)


def check_call(fn: Any, method: str, args: list, kwargs: dict, cap_ms: float | None) -> None:
    """The timeouts a control call would set: ``timeout_ms`` and ``timeout`` (seconds)
    arguments given, ``configure``'s ``timeout_ms`` change, and every ``BatchConfig``."""
    if cap_ms is None:
        return
    bound = inspect.signature(fn).bind(*args, **kwargs).arguments
    for key, value in bound.items():
        if isinstance(value, BatchConfig):
            check_batch(value, cap_ms, f"{method}({key}=...)")
        elif key == "timeout_ms" and (value is not None or method == "configure"):
            check_timeout(value, cap_ms, method)
        elif key == "timeout" and method == "predict" and value is not None:
            check_timeout(float(value) * 1000.0, cap_ms, method)
        elif key == "changes" and isinstance(value, dict) and "timeout_ms" in value:
            check_timeout(value["timeout_ms"], cap_ms, method)
        elif key == "time_limit_s" and method == "warmup" and isinstance(value, (int, float)) \
                and not isinstance(value, bool) and value > cap_ms / 1000.0:
            # (1e9 s ran past SIGTERM: a warm-up goes on in the route's thread; a value too
            # low is the engine's to refuse, in its words)
            raise ConfigError(f"warmup: time_limit_s={_shown(value)} is past what this server "
                              f"runs a call for, {cap_ms / 1000:g} s (its --max-timeout-s); "
                              f"give a number of seconds up to {cap_ms / 1000:g}")


def cap_warmup(fn: Any, args: list, kwargs: dict, cap_ms: float | None,
               engine_limit_s: float) -> tuple[list, dict]:
    """The call's arguments, a warm-up without ``time_limit_s`` given the engine's limit or
    the server's cap, whichever is shorter (the engine's 120 s went past a cap of 2 s); one
    given is :func:`check_call`'s to refuse past the cap."""
    if cap_ms is None:
        return args, kwargs
    bound = inspect.signature(fn).bind(*args, **kwargs)
    if bound.arguments.get("time_limit_s") is None:
        bound.arguments["time_limit_s"] = min(engine_limit_s, cap_ms / 1000.0)
    return list(bound.args), dict(bound.kwargs)
