"""Built-in traffic: open-loop generators that are clients of ``submit``, one per target.

A :class:`TrafficGenerator` sends to one target on a schedule (constant, Poisson or bursty
at ``rate_rps``) from its own thread: open loop, so a slow engine shows up as queueing. Done
callbacks count outcomes (no futures kept); a :class:`TrafficManager` keeps one per target.

Example:
    >>> traffic = TrafficManager(engine.submit)
    >>> traffic.start("mlp", sample=lambda rng: x, rate_rps=200)
    >>> traffic.stop("mlp")
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from typing import Any, Callable

import numpy as np

from core.config import _check_choice, _check_float, _check_int
from core.errors import ConfigError, ModelNotFoundError, TrafficNotFoundError
from core.metrics import check_priority, thread_cpu_s
from core.models.probe import probe_note
from core.models.sampling import check_seed
from .schedule import ARRIVAL_PATTERNS, YIELD_GAP_S, arrival_stream, paced
from .traffic_status import CLIENT_BOUND_CPU_PCT, CLIENT_BOUND_LAG_MS, RECENT_S, TrafficStatus

__all__ = ["TrafficGenerator", "TrafficStatus", "TrafficManager", "SubmitFn",
           "CLIENT_BOUND_CPU_PCT", "CLIENT_BOUND_LAG_MS", "experiments_with_arm",
           "generated_refused"]

log = logging.getLogger("batchlab.traffic")

SubmitFn = Callable[..., Future]

class InputsWatch:
    """What a traffic's inputs are drawn from (real inputs, the models' info: the engine's own
    objects, compared by identity), looked at again: :meth:`fresh` draws ``n`` new inputs
    when it changed (new inputs given, a hot swap, an experiment's other arm), else returns
    None; from a generator of its own, so a seeded arrival schedule stays as it was."""

    def __init__(self, sample: Callable[[np.random.Generator], Any],
                 key: Callable[[], tuple], n: int, seed: int | None) -> None:
        self._sample, self._key_of, self._n = sample, key, n
        self._key = key()
        self._rng = np.random.default_rng([0 if seed is None else seed, 1])

    def fresh(self) -> list[Any] | None:
        key = self._key_of()
        if len(key) == len(self._key) and all(a is b for a, b in zip(key, self._key)):
            return None
        drawn = [self._sample(self._rng) for _ in range(self._n)]
        self._key = key   # (after the draw: one that failed is tried again at the next look)
        return drawn


class SenderThread:
    """What the manager asks of a traffic generator's thread (``_thread``, ``_stop``):
    start, stop, whether it runs, and waiting for a bounded run to end."""

    _thread: threading.Thread
    _stop: threading.Event
    _recent: deque[list[Any]]
    _lock: threading.Lock
    _last_error: str | None
    _watch: InputsWatch | None

    def _drawn_again(self) -> list[Any] | None:
        """New inputs when what they are drawn from changed, else None (a look that fails,
        a model gone meanwhile, is said in the status and the old inputs are kept)."""
        if self._watch is None:
            return None
        try:
            return self._watch.fresh()
        except Exception as err:  # noqa: BLE001 - said in the status, not raised in a thread
            with self._lock:
                self._last_error = f"inputs not drawn again: {type(err).__name__}: {err}"
            return None

    def start(self) -> Any:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until a bounded run ends (or ``timeout_s``); True when it has ended."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _recent_window(self, now: float) -> dict[str, Any]:
        """(Lock held.) The status's figures of the last few seconds, from ``_recent``:
        ``[second, sent, refused or failed, worst lag (s)]`` rows."""
        since = int(now) - RECENT_S
        recent = [r for r in self._recent if r[0] >= since]
        return {"recent_sent": int(sum(r[1] for r in recent)),
                "recent_bad": int(sum(r[2] for r in recent)),
                "recent_lag_ms": 1000.0 * max((r[3] for r in recent), default=0.0)}


#: How long past its duration a generator behind its schedule goes on sending.
LATE_GRACE_S = 0.5


class TrafficGenerator(SenderThread):
    """Open-loop sender to ``target`` via ``submit(target, x)`` (see module docstring)."""

    def __init__(self, submit: SubmitFn, target: str, sample: Callable[[np.random.Generator], Any],
                 rate_rps: float = 100.0, pattern: str = "constant", rows_per_request: int = 1,
                 duration_s: float | None = None, seed: int | None = 0,
                 submit_kwargs: dict[str, Any] | None = None,
                 key_pool: int | None = None,
                 client_cpu: Callable[[], float] | None = None,
                 on_end: Callable[[str, str], None] | None = None,
                 high_share: float | None = None, priority: int | None = None,
                 inputs_key: Callable[[], tuple] | None = None) -> None:
        _check_float("rate_rps", rate_rps, 0.1, 1_000_000.0)
        if high_share is not None:
            _check_float("high_share", high_share, 0.0, 1.0)
        try:
            check_priority(priority)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if priority is not None and high_share is not None:
            raise ConfigError("give a traffic generator either priority (every request in "
                              "that class: one generator per class) or high_share (a mix), "
                              "not both")
        _check_choice("pattern", pattern, ARRIVAL_PATTERNS)
        _check_int("rows_per_request", rows_per_request, 1, 65536)
        check_seed(seed)   # (numpy's "expected non-negative integer" named nothing)
        if duration_s is not None:
            _check_float("duration_s", duration_s, 0.01, 86_400.0)
        self.target = target
        self.rate_rps = float(rate_rps)
        self.pattern = pattern
        self.rows_per_request = rows_per_request
        self.duration_s = duration_s
        self._submit = submit
        self._submit_kwargs = dict(submit_kwargs or {})
        # With a key pool, each request carries key="user-<k>" for k drawn from the pool
        # (sticky A/B routing): like traffic from that many users.
        self._key_pool = key_pool
        self._rng = np.random.default_rng(seed)
        # Each request's class drawn independently: Poisson arrivals marked this way are two
        # independent Poisson streams, one per class, at rate x share and rate x (1 - share).
        self.high_share = high_share
        self.priority = priority
        if priority is not None:
            self._submit_kwargs = {**self._submit_kwargs, "priority": priority}
        self._marks = random.Random(seed)
        # A small pool of inputs, reused round-robin: sampling per request would cost more
        # than the engine's own per-request work.
        # What the pool is drawn from is looked at each second and a change draws it again,
        # so running traffic sends what the pages say it sends.
        self._pool = [sample(self._rng) for _ in range(16)]
        self._watch = (InputsWatch(sample, inputs_key, 16, seed)
                       if inputs_key is not None else None)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sent = self._refused = self._ok = self._failed = 0
        self._refused_by_type: Counter[str] = Counter()
        self._failed_by_type: Counter[str] = Counter()
        self._last_error: str | None = None
        # [second, sent, refused or failed, worst lag (s)] for the last few seconds
        self._recent: deque[list[int]] = deque(maxlen=RECENT_S + 1)
        self._max_lag = 0.0
        self._unsent = 0
        self._t_start: float | None = None
        self._t_end: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"traffic-{target}"
                                        + (f"-p{priority}" if priority is not None else ""),
                                        daemon=True)
        # CPU of the client's other threads (the remote HTTP client's loop), and this
        # sender's own CPU when it has ended.
        self._client_cpu = client_cpu
        self._client_cpu0 = client_cpu() if client_cpu is not None else 0.0
        self._own_cpu_end: float | None = None
        self._other_cpu_end: float | None = None
        #: Called with the target and what happened ("traffic stopped", "traffic ended
        #: after 10 s") when the sender leaves, before a join on it returns.
        self._on_end = on_end

    def status(self) -> TrafficStatus:
        now = time.perf_counter()
        start = self._t_start or now
        end = self._t_end or now
        own = self._own_cpu_end if self._own_cpu_end is not None else thread_cpu_s(self._thread)
        other = self._other_cpu_end if self._other_cpu_end is not None else (
            (self._client_cpu() - self._client_cpu0) if self._client_cpu is not None else 0.0)
        span = end - start
        # Under a second the ratio is noise (a thread's first milliseconds are all CPU).
        cpu_pct = 100.0 * (own + max(0.0, other)) / span if span >= 1.0 else 0.0
        with self._lock:
            return TrafficStatus(
                target=self.target, running=self.running, rate_rps=self.rate_rps,
                pattern=self.pattern, rows_per_request=self.rows_per_request, sent=self._sent,
                refused=self._refused, succeeded=self._ok, failed=self._failed,
                elapsed_s=end - start, max_lag_ms=self._max_lag * 1000.0,
                refused_by_type=dict(self._refused_by_type),
                failed_by_type=dict(self._failed_by_type), last_error=self._last_error,
                **self._recent_window(now),
                client_cpu_pct=cpu_pct, high_share=self.high_share,
                priority=self.priority, unsent=self._unsent, duration_s=self.duration_s)

    def _count(self, sent: int, bad: int) -> None:
        """Add to the current second's counts (caller holds the lock)."""
        sec = int(time.perf_counter())
        if not self._recent or self._recent[-1][0] != sec:
            self._recent.append([sec, 0, 0, 0.0])
        self._recent[-1][1] += sent
        self._recent[-1][2] += bad

    def _done(self, fut: Future) -> None:
        err = None if fut.cancelled() else fut.exception()
        with self._lock:
            if not fut.cancelled() and err is None:
                self._ok += 1
            else:
                self._failed += 1
                kind = type(err).__name__ if err is not None else "CancelledError"
                self._failed_by_type[kind] += 1
                self._last_error = f"{kind}: {err}" if err is not None else kind
                self._count(0, 1)

    def _run(self) -> None:
        t0 = self._t_start = time.perf_counter()
        due_times = arrival_stream(self.pattern, self.rate_rps, self._rng, t0, self.duration_s)
        pool, i, next_yield, next_look = self._pool, 0, 0.0, t0 + 1.0
        # A sender behind its schedule stops with the duration, not once it has sent every
        # request due in it (1M req/s for 3 s flooded on past 17 s; a newcomer)
        end = t0 + self.duration_s + LATE_GRACE_S if self.duration_s is not None else None
        cut = False
        try:
            for due, now in paced(due_times, self._stop):
                if end is not None and now > end:
                    cut = True
                    break
                if now >= next_look and self._watch is not None:
                    next_look = now + 1.0
                    if (new := self._drawn_again()) is not None:
                        pool = self._pool = new
                lag = now - due
                if lag > self._max_lag:
                    self._max_lag = lag
                x = pool[i % len(pool)]
                i += 1
                kwargs = self._submit_kwargs
                if self._key_pool:
                    kwargs = {**kwargs, "key": f"user-{i * 7919 % self._key_pool}"}
                if self.high_share is not None:
                    kwargs = {**kwargs, "priority": 1 + (self._marks.random() >= self.high_share)}
                try:
                    fut = self._submit(self.target, x, **kwargs)
                except Exception as err:  # noqa: BLE001 - refusals are counted, not fatal
                    with self._lock:
                        self._sent += 1
                        self._refused += 1
                        self._refused_by_type[type(err).__name__] += 1
                        self._last_error = f"{type(err).__name__}: {err}"
                        self._count(1, 1)
                    if now >= next_yield:  # the GIL to the engine's threads (open_loop)
                        time.sleep(0)
                        next_yield = now + YIELD_GAP_S
                    continue
                with self._lock:
                    self._sent += 1
                    self._count(1, 0)
                    if lag > self._recent[-1][3]:
                        self._recent[-1][3] = lag
                fut.add_done_callback(self._done)
        finally:
            self._own_cpu_end = time.thread_time()
            if self._client_cpu is not None:
                self._other_cpu_end = self._client_cpu() - self._client_cpu0
            self._t_end = time.perf_counter()
            if cut:   # (before the stop is set: status() reads it once running is False)
                self._unsent = max(0, round(self.rate_rps * (self.duration_s or 0.0))
                                   - self._sent)
            stopped = self._stop.is_set()
            self._stop.set()
            if self._on_end is not None:
                try:
                    cls = f" (priority {self.priority})" if self.priority is not None else ""
                    unsent = self._unsent
                    behind = (f"; the sender fell behind its schedule: about {unsent:,} "
                              f"requests due in the {self.duration_s:g} s were not sent"
                              if cut else "")
                    self._on_end(self.target, f"traffic{cls} stopped" if stopped else
                                 f"traffic{cls} ended after {self._t_end - t0:.0f} s "
                                 f"({self._sent:,} requests{behind})")
                except Exception:  # noqa: BLE001 - a mark must not break the sender
                    log.exception("traffic end hook failed")


def _class_key(priority: int | None) -> int | None:
    """A generator's class as the manager keys it (0 and 2 are both the normal class)."""
    return 2 if priority == 0 else priority


class TrafficManager:
    """Traffic generators by target and class: at most one per target and priority (one
    without a priority, and one per priority class). Thread-safe."""

    def __init__(self, submit: SubmitFn,
                 on_end: Callable[[str, str], None] | None = None) -> None:
        self._submit = submit
        #: what a generator calls when it ends (the engine's event marks)
        self.on_end = on_end
        self._lock = threading.Lock()
        self._gens: dict[tuple[str, int | None], TrafficGenerator] = {}

    def start(self, target: str, sample: Callable[[np.random.Generator], Any],
              **options: Any) -> TrafficStatus:
        """Start sending to ``target`` (replacing traffic already going there in the same
        class: ``priority``, None for none)."""
        return self.add(TrafficGenerator(self._submit, target, sample, on_end=self.on_end,
                                         **options))

    def add(self, gen: Any) -> TrafficStatus:
        """Start ``gen`` (a :class:`TrafficGenerator`, or one with its interface: an
        :class:`~core.lab.agent_traffic.AgentTraffic`), replacing the traffic going to its
        target in its class."""
        target = gen.target
        key = (target, _class_key(gen.priority))
        with self._lock:
            old = self._gens.pop(key, None)
            self._gens[key] = gen
        was = old.status() if old is not None and old.running else None
        if old is not None:
            old.stop()
        gen.start()
        status = gen.status()   # (a second start replaced the first unsaid; a newcomer)
        return status if was is None else dataclasses.replace(
            status, replaced=f"replaced the traffic already going to {was.brief}")

    def _of(self, target: str | None, priority: int | None | str = "any"
            ) -> list[TrafficGenerator]:
        want = priority if priority == "any" else _class_key(priority)
        with self._lock:
            return [g for (t, p), g in self._gens.items()
                    if (target is None or t == target) and (want == "any" or p == want)]

    def stop(self, target: str | None = None, priority: int | None | str = "any",
             timeout_s: float = 5.0) -> None:
        """Stop the traffic to ``target`` (or to every target): every class of it, or the
        generator of one ``priority`` (None: the one sending none); every one is told at
        once, then waited for within ``timeout_s`` in all."""
        gens = self._of(target, priority)
        for g in gens:
            g.stop(0.0)
        deadline = time.monotonic() + timeout_s
        for g in gens:
            g.stop(max(0.0, deadline - time.monotonic()))

    def wait(self, target: str, timeout_s: float | None = None,
             priority: int | None | str = "any") -> TrafficStatus:
        """Block until the bounded run to ``target`` ends (or ``timeout_s``), and until
        every request it sent has an answer; returns its final status. With a generator per
        class: the one of ``priority``, or by default every one of them that ends by itself
        (the status returned is then the last started's)."""
        gens = self._of(target, priority)
        if not gens:
            raise TrafficNotFoundError(f"no traffic was started to {target!r}"
                                     + ("" if priority == "any" else f" with priority={priority}")
                                     + "; start it with engine.start_traffic(target, ...)")
        if len(gens) > 1:   # not one that runs until stopped: waiting would never end
            gens = [g for g in gens if g.duration_s is not None or not g.running]
            if not gens:
                raise ConfigError(f"every traffic generator to {target!r} runs until stopped: "
                                  "nothing to wait for; stop_traffic() it, or start it with "
                                  "duration_s")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for gen in gens:
            gen.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            while gen.status().in_flight > 0 and (deadline is None
                                                  or time.monotonic() < deadline):
                time.sleep(0.01)
        return gens[-1].status()

    def statuses(self) -> list[TrafficStatus]:
        return [g.status() for g in self._of(None)]

    def running(self) -> bool:
        return any(g.running for g in self._of(None))


def generated_refused(engine: Any, model: str) -> str | None:
    """Why ``model`` is known to refuse generated inputs: the note of its last memory probe
    (its trial run's generated ids refused, run as 0: core.models.probe), else None."""
    return probe_note(engine.memory_profile(model))


def experiments_with_arm(engine: Any, model: str) -> list[tuple[str, str]]:
    """``(experiment, "A", "B" or "A and B": an A/A test)`` for each A/B experiment with
    ``model`` as an arm: those whose traffic reaches it (one deleted meanwhile is left out)."""
    found = []
    for exp in engine.ab_experiments():
        try:
            arms = engine.ab_arms(exp)
        except ModelNotFoundError:
            continue
        if model in arms:
            found.append((exp, "A and B" if arms[0] == arms[1] else "AB"[arms.index(model)]))
    return found
