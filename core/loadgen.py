"""Background open-loop traffic for the dashboard and notebooks.

A :class:`TrafficGenerator` sends requests to one engine target on a schedule (constant
or Poisson arrivals at ``rate_rps``) from its own named thread, whatever the engine does:
open loop, so a slow engine shows up as queueing, not as a politely slower client. It keeps
no futures; done callbacks count outcomes, so memory stays flat however long it runs.

Example:
    >>> gen = TrafficGenerator(engine.submit, "mlp", sample=lambda rng: x, rate_rps=200)
    >>> gen.start(); ...; gen.stop()
    >>> gen.status().sent
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
import time
from collections import Counter, deque
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .batcher import Prediction
from .config import _check_choice, _check_float, _check_int

__all__ = ["TrafficGenerator", "TrafficStatus", "ARRIVAL_PATTERNS", "arrival_times",
           "LoadResult", "LOAD_COLUMNS", "open_loop", "closed_loop"]

ARRIVAL_PATTERNS = ("constant", "poisson", "bursty")

SubmitFn = Callable[..., Future]

# How far back TrafficStatus.recent_* look (seconds).
_RECENT_S = 5

# The open-loop senders' shortest sleep (see open_loop).
_MIN_SLEEP_S = 0.0005

#: Client CPU (% of one core) and sender lag (ms) past which TrafficStatus.client_bound
#: says the client, not the server, sets the pace.
CLIENT_BOUND_CPU_PCT = 85.0
CLIENT_BOUND_LAG_MS = 100.0


def _loop_cpu_s() -> float:
    """CPU seconds of the remote HTTP client's loop thread (0 when there is none)."""
    from .remote import client_cpu_s
    return client_cpu_s()


def thread_cpu_s(thread: threading.Thread | None) -> float:
    """CPU seconds ``thread`` has used so far (0 when it is not running)."""
    if thread is None or thread.ident is None or not thread.is_alive():
        return 0.0
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (OSError, AttributeError, ProcessLookupError):
        return 0.0


@dataclass(frozen=True)
class TrafficStatus:
    """Counts of one generator's traffic so far."""

    target: str
    running: bool
    rate_rps: float
    pattern: str
    rows_per_request: int
    sent: int
    refused: int
    succeeded: int
    failed: int
    elapsed_s: float
    max_lag_ms: float
    refused_by_type: dict[str, int] = field(default_factory=dict)
    failed_by_type: dict[str, int] = field(default_factory=dict)
    #: the last refusal or failure, "Type: message"
    last_error: str | None = None
    #: over the last few seconds: requests sent, and those refused or failed
    recent_sent: int = 0
    recent_bad: int = 0
    #: CPU the client used, in % of one core over ``elapsed_s`` (0 in the first second):
    #: the sender thread plus, for remote models, the HTTP client's loop (core.remote; one
    #: loop serves every remote model of the process, so traffic to two remote models at
    #: once counts it in both). Python runs them under one lock, so near 100 % the client,
    #: not the server, sets the pace.
    client_cpu_pct: float = 0.0

    @property
    def client_bound(self) -> str | None:
        """A sentence when the client, not the server, is the bottleneck (its CPU near a
        full core, or the sender far behind its schedule), else None."""
        if self.elapsed_s < 1.0 or self.sent < 50:
            return None
        if self.client_cpu_pct >= CLIENT_BOUND_CPU_PCT:
            return (f"The client is the bottleneck: sending to {self.target} and reading the "
                    f"answers takes {self.client_cpu_pct:.0f} % of a core (Python runs it on "
                    "one), so these figures measure Batchlab's client, not the server. Send "
                    "less, or load the server from more processes.")
        if self.running and self.max_lag_ms > CLIENT_BOUND_LAG_MS:
            return (f"The sender is {self.max_lag_ms:.0f} ms behind its schedule: this "
                    "machine cannot send this rate; latencies include that delay.")
        return None

    @property
    def in_flight(self) -> int:
        return self.sent - self.refused - self.succeeded - self.failed

    @property
    def problem(self) -> str | None:
        """A sentence when much of the recent traffic is refused or failing, else None
        (what the sidebar and the pages show, so a generator never fails silently)."""
        if self.recent_sent == 0 or self.recent_bad == 0:
            return None
        share = self.recent_bad / self.recent_sent
        if share < 0.01:
            return None
        return (f"{share:.0%} of the requests sent to {self.target} in the last seconds were "
                f"refused or failed. Last: {self.last_error}")


