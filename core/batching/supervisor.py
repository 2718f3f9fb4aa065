"""The supervisor of one model: timeouts in deadline order, and a collector that never dies.

Its thread sleeps until the earliest deadline among live requests (kept by the admission
queue: a lane in arrival order for the configured timeout, a heap for others) or
``watch_interval_s``, whichever comes first (with nothing live, until a request arrives), then fails every request past its deadline —
queued or running, whatever the order they arrived in — through the ledger, and restarts
a runner thread that died.

Example:
    >>> sup = Supervisor("m", queue, ledger, executor, clock, batcher._dead_runners,
    ...                  batcher.restart_collector)
    >>> sup.expire_overdue()    # fails requests past their deadline now; returns how many
    0
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Callable

from .admission import AdmissionQueue
from core.errors import InferenceError, RequestTimeoutError
from .executor import Executor, queue_timeout_message
from .settle import QUEUED, Ledger

__all__ = ["Supervisor"]

log = logging.getLogger("batchlab.supervisor")

# How often the supervisor checks the collector even when no deadline is due.
_WATCH_INTERVAL_S = 0.05
# How often, at most, it writes the queue's depth into the per-second series.
_DEPTH_EVERY_S = 0.25


class Supervisor:
    """Expires overdue requests and revives a dead collector (see the module docstring)."""

    def __init__(self, name: str, queue: AdmissionQueue, ledger: Ledger, executor: Executor,
                 clock: Callable[[], float],
                 dead_runners: Callable[[], list[int]],
                 restart: Callable[[int], None]) -> None:
        self.name = name
        self.queue = queue
        self.ledger = ledger
        self.executor = executor
        self._clock = clock
        self._dead_runners = dead_runners
        self._restart = restart
        self.watch_interval_s = _WATCH_INTERVAL_S
        self.restarts = 0
        self._depth_noted = -math.inf
        self._stop = False
        # A thread watches for one generation: parking moves it on (that thread ends), and
        # the next request starts a new one (core/batching/parking.py).
        self._gen = 0
        self.thread = self._new_thread()

    def _new_thread(self) -> threading.Thread:
        return threading.Thread(target=self._loop, args=(self._gen,), daemon=True,
                                name=f"batcher-{self.name}-watch")

    def start(self) -> None:
        self.thread.start()

    def park(self) -> None:
        """(Queue lock held.) The model parks: this generation's thread ends."""
        self._gen += 1
        self.queue.sup_cv.notify_all()

    def restart(self) -> None:
        """A new thread for the current generation (the model unparked)."""
        self.thread = self._new_thread()
        self.thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        q = self.queue
        with q.lock:
            self._stop = True
            q.sup_cv.notify_all()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout_s)

    def _loop(self, gen: int = 0) -> None:
        q = self.queue
        while True:
            try:
                with q.lock:
                    if self._stop or self._gen != gen:
                        return
                    nxt = q.earliest_deadline()
                    # Nothing live (queued or running): nothing to expire and no runner
                    # busy to watch. Sleep until a request arrives (put wakes us) or close:
                    # an idle model's supervisor costs nothing (1,000 idle models woke
                    # 20,000 times a second at the 50 ms watch).
                    idle = nxt == math.inf and not self.ledger.live and not q.dying
                    wait = None if idle else min(nxt - self._clock(), self.watch_interval_s)
                    if wait is None or wait > 0:
                        q.next_deadline = nxt
                        q.supervisor_idle = idle
                        q.sup_cv.wait(wait)
                        q.supervisor_idle = False
                        q.next_deadline = q.earliest_deadline()
                        if self._stop or self._gen != gen:
                            return
                now = self._clock()
                if now >= self._depth_noted + _DEPTH_EVERY_S:   # the series' depth, while
                    self._depth_noted = now                     # nothing leaves as well
                    self.ledger.metrics.note_depth(q.depth())
                if self.expire_overdue():
                    self.executor.stop_orphaned_run()
                self.revive()
            except Exception:  # the supervisor itself must keep watching
                log.exception("supervisor %s: unexpected error", self.name)

    def expire_overdue(self) -> int:
        """Fail every live request whose deadline has passed; returns how many."""
        q = self.queue
        now = self._clock()
        with q.lock:
            overdue = q.pop_overdue(now)
            queued = {r for r in overdue if r._where == QUEUED}
        n = 0
        stuck_s = self.executor.stuck_s() if queued else None
        for r in overdue:
            if r in queued:
                msg = queue_timeout_message(self.name, now - r._t_submit,
                                            r._deadline - r._t_submit,
                                            q.config.max_wait_ms / 1000.0, stuck_s)
            else:
                msg = (f"request to model {self.name!r} was still running after "
                       f"{(now - r._t_submit) * 1000:.1f} ms, past its timeout of "
                       f"{(r._deadline - r._t_submit) * 1000:g} ms: the model may be hung "
                       "or far too slow for this timeout")
            n += self.ledger.fail([r], RequestTimeoutError(msg))
        return n

    def revive(self) -> bool:
        """Restart every runner thread that died (not one that ended normally at close or
        left when ``instances`` was lowered); True if one was."""
        if self.queue.closed:
            return False
        dead = self._dead_runners()
        for index in dead:
            msg = (f"the collector thread of model {self.name!r} died and was restarted "
                   f"(restart {self.restarts + 1}); requests it was running were failed")
            log.error("supervisor %s: %s", self.name, msg)
            self.ledger.metrics.record_incident("CollectorRestarted", msg)
            self.restarts += 1  # after the incident: whoever sees the count sees it too
            slot = self.executor.slot(index)
            self.ledger.fail(list(slot.in_flight),
                             InferenceError(f"model {self.name!r}: {msg}"), notify_queue=False)
            slot.in_flight = []
            self._restart(index)
        return bool(dead)
