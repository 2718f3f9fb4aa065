"""The admission queue of one model: admit requests, and hand out batches when due.

``put`` is the hot path: one lock, an append, another onto the deadline lane (for the
supervisor; a request with a timeout of its own goes on a heap instead), and a wake-up of
the collector only when it sleeps and the batch it waits for is now full. ``next_batch``
(a runner's side) asks the model's release policy (:mod:`core.policies`) when the forming
batch should leave, and pops whole requests, in order, up to ``max_batch_size`` rows.

Requests settled while still queued (timed out, cancelled) are marked dead and skipped:
no longer counted as queued rows, bytes or towards ``max_queue``.

Example:
    >>> q = AdmissionQueue("m", ledger, BatchConfig(max_batch_size=4, max_wait_ms=0))
    >>> q.put(request); q.next_batch()   # blocks until a batch is due: ([<Request>], 'full')
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections import deque
from typing import Callable

from core.policies import CostEstimator, RateEstimator
from core.config import BatchConfig
from core.errors import EngineClosedError, OverloadedError
from core.models import request_bytes_limit
from core.policies import ReleasePolicy, make_policy
from .deadlines import DeadlineMixin
from .parking import PARK, ParkingMixin
from .messages import bytes_full_message, full_message
from .settle import DEAD, DROPPED, QUEUED, TAKEN, Ledger, Request

__all__ = ["AdmissionQueue", "RETIRE", "CLASS_MEMORY_S"]

#: What ``next_batch`` gives a runner above ``BatchConfig.instances`` (it should end).
RETIRE = "retire"

# The collector's timed wait ends this long before a deadline; the rest is a yield loop
# (a timed wait overshoots by 0.1-0.2 ms on this kind of machine).
_EARLY_WAKE_S = 0.0003

#: Seconds without a high-priority request after which the normal class is given back the
#: fifth of the queue kept for the high class.
CLASS_MEMORY_S = 30.0

class AdmissionQueue(DeadlineMixin, ParkingMixin):
    """Bounded FIFO of one model's requests plus its release policy. Thread-safe.

    The lock guards the queue, its counters and the deadline heap (read by the
    supervisor through ``sup_cv``, a second condition on the same lock).
    """

    def __init__(self, name: str, ledger: Ledger, config: BatchConfig, batchable: bool = True,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.name = name
        self.ledger = ledger
        self.batchable = batchable
        self._clock = clock
        self.lock = threading.Lock()
        self.cv = threading.Condition(self.lock)        # wakes the collector
        self.sup_cv = threading.Condition(self.lock)    # wakes the supervisor
        self.q: deque[Request] = deque()
        #: The high class (``priority=1``), served before ``q``; its rows, and whether the
        #: model has seen one (then the normal class leaves it the last fifth of max_queue).
        self.hq: deque[Request] = deque()
        self.high_rows = 0
        self.classes = False
        self.high_seen = -math.inf      # when the last high request arrived
        self.queued_rows = 0
        #: Bytes of the inputs queued (not yet taken), bounded by an eighth of the budget
        #: (a request alone is admitted: the body limits bounded it already).
        self.queued_bytes = 0
        self.max_queued_bytes = request_bytes_limit()
        self.arrived_rows = 0
        self.dead = 0
        self.closed = False
        self.dying: set[int] = set()
        self.sleeping, self.want_rows = 0, 1   # runners waiting on cv, rows they want
        self.window_start = clock()
        # Deadlines, for the supervisor. Requests on the configured timeout go to ``lane``
        # in arrival order, which is deadline order (one append, no heap); others (a timeout
        # of their own) to the heap ``deadlines``.
        self.lane: deque[Request] = deque()
        self.deadlines: list[tuple[float, int, Request]] = []
        self.next_deadline = math.inf   # when the supervisor plans to look next
        self.supervisor_idle = False    # asleep with nothing live: a put wakes it
        # The runs going on, by runner: (rows, start); and the most rows among them.
        self.runs: dict[int, tuple[int, float]] = {}
        self.running_rows = 0
        self._seq = itertools.count()
        self.cost = CostEstimator()      # learned t(n) = a + b*n
        self.rate = RateEstimator()      # learned arrival rate (rows/s)
        self.policy: ReleasePolicy = make_policy(config.policy)
        # The policy this queue switched away from last, with what it learned and the SLO it
        # learned under: switched straight back (a sweep pins deadline, then restores AIMD),
        # it is taken up again, cap and all; any other switch starts the new policy afresh
        # (a sweep pinning AIMD twice measures from one row both times).
        self.earlier: tuple[ReleasePolicy, float | None] | None = None
        self.apply(config)

    # -- configuration (caller holds the lock, or is the constructor) ----------------
    def apply(self, config: BatchConfig) -> None:
        old = getattr(self, "config", None)
        if old is None or config.policy != old.policy:
            fresh = make_policy(config.policy)   # (a class registered again: its own object)
            kept = self.earlier
            back = kept is not None and type(kept[0]) is type(fresh) \
                and kept[1] == config.latency_slo_ms
            self.earlier = None if back or old is None else (self.policy, old.latency_slo_ms)
            self.policy = kept[0] if back else fresh
        self.config = config
        self.max_rows = config.max_batch_size if self.batchable else 1
        # Models that cannot batch run a request's rows one at a time: the same limit keeps
        # one huge request from holding the model (and everyone queued behind it).
        self.max_request_rows = config.max_batch_size
        self.max_queue = config.max_queue
        # (a queue under 5 keeps no reserve: it would lock the normal class out)
        self.high_reserve = config.max_queue // 5
        self.max_wait_s = config.max_wait_ms / 1000.0
        self.instances = config.instances
        self.timeout_s = config.timeout_ms / 1000.0 if config.timeout_ms is not None else math.inf
        self.refresh_admit_bound()

    def configure(self, config: BatchConfig) -> None:
        with self.lock:
            old_timeout = self.timeout_s
            self.apply(config)
            if self.timeout_s != old_timeout and self.lane:
                # The lane is in deadline order only for one timeout: what it holds moves
                # to the heap, and new requests start a fresh lane.
                live = self.ledger.live
                heap = self.deadlines
                heap.extend((r._deadline, next(self._seq), r) for r in self.lane if r in live)
                heapq.heapify(heap)
                self.lane.clear()
            if self.sleeping:
                self.cv.notify_all()  # runners above a lowered ``instances`` leave

    # -- runs going on (the executor's; one entry per runner) ---------------------------
    def run_started(self, slot: int, rows: int, t0: float) -> None:
        self.runs[slot] = (rows, t0)
        if rows > self.running_rows:
            self.running_rows = rows

    def run_ended(self, slot: int) -> None:
        runs = self.runs
        runs.pop(slot, None)
        self.running_rows = max([r for r, _ in list(runs.values())], default=0)

    # -- the policy's view ------------------------------------------------------------
    @property
    def oldest_t(self) -> float:
        q, hq = self.q, self.hq
        if not hq:
            return q[0]._t_submit
        return hq[0]._t_submit if not q or hq[0]._t_submit < q[0]._t_submit \
            else q[0]._t_submit

    @property
    def newest_t(self) -> float:
        q, hq = self.q, self.hq
        if hq and (not q or hq[-1]._t_submit > q[-1]._t_submit):
            return hq[-1]._t_submit
        return q[-1]._t_submit

    def depth(self) -> int:
        """Requests waiting (live ones, not yet in a running batch)."""
        return len(self.q) + len(self.hq) - self.dead

    # -- producer side ----------------------------------------------------------------
    def put(self, r: Request, default_timeout: bool = False, high: bool = False) -> None:
        """Admit ``r`` or raise (nothing admitted): closed, or full.

        ``default_timeout``: ``r`` takes the configured timeout; its deadline is set here,
        under the lock, so the lane stays in deadline order. ``high``: ``r`` is of the high
        class: served before the normal class, refused only by a full ``max_queue`` or byte
        bound (the normal class is refused at four fifths of each while the high class is
        in use: queued, or seen within :data:`CLASS_MEMORY_S`), and admitted by the wait
        of the high class ahead of it alone.
        """
        rows = r._rows
        nbytes = r._nbytes = (arrays[0].nbytes if len(arrays := r._arrays) == 1
                              else sum([a.nbytes for a in arrays]))
        with self.lock:
            if default_timeout:
                r._deadline = r._t_submit + self.timeout_s
            if high:   # the class is in use (even if this one is refused: it brings back
                self.high_seen = r._t_submit   # the reserve that a full queue denied it)
                if not self.classes:
                    if self.ledger.trace is not None:
                        self.ledger.trace.classes = True   # the timeline shows each class
                    self.classes = True
            if self.closed:
                raise EngineClosedError(f"model {self.name!r} is closed and accepts no more "
                                        "requests; create a new Engine or reload the model")
            depth = len(self.q) + len(self.hq) - self.dead
            if depth >= self.max_queue or (self.classes and not high and depth
                                           >= self.max_queue - self.high_reserve
                                           and self._reserve_holds(r._t_submit)):
                raise OverloadedError(full_message(self.name, depth, self.max_queue,
                                                   depth < self.max_queue))
            queued_bytes = self.queued_bytes
            if queued_bytes:
                limit = self.max_queued_bytes
                if self.classes and not high and self.high_reserve \
                        and queued_bytes + nbytes > limit - limit // 5 \
                        and self._reserve_holds(r._t_submit):
                    limit -= limit // 5
                if queued_bytes + nbytes > limit:
                    raise OverloadedError(bytes_full_message(
                        self.name, queued_bytes, nbytes, limit,
                        limit < self.max_queued_bytes))
            d = r._deadline
            # (the wait is predicted only when the worst it could be is past the deadline)
            if ((d - r._t_submit < self.admit_per_row_s * (self.queued_rows + rows)
                 + self.admit_base_s or self.running_rows > self.bound_running)
                    and (self.queued_rows or self.runs)
                    and self.cost.confident):
                self.refuse_if_late(r, rows, d, high)
            self.ledger.live[r] = True
            if high:
                r._high = True
                self.hq.append(r)
                self.high_rows += rows
            else:
                self.q.append(r)
            self.queued_rows += rows
            self.queued_bytes += nbytes
            self.arrived_rows += rows
            if d != math.inf:
                self.track_deadline(r, d, default_timeout)
                if d < self.next_deadline:
                    self.next_deadline = d
                    self.supervisor_idle = False
                    self.sup_cv.notify()
            elif self.supervisor_idle:  # no deadline, but a runner to watch from now on
                self.supervisor_idle = False
                self.sup_cv.notify()
            if self.sleeping and self.queued_rows >= self.want_rows:
                self.cv.notify()
            wake = self.parked and self.unpark()
        if wake:   # the model had parked: its threads come back for this request
            self.on_unpark()

    def _reserve_holds(self, now: float) -> bool:
        """(Lock held.) Whether the high class's reserve still holds: a high request is
        queued, or one arrived within :data:`CLASS_MEMORY_S`. Once the high class has been
        away that long, the normal class has the whole queue back."""
        if self.high_rows or now - self.high_seen < CLASS_MEMORY_S:
            return True
        self.classes = False
        return False

    def forget(self, r: Request) -> None:
        """``r`` was settled by someone other than the executor (timeout, cancel, close)."""
        with self.lock:
            if r._where == QUEUED:
                r._where = DEAD
                self.queued_rows -= r._rows
                self.queued_bytes -= r._nbytes
                self.dead += 1
                if r._high:
                    self.high_rows -= r._rows

    def put_back(self, requests: list[Request]) -> None:
        """Return taken requests (oldest first) to the front of the queue, in order: the
        executor ran a smaller batch than released (a latency SLO). Not new arrivals."""
        with self.cv:
            live = self.ledger.live
            for r in reversed(requests):
                if r not in live:
                    continue
                r._where = QUEUED
                if r._high:
                    self.hq.appendleft(r)
                    self.high_rows += r._rows
                else:
                    self.q.appendleft(r)
                self.queued_rows += r._rows
                self.queued_bytes += r._nbytes
            self.cv.notify_all()

    # -- collector side ---------------------------------------------------------------
    def _trim(self) -> None:
        q = self.q
        while q and q[0]._where == DEAD:
            q.popleft()
            self.dead -= 1
        q = self.hq
        while q and q[0]._where == DEAD:
            q.popleft()
            self.dead -= 1

    def next_batch(self, slot: int = 0) -> tuple[list[Request], str]:
        """Block until a batch should be released; pop and return it with its reason.

        Returns ``([], "drain")`` once the queue is closed and empty, ``([], "retire")`` to
        runner ``slot`` once ``instances`` is lowered below it, ``([], "park")`` when idle.
        """
        clock = self._clock
        q = self.q
        with self.cv:
            while True:
                reason = self._wait_for_release(q, clock, slot)
                if reason is None:
                    return [], "drain"
                if reason in (RETIRE, PARK):
                    return [], reason
                batch = self._pop_batch(q)
                if batch:  # else everything due was settled meanwhile: wait again
                    return batch, reason

    def _sleep(self, want_rows: int, timeout: float | None) -> None:
        """(Lock held.) Wait on ``cv`` as one of the sleeping runners."""
        self.want_rows = want_rows
        self.sleeping += 1
        try:
            self.cv.wait(timeout)
        finally:
            self.sleeping -= 1

    def _wait_for_release(self, q: deque[Request], clock: Callable[[], float],
                          slot: int = 0) -> str | None:
        """(Lock held.) Wait until the policy releases; None when closed and empty, RETIRE
        when runner ``slot`` is no longer wanted, PARK when idle (:mod:`.parking`)."""
        while True:
            self._trim()
            if slot >= self.instances and not self.closed:
                return RETIRE
            if not q and not self.hq:
                if self.closed:
                    return None
                if self._idle_sleep(slot):
                    return PARK    # idle long enough: the model's threads leave
                continue
            if self.closed:
                return "drain"
            policy = self.policy
            reason, remaining = policy.decide(self, self.max_rows, self.max_wait_s, clock())
            if reason is not None:
                return reason
            if remaining > _EARLY_WAKE_S:  # a put wakes us once the batch is full
                self._sleep(policy.batch_rows(self.max_rows), remaining - _EARLY_WAKE_S)
            else:
                # For the last stretch yield the lock and the GIL in a short loop instead
                # of a timed wait, so deadlines are kept closely.
                self.lock.release()
                try:
                    time.sleep(0)
                finally:
                    self.lock.acquire()

    def _pop_batch(self, q: deque[Request]) -> list[Request]:
        """(Lock held.) Pop whole live requests, the high class first, each class in order,
        up to ``max_rows`` rows (or fewer, if the policy caps the batch)."""
        max_rows = self.policy.batch_rows(self.max_rows)
        batch: list[Request] = []
        rows = nbytes = 0
        hq = self.hq
        if hq:
            rows, nbytes, dropped = self._take(hq, batch, 0, 0, max_rows)
            self.high_rows -= rows + dropped
            if hq or rows >= max_rows:  # the next one did not fit, or the batch is full
                q = None
        if q:
            rows, nbytes, _ = self._take(q, batch, rows, nbytes, max_rows)
        self.queued_rows -= rows
        self.queued_bytes -= nbytes
        return batch

    def _take(self, q: deque[Request], batch: list[Request], rows: int, nbytes: int,
              max_rows: int) -> tuple[int, int, int]:
        """(Lock held.) Move whole live requests from the front of ``q`` into ``batch`` up
        to ``max_rows`` rows in all; the rows and bytes in ``batch`` then, and the rows of
        settled requests dropped on the way (not counted as queued any more)."""
        live = self.ledger.live
        dropped = 0
        while q:
            r = q[0]
            if r._where == DEAD:
                q.popleft()
                self.dead -= 1
                continue
            if r not in live:  # settled meanwhile; its forget() will find it DROPPED
                q.popleft()
                r._where = DROPPED
                self.queued_rows -= r._rows
                self.queued_bytes -= r._nbytes
                dropped += r._rows
                continue
            if batch and rows + r._rows > max_rows:
                break
            q.popleft()
            r._where = TAKEN
            batch.append(r)
            rows += r._rows
            nbytes += r._nbytes
            if rows >= max_rows:
                break
        return rows, nbytes, dropped

    def flushed(self) -> None:
        """A batch left (for the fixed window's clock)."""
        self.window_start = self._clock()

    def close(self) -> None:
        """Refuse new requests; the collector drains what is queued, then stops."""
        with self.lock:
            self.closed = True
            self.cv.notify_all()
            self.sup_cv.notify_all()