def arrival_times(pattern: str, rate_rps: float, n: int, rng: np.random.Generator,
                  cv: float = 3.0) -> np.ndarray:
    """Offsets (s) of ``n`` arrivals from the start at mean rate ``rate_rps``.

    ``constant``: evenly spaced. ``poisson``: exponential gaps (coefficient of variation 1).
    ``bursty``: gamma-distributed gaps with coefficient of variation ``cv`` (> 1 clusters
    arrivals into bursts separated by lulls; the mean rate is unchanged).

    >>> arrival_times("constant", 4.0, 3, np.random.default_rng(0)).tolist()
    [0.25, 0.5, 0.75]
    """
    mean = 1.0 / rate_rps
    if pattern == "constant":
        gaps = np.full(n, mean)
    elif pattern == "poisson":
        gaps = rng.exponential(mean, n)
    elif pattern == "bursty":
        if not cv > 0:
            raise ValueError(f"cv must be > 0, got {cv!r}")
        shape = 1.0 / cv**2
        gaps = rng.gamma(shape, mean / shape, n)
    else:
        raise ValueError(f"pattern must be one of {ARRIVAL_PATTERNS}, got {pattern!r}")
    return np.cumsum(gaps)


class TrafficGenerator:
    """Open-loop sender to ``target`` via ``submit(target, x)`` (see module docstring)."""

    def __init__(self, submit: SubmitFn, target: str, sample: Callable[[np.random.Generator], Any],
                 rate_rps: float = 100.0, pattern: str = "constant", rows_per_request: int = 1,
                 duration_s: float | None = None, seed: int | None = 0,
                 submit_kwargs: dict[str, Any] | None = None,
                 key_pool: int | None = None,
                 client_cpu: Callable[[], float] | None = None) -> None:
        _check_float("rate_rps", rate_rps, 0.1, 1_000_000.0)
        _check_choice("pattern", pattern, ARRIVAL_PATTERNS)
        _check_int("rows_per_request", rows_per_request, 1, 65536)
        if duration_s is not None:
            _check_float("duration_s", duration_s, 0.01, 86_400.0)
        self.target = target
        self.rate_rps = float(rate_rps)
        self.pattern = pattern
        self.rows_per_request = rows_per_request
        self.duration_s = duration_s
        self._submit = submit
        self._submit_kwargs = submit_kwargs or {}
        # With a key pool, each request carries key="user-<k>" for k drawn from the pool
        # (sticky A/B routing): like traffic from that many users.
        self._key_pool = key_pool
        self._rng = np.random.default_rng(seed)
        # A small pool of inputs, reused round-robin: sampling per request would cost more
        # than the engine's own per-request work.
        self._pool = [sample(self._rng) for _ in range(16)]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sent = self._refused = self._ok = self._failed = 0
        self._refused_by_type: Counter[str] = Counter()
        self._failed_by_type: Counter[str] = Counter()
        self._last_error: str | None = None
        # [second, sent, refused or failed] for the last few seconds
        self._recent: deque[list[int]] = deque(maxlen=_RECENT_S + 1)
        self._max_lag = 0.0
        self._t_start: float | None = None
        self._t_end: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"traffic-{target}", daemon=True)
        # CPU of the client's other threads (the remote HTTP client's loop), and this
        # sender's own CPU when it has ended.
        self._client_cpu = client_cpu
        self._client_cpu0 = client_cpu() if client_cpu is not None else 0.0
        self._own_cpu_end: float | None = None
        self._other_cpu_end: float | None = None

    def start(self) -> TrafficGenerator:
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
            since = int(now) - _RECENT_S
            recent = [r for r in self._recent if r[0] >= since]
            return TrafficStatus(
                target=self.target, running=self.running, rate_rps=self.rate_rps,
                pattern=self.pattern, rows_per_request=self.rows_per_request, sent=self._sent,
                refused=self._refused, succeeded=self._ok, failed=self._failed,
                elapsed_s=end - start, max_lag_ms=self._max_lag * 1000.0,
                refused_by_type=dict(self._refused_by_type),
                failed_by_type=dict(self._failed_by_type), last_error=self._last_error,
                recent_sent=sum(r[1] for r in recent), recent_bad=sum(r[2] for r in recent),
                client_cpu_pct=cpu_pct)

    def _count(self, sent: int, bad: int) -> None:
        """Add to the current second's counts (caller holds the lock)."""
        sec = int(time.perf_counter())
        if not self._recent or self._recent[-1][0] != sec:
            self._recent.append([sec, 0, 0])
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
        perf = time.perf_counter
        t0 = self._t_start = perf()
        chunk = max(16, int(self.rate_rps))  # schedule a second of arrivals at a time
        offsets = arrival_times(self.pattern, self.rate_rps, chunk, self._rng)
        base = 0.0
        idx = 0
        i = 0
        pool = self._pool
        try:
            while not self._stop.is_set():
                if idx == len(offsets):
                    base += float(offsets[-1])
                    offsets = arrival_times(self.pattern, self.rate_rps, chunk, self._rng)
                    idx = 0
                due = t0 + base + float(offsets[idx])
                if self.duration_s is not None and due - t0 > self.duration_s:
                    break
                now = perf()
                if now < due:
                    # Sleep, never spin (the GIL is shared), at least _MIN_SLEEP_S: see
                    # open_loop.
                    self._stop.wait(min(max(due - now, _MIN_SLEEP_S), 0.05))
                    continue
                lag = now - due
                if lag > self._max_lag:
                    self._max_lag = lag
                x = pool[i % len(pool)]
                i += 1
                idx += 1
                kwargs = self._submit_kwargs
                if self._key_pool:
                    kwargs = {**kwargs, "key": f"user-{i * 7919 % self._key_pool}"}
                try:
                    fut = self._submit(self.target, x, **kwargs)
                except Exception as err:  # noqa: BLE001 - refusals are counted, not fatal
                    with self._lock:
                        self._sent += 1
                        self._refused += 1
                        self._refused_by_type[type(err).__name__] += 1
                        self._last_error = f"{type(err).__name__}: {err}"
                        self._count(1, 1)
                    continue
                with self._lock:
                    self._sent += 1
                    self._count(1, 0)
                fut.add_done_callback(self._done)
        finally:
            self._own_cpu_end = time.thread_time()
            if self._client_cpu is not None:
                self._other_cpu_end = self._client_cpu() - self._client_cpu0
            self._t_end = perf()
            self._stop.set()


