"""Bounded load runs with per-request results (sweeps, calibration, replays, notebooks,
benchmarks): open loop (``open_loop``: a schedule, whatever the engine does) and closed loop
(``closed_loop``: N clients, each sending when its last answer came).

Example:
    >>> res = open_loop(lambda x: engine.submit("mlp", x), lambda rng: x, rate_rps=500,
    ...                 duration_s=2)
    >>> res.summary()["p99_ms"]
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
import time
import warnings
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from core.batching import Prediction
from core.config import _check_choice, _check_float, _check_int, _shown_number
from core.errors import ConfigError
from core.metrics import helpers_cpu_s
from .schedule import ARRIVAL_PATTERNS, YIELD_GAP_S, paced, run_schedule

__all__ = ["LoadResult", "LOAD_COLUMNS", "open_loop", "closed_loop", "check_clients",
           "MAX_CLIENTS"]


LOAD_COLUMNS = ["request", "client", "intended_s", "sent_s", "done_s", "latency_ms", "engine_ms",
                "queue_ms", "compute_ms", "batch_rows", "ok", "error"]


#: The most requests one closed loop records (it ends there, and says so).
CLOSED_LOOP_MAX = 2_000_000
#: The most clients a closed loop runs (each one a thread of this process).
MAX_CLIENTS = 10_000

#: The error of a request still unanswered when the run stopped waiting (``drain_s``):
#: counted as failed, and apart in the summary (``unanswered``).
UNANSWERED = "Unanswered"

# The summary's fields between "mode" and "max_lag_ms", in order.
_SUMMARY_FIELDS = ("sent", "succeeded", "failed", "error_rate", "achieved_rps", "p50_ms",
                   "p95_ms", "p99_ms", "max_ms", "mean_batch_rows", "mean_queue_ms",
                   "mean_compute_ms")


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
    #: Load from several agents (core.lab.agents): one dict per agent (node, sent,
    #: succeeded, client_cpu_pct, max_lag_ms, error); empty for a run from this process.
    agents: tuple[dict[str, Any], ...] = ()
    #: Intended sends that no agent made (an agent died): in the frame as failed requests
    #: with the error "AgentLost", never silently missing.
    lost: int = 0
    #: A run that returned histograms, not rows (load agents with ``rows=False``): a
    #: :class:`~core.lab.digest.LoadDigest`; the frame is then empty and the summary, the
    #: per-second series and the merged histogram come from it.
    digest: Any = None

    def summary(self) -> dict[str, Any]:
        """The run in figures. ``mean_batch_rows`` is the batch a request rode in, averaged
        over requests (what a caller saw; a sweep's column too): larger than the engine's
        rows per batch (``avg_batch_rows``, a replay's and the what-if's) when sizes vary,
        since a big batch carries more requests (3.8 against 3.1 at one load).
        ``max_batch_rows``: the largest batch any answered request rode in (while one more
        request would have fitted it under the max batch size, that limit never acted: a
        sweep's ties read it)."""
        if self.digest is not None:
            d = self.digest
            span = self.duration_s if self.duration_s > 0 else float("nan")
            fields = d.summary_fields()
            fields["achieved_rps"] = d.succeeded / span if d.succeeded else 0.0
            return {"mode": self.mode, **{k: fields[k] for k in _SUMMARY_FIELDS},
                    "max_lag_ms": self.max_lag_ms, "client_cpu_pct": self.client_cpu_pct,
                    "agents": len(self.agents), "lost": self.lost,
                    "unanswered": int(d.errors.get(UNANSWERED, 0)),
                    "max_batch_rows": fields["max_batch_rows"]}
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
            "agents": len(self.agents), "lost": self.lost,
            "unanswered": int((f["error"] == UNANSWERED).sum()),
            "max_batch_rows": float(ok["batch_rows"].max())
            if len(ok) and (ok["batch_rows"] > 0).any() else float("nan"),
        }

    def per_second(self) -> Any:
        """One row a second of the run (by intended send time): sent, succeeded, failed,
        p50_ms, p99_ms."""
        if self.digest is not None:
            return self.digest.per_second()
        from .digest import LoadDigest, digest_frame
        d = LoadDigest()
        d.add(digest_frame(self.frame))
        return d.per_second()

    @property
    def agents_bound(self) -> str | None:
        """With load agents: a sentence when the agents, not the server, set the pace (one
        near a full core, or far behind its schedule), else None."""
        from .traffic import CLIENT_BOUND_CPU_PCT, CLIENT_BOUND_LAG_MS
        busy = [a for a in self.agents if not a.get("error") and (
            a.get("client_cpu_pct", 0.0) >= CLIENT_BOUND_CPU_PCT
            or a.get("max_lag_ms", 0.0) > CLIENT_BOUND_LAG_MS)]
        if not busy:
            return None
        worst = max(busy, key=lambda a: a.get("client_cpu_pct", 0.0))
        return (f"{len(busy)} of {len(self.agents)} load agents set the pace, not the server "
                f"(agent {worst['agent']}: {worst.get('client_cpu_pct', 0.0):.0f} % of a core, "
                f"up to {worst.get('max_lag_ms', 0.0):.0f} ms behind its schedule): these "
                "figures measure the agents; add agents (agents=N) or nodes.")


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
        # (a request with no answer when the run gave up waiting was a failure with no
        # error: named, and counted in the summary's "unanswered"; an adversary)
        error = [e or (UNANSWERED if not ok and d != d else "")
                 for e, ok, d in zip(self.error[:k], self.ok[:k], done)]
        return pd.DataFrame({
            "request": np.arange(k), "client": np.array(self.client[:k], np.int64),
            "intended_s": intended - t0, "sent_s": sent - t0,
            "done_s": done - t0, "latency_ms": (done - start) * 1000.0,
            "engine_ms": np.array(self.engine_ms[:k]), "queue_ms": np.array(self.queue_ms[:k]),
            "compute_ms": np.array(self.compute_ms[:k]),
            "batch_rows": np.array(self.rows[:k], np.int64),
            "ok": np.array(self.ok[:k], bool), "error": error}, columns=LOAD_COLUMNS)

    def last_done(self) -> float:
        done = [d for d in self.done[:self.used] if d == d]  # NaN != NaN
        return max(done) if done else math.nan


def open_loop(submit: Callable[[Any], Future], sample: Callable[[np.random.Generator], Any],
              rate_rps: float, pattern: str = "poisson", cv: float = 3.0,
              duration_s: float | None = 5.0, count: int | None = None, seed: int | None = 0,
              stop: threading.Event | None = None,
              progress: Callable[[float], None] | None = None,
              drain_s: float = 30.0, offsets_s: Sequence[float] | None = None,
              start_at: float | None = None) -> LoadResult:
    """Send requests on a schedule (``rate_rps``, ``pattern``) whatever the engine does.

    Bounded by ``duration_s`` and/or ``count``; ``stop`` ends it early; ``progress(f)``
    is called with the fraction done about ten times per second. ``submit(x)`` sends one
    request (e.g. ``lambda x: engine.submit("mlp", x)``); ``sample(rng)`` makes its input.
    ``offsets_s``: replay these send times (seconds from the start, ascending) instead of
    drawing a schedule (then ``rate_rps`` and ``pattern`` are not used). ``start_at``: the
    schedule's zero (``time.perf_counter``; default: now), e.g. one instant shared by load
    agents on several machines.

    A refused request (the queue full, the engine busy) is recorded and the sender lets go
    of the GIL (``time.sleep(0)``), at most once per ``YIELD_GAP_S`` (0.5 ms): refusals
    are cheap (~5 µs), so past capacity a sender would refuse in a loop
    holding the GIL until the interpreter forced a switch, and the engine in this process
    (its runner back from each run) would wait that long every time: the CNN offered 100k
    req/s served 24k instead of ~50k. A yield after every refusal made the sender itself
    fall seconds behind its schedule under a 10x flood (docs/benchmarks.md). Below
    capacity nothing is refused and nothing changes.
    """
    sleep = time.sleep
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
        offsets = run_schedule(pattern, rate_rps, duration_s, count, rng, cv)
    n = len(offsets)
    pool = [sample(rng) for _ in range(min(64, max(1, n)))]
    cpu0 = time.thread_time() + helpers_cpu_s()
    n_pool = len(pool)
    rec = _Recorder(n)
    stop = stop or threading.Event()
    t0 = time.perf_counter() + 0.005 if start_at is None else float(start_at)
    due_at = (t0 + offsets).tolist()  # floats: the loop below must stay cheap
    intended, sent, done = rec.intended, rec.sent, rec._done
    partial = functools.partial
    max_lag = 0.0
    next_report = next_yield = 0.0
    i = 0
    for due, now in paced(due_at, stop):
        if now - due > max_lag:
            max_lag = now - due
        intended[i] = due
        sent[i] = now
        rec.used = i + 1
        try:
            fut = submit(pool[i % n_pool])
        except Exception as err:  # noqa: BLE001 - refused at submit: recorded
            rec.refused(i, err)
            if now >= next_yield:  # the GIL to the engine's threads (see the docstring)
                sleep(0)
                next_yield = now + YIELD_GAP_S
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
    if offsets_s is None and i == n and n:
        # At least the schedule's length (offered = rate): the duration, unless count cut
        # the schedule short (then its last send)
        end = duration_s if duration_s is not None and (count is None or n < count) \
            else offsets[-1]
        span = max(span, float(end))
    cpu = time.thread_time() + helpers_cpu_s() - cpu0
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
    _check_int("concurrency", concurrency, 1, MAX_CLIENTS)
    if duration_s is None and count is None:
        raise ValueError("give duration_s or count (or both) to bound the run")
    if count is not None and count > CLOSED_LOOP_MAX:
        raise ConfigError(f"count={count:,} is past a closed loop's limit of "
                          f"{CLOSED_LOOP_MAX:,} requests (each is recorded); for a long "
                          "soak use engine.start_traffic(...), or measure in shorter runs")
    # Room for every request the run can send: a Python process serves well under 50k/s.
    cap = count if count is not None else int(duration_s * 50_000) + concurrency
    cap = min(cap, CLOSED_LOOP_MAX)
    rec = _Recorder(cap)
    stop = stop or threading.Event()
    rng = np.random.default_rng(seed)
    pool = [sample(rng) for _ in range(64)]
    counter = itertools.count()
    perf = time.perf_counter
    t0 = perf()
    end = t0 + duration_s if duration_s is not None else math.inf
    thread_cpu: list[float] = []      # each client's CPU seconds, added as it leaves
    loop_cpu0 = helpers_cpu_s()

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
                time.sleep(0)  # let the engine's threads have the GIL (see open_loop)
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
    cpu = sum(thread_cpu) + helpers_cpu_s() - loop_cpu0
    full = rec.used >= cap and count is None and not stop.is_set()
    if full:   # never a silently shorter run
        warnings.warn(f"closed_loop sent its limit of {cap:,} requests after {span:.1f} s of "
                      f"the {duration_s:g} s asked and ended there (stopped=True); for a "
                      "long soak use engine.start_traffic(...)", RuntimeWarning, stacklevel=2)
    return LoadResult("closed", rec.frame(t0, from_intended=False), span, 0.0,
                      stopped=stop.is_set() or full,
                      client_cpu_pct=100.0 * cpu / span if span > 0 else 0.0)


def check_clients(concurrencies: Any) -> list[int]:
    """Closed-loop client counts as ints, or ConfigError naming the first that is not a
    whole number from 1 to :data:`MAX_CLIENTS` (2.5 clients were run as 2)."""
    out = []
    for c in concurrencies:   # (range first: float(10**400) overflows)
        if isinstance(c, bool) or not isinstance(c, (int, float, np.integer, np.floating)) \
                or not 1 <= c <= MAX_CLIENTS or not float(c).is_integer():
            # ("100000.0 clients"; a newcomer)
            raise ConfigError(f"{_shown_number(c)} clients: a closed loop's clients are "
                              f"whole numbers from 1 to {MAX_CLIENTS:,} (each is a thread "
                              "here)")
        out.append(int(c))
    return out