# -- bounded load runs with per-request results (experiments, notebooks, tests) -------------------
LOAD_COLUMNS = ["request", "client", "intended_s", "sent_s", "done_s", "latency_ms", "engine_ms",
                "queue_ms", "compute_ms", "batch_rows", "ok", "error"]


@dataclass(frozen=True)
class LoadResult:
    """Per-request results of a bounded load run, and their summary.

    ``latency_ms`` is measured from each request's *intended* send time (open loop) or its
    send time (closed loop), so a stalled engine cannot hide its queueing behind a late
    sender. ``max_lag_ms``: how far the open-loop sender fell behind its own schedule.
    """

    mode: str
    frame: Any  # pandas.DataFrame with LOAD_COLUMNS
    duration_s: float
    max_lag_ms: float
    stopped: bool = False
    #: CPU of the client (the sending threads and the remote HTTP client's loop), in % of
    #: one core over the run: near 100 %, the client set the pace, not the server.
    client_cpu_pct: float = 0.0

    def summary(self) -> dict[str, Any]:
        f = self.frame
        ok = f[f["ok"]]
        n = len(f)
        lat = ok["latency_ms"]
        span = self.duration_s if self.duration_s > 0 else float("nan")
        return {
            "mode": self.mode, "sent": n, "succeeded": len(ok), "failed": n - len(ok),
            "error_rate": (n - len(ok)) / n if n else 0.0,
            "achieved_rps": len(ok) / span if len(ok) else 0.0,
            "p50_ms": float(lat.quantile(0.50)) if len(ok) else float("nan"),
            "p95_ms": float(lat.quantile(0.95)) if len(ok) else float("nan"),
            "p99_ms": float(lat.quantile(0.99)) if len(ok) else float("nan"),
            "max_ms": float(lat.max()) if len(ok) else float("nan"),
            # 0 rows = the result was not an engine Prediction (a peer system's future).
            "mean_batch_rows": float(ok["batch_rows"][ok["batch_rows"] > 0].mean())
            if len(ok) else float("nan"),
            "mean_queue_ms": float(ok["queue_ms"].mean()) if len(ok) else float("nan"),
            "mean_compute_ms": float(ok["compute_ms"].mean()) if len(ok) else float("nan"),
            "max_lag_ms": self.max_lag_ms,
            "client_cpu_pct": self.client_cpu_pct,
        }


class _Recorder:
    """Preallocated per-request columns filled by done callbacks (no futures kept).

    Plain lists, not numpy arrays, on the hot path: a list store costs a fraction of a numpy
    scalar store, and this runs in the same process (and under the same GIL) as the engine
    it measures, so every microsecond here is taken from the system under test.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        nan = math.nan
        self.intended, self.sent, self.done = [nan] * n, [nan] * n, [nan] * n
        self.engine_ms, self.queue_ms, self.compute_ms = [nan] * n, [nan] * n, [nan] * n
        self.rows = [0] * n
        self.client = [0] * n
        self.ok = [False] * n
        self.error: list[str] = [""] * n
        self.lock = threading.Lock()
        self._answered: list[None] = []  # one append per answer (atomic under the GIL)
        self.used = 0

    def callback(self, i: int) -> Callable[[Future], None]:
        return functools.partial(self._done, i)

    def _done(self, i: int, fut: Future) -> None:
        self.done[i] = time.perf_counter()
        try:
            p = fut.result()
        except CancelledError:
            self.error[i] = "Cancelled"
        except BaseException as err:  # noqa: BLE001 - the request's own failure, recorded
            self.error[i] = type(err).__name__
        else:
            self.ok[i] = True
            # Any system's futures can be driven (benchmarks compare peers); only an
            # engine Prediction carries the engine-side timings.
            if isinstance(p, Prediction):
                self.engine_ms[i], self.queue_ms[i] = p.total_ms, p.queue_ms
                self.compute_ms[i], self.rows[i] = p.compute_ms, p.batch_rows
        self._answered.append(None)

    def refused(self, i: int, err: BaseException) -> None:
        self.done[i] = time.perf_counter()
        self.error[i] = type(err).__name__
        self._answered.append(None)

    @property
    def finished(self) -> int:
        return len(self._answered)

    def wait_all(self, timeout_s: float) -> None:
        """Wait until every request sent so far has an answer (or ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while len(self._answered) < self.used and time.monotonic() < deadline:
            time.sleep(0.001)

    def frame(self, t0: float, from_intended: bool):
        import pandas as pd

        k = self.used
        intended = np.array(self.intended[:k])
        sent = np.array(self.sent[:k])
        done = np.array(self.done[:k])
        start = intended if from_intended else sent
        return pd.DataFrame({
            "request": np.arange(k), "client": np.array(self.client[:k], np.int64),
            "intended_s": intended - t0, "sent_s": sent - t0,
            "done_s": done - t0, "latency_ms": (done - start) * 1000.0,
            "engine_ms": np.array(self.engine_ms[:k]), "queue_ms": np.array(self.queue_ms[:k]),
            "compute_ms": np.array(self.compute_ms[:k]),
            "batch_rows": np.array(self.rows[:k], np.int64),
            "ok": np.array(self.ok[:k], bool), "error": self.error[:k]}, columns=LOAD_COLUMNS)

    def last_done(self) -> float:
        done = [d for d in self.done[:self.used] if d == d]  # NaN != NaN
        return max(done) if done else math.nan


def open_loop(submit: Callable[[Any], Future], sample: Callable[[np.random.Generator], Any],
              rate_rps: float, pattern: str = "poisson", cv: float = 3.0,
              duration_s: float | None = 5.0, count: int | None = None, seed: int | None = 0,
              stop: threading.Event | None = None,
              progress: Callable[[float], None] | None = None,
              drain_s: float = 30.0, offsets_s: Sequence[float] | None = None) -> LoadResult:
    """Send requests on a schedule (``rate_rps``, ``pattern``) whatever the engine does.

    Bounded by ``duration_s`` and/or ``count``; ``stop`` ends it early; ``progress(f)``
    is called with the fraction done about ten times per second. ``submit(x)`` sends one
    request (e.g. ``lambda x: engine.submit("mlp", x)``); ``sample(rng)`` makes its input.
    ``offsets_s``: replay these send times (seconds from the start, ascending) instead of
    drawing a schedule (then ``rate_rps`` and ``pattern`` are not used).
    """
    rng = np.random.default_rng(seed)
    if offsets_s is not None:
        offsets = np.asarray(offsets_s, dtype=np.float64)
        if offsets.ndim != 1 or len(offsets) == 0 or (np.diff(offsets) < 0).any() \
                or offsets[0] < 0:
            raise ValueError("offsets_s must be a non-empty, ascending list of seconds >= 0")
    else:
        _check_float("rate_rps", rate_rps, 0.1, 1_000_000.0)
        _check_choice("pattern", pattern, ARRIVAL_PATTERNS)
        if duration_s is None and count is None:
            raise ValueError("give duration_s or count (or both) to bound the run")
        n = count if count is not None else int(rate_rps * duration_s) + 1
        offsets = arrival_times(pattern, rate_rps, n, rng, cv)
        if duration_s is not None:
            offsets = offsets[offsets <= duration_s + 1e-9]
    n = len(offsets)
    pool = [sample(rng) for _ in range(min(64, max(1, n)))]
    cpu0 = time.thread_time() + _loop_cpu_s()
    n_pool = len(pool)
    rec = _Recorder(n)
    stop = stop or threading.Event()
    perf = time.perf_counter
    sleep = time.sleep
    t0 = perf() + 0.005
    due_at = (t0 + offsets).tolist()  # floats: the loop below must stay cheap
    intended, sent, done = rec.intended, rec.sent, rec._done
    partial = functools.partial
    max_lag = 0.0
    next_report = 0.0
    i = 0
    while i < n and not stop.is_set():
        due = due_at[i]
        now = perf()
        if now < due:
            # Sleep, never spin (the GIL is shared), and never less than _MIN_SLEEP_S: a timed
            # sleep costs 30-40 us of CPU on a VM, which at thousands of wake-ups a second
            # would be taken from the system under test (the load is sent in small bursts
            # instead). Lateness this causes counts as latency (measured from the intended
            # time) and shows in max_lag_ms.
            sleep(min(max(due - now, _MIN_SLEEP_S), 0.05))
            continue
        if now - due > max_lag:
            max_lag = now - due
        while i < n and due_at[i] <= now:
            intended[i] = due_at[i]
            sent[i] = perf()
            rec.used = i + 1
            try:
                fut = submit(pool[i % n_pool])
            except Exception as err:  # noqa: BLE001 - refused at submit: recorded
                rec.refused(i, err)
            else:
                fut.add_done_callback(partial(done, i))
            i += 1
        if progress is not None and now >= next_report:
            progress(i / n)
            next_report = now + 0.1
    rec.wait_all(drain_s)
    if progress is not None:
        progress(1.0)
    span = (rec.last_done() - t0) if rec.used else 0.0
    cpu = time.thread_time() + _loop_cpu_s() - cpu0
    return LoadResult("open", rec.frame(t0, from_intended=True), float(span),
                      float(max_lag * 1000.0),
                      stopped=stop.is_set() and i < n,
                      client_cpu_pct=100.0 * cpu / span if span > 0 else 0.0)


def closed_loop(submit: Callable[[Any], Future], sample: Callable[[np.random.Generator], Any],
                concurrency: int, duration_s: float | None = 5.0, count: int | None = None,
                seed: int | None = 0, stop: threading.Event | None = None,
                progress: Callable[[float], None] | None = None,
                timeout_s: float = 30.0) -> LoadResult:
    """``concurrency`` clients, each sending its next request when the last one returns."""
    _check_int("concurrency", concurrency, 1, 10_000)
    if duration_s is None and count is None:
        raise ValueError("give duration_s or count (or both) to bound the run")
    # Room for every request the run can send: a Python process serves well under 50k/s.
    cap = count if count is not None else int(duration_s * 50_000) + concurrency
    cap = min(cap, 2_000_000)
    rec = _Recorder(cap)
    stop = stop or threading.Event()
    rng = np.random.default_rng(seed)
    pool = [sample(rng) for _ in range(64)]
    counter = itertools.count()
    perf = time.perf_counter
    t0 = perf()
    end = t0 + duration_s if duration_s is not None else math.inf
    thread_cpu: list[float] = []      # each client's CPU seconds, added as it leaves
    loop_cpu0 = _loop_cpu_s()

    def client(cid: int) -> None:
        try:
            _client(cid)
        finally:
            thread_cpu.append(time.thread_time())

    def _client(cid: int) -> None:
        while not stop.is_set() and perf() < end:
            i = next(counter)
            if i >= cap:
                return
            rec.client[i] = cid
            rec.intended[i] = rec.sent[i] = perf()
            with rec.lock:
                rec.used = max(rec.used, i + 1)
            try:
                fut = submit(pool[i % len(pool)])
            except Exception as err:  # noqa: BLE001
                rec.refused(i, err)
                continue
            fut.add_done_callback(rec.callback(i))
            try:
                fut.result(timeout_s)
            except Exception:  # noqa: BLE001 - recorded by the callback
                pass
            if progress is not None and cid == 0:
                frac = (perf() - t0) / duration_s if duration_s else i / cap
                progress(min(1.0, frac))

    threads = [threading.Thread(target=client, args=(c,), name=f"client-{c}", daemon=True)
               for c in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec.wait_all(timeout_s)
    if progress is not None:
        progress(1.0)
    span = perf() - t0
    cpu = sum(thread_cpu) + _loop_cpu_s() - loop_cpu0
    return LoadResult("closed", rec.frame(t0, from_intended=False), span, 0.0,
                      stopped=stop.is_set(),
                      client_cpu_pct=100.0 * cpu / span if span > 0 else 0.0)
