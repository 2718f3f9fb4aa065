"""The admission queue's view of time: the deadlines of live requests (for the supervisor),
how long the runs going on have left, and admission by deadline (refusing at once what
could not be served within its timeout). A mixin of :class:`AdmissionQueue`; every method
runs with the queue's lock held.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from typing import TYPE_CHECKING

from core.errors import OverloadedError
from core.policies import MAX_SLOWDOWN

if TYPE_CHECKING:
    from .settle import Request

__all__ = ["DeadlineMixin", "ADMIT_MARGIN"]

#: Admission by deadline refuses a request whose predicted wait times this is past its
#: timeout (see :meth:`DeadlineMixin.refuse_if_late`).
ADMIT_MARGIN = 1.2
_ADMIT_MARGIN = ADMIT_MARGIN


# The deadline heap may hold settled requests (removed lazily); past this many more than
# the live ones it is rebuilt, so it never holds more than ~2x what is live.
_HEAP_SLACK = 256


class DeadlineMixin:
    """Deadlines, runs and admission by deadline (see the module docstring)."""

    def track_deadline(self, r: Request, d: float, default_timeout: bool) -> None:
        """(Lock held.) Put ``r`` (deadline ``d``) where the supervisor looks: the lane
        (the configured timeout: arrival order is deadline order) or the heap.

        Settled requests leave the lane's front two per put, as they pass, not in bulk:
        each holds a future (six objects the garbage collector counts), and dropping
        hundreds at once (a rebuild, or the supervisor's rare wake-up) let the collector's
        allocation count run ahead of what was live, so it ran ~40x as often as in the
        first wave (6.2 collections per 1,000 requests, 45-50 ms of every second at
        capacity, full ones ~60 ms; now 0.03: docs/benchmarks.md)."""
        live = self.ledger.live
        if default_timeout:
            lane = self.lane
            lane.append(r)
            if lane[0] not in live:
                lane.popleft()
                if lane[0] not in live:
                    lane.popleft()
            if len(lane) > 2 * len(live) + _HEAP_SLACK:
                self.lane = deque(x for x in lane if x in live)
        else:
            heap = self.deadlines
            heapq.heappush(heap, (d, next(self._seq), r))
            if heap[0][2] not in live:
                heapq.heappop(heap)
            if len(heap) > 2 * len(live) + _HEAP_SLACK:
                heap[:] = [e for e in heap if e[2] in live]
                heapq.heapify(heap)

    def refresh_admit_bound(self) -> None:
        """The longest wait admission could ever predict (a full queue of the largest
        requests, behind the largest run, at the worst slowdown the estimator allows): a
        request whose timeout is longer is admitted without predicting its wait. Called
        when the configuration or the fitted cost changes."""
        cost = self.cost
        ahead = (self.max_queue + 1) * self.max_request_rows
        # (at the smallest batches the policy may make: an AIMD cap can fall to one row)
        # (a batch holds at least one request, however small the cap)
        per_batch = self.policy.fewest_batch_rows(self.max_rows)
        batches = (min(-(-ahead // per_batch), self.max_queue + 1) if self.batchable
                   else self.max_queue + 1)
        running = max(self.max_rows, self.max_request_rows)
        worst = (cost.a_s * (batches + 1) + cost.b_s * (ahead + running)) \
            * MAX_SLOWDOWN * _ADMIT_MARGIN
        self.admit_bound_s = worst if cost.ready else math.inf
        # What the bound assumed: rows queued ahead (with the new request) and rows of the
        # running batch. Requests admitted under a larger configuration can exceed them;
        # then put() predicts as before.
        self.bound_rows = ahead
        self.bound_running = running
        # The same worst case as a line in the rows ahead, for put() to test in two
        # multiplications: a request whose time left is at least
        # ``admit_per_row_s * ahead + admit_base_s`` would be admitted by any prediction.
        # (ceil(ahead / per_batch) batches are at most ahead / per_batch + 1, and a model
        # that cannot batch runs at most one batch per row; plus the run ahead of them.)
        worst_slow = MAX_SLOWDOWN * _ADMIT_MARGIN
        if not cost.ready:
            self.admit_per_row_s = self.admit_base_s = math.inf
        elif self.batchable:
            self.admit_per_row_s = (cost.a_s / per_batch + cost.b_s) * worst_slow
            self.admit_base_s = (2 * cost.a_s + cost.b_s * running) * worst_slow
        else:
            self.admit_per_row_s = (cost.a_s + cost.b_s) * worst_slow
            self.admit_base_s = (cost.a_s + cost.b_s * running) * worst_slow

    def earliest_deadline(self) -> float:
        """(Lock held.) The earliest deadline of a live request (inf when none); drops
        settled requests from the fronts of the lane and the heap."""
        live = self.ledger.live
        lane, heap = self.lane, self.deadlines
        while lane and lane[0] not in live:
            lane.popleft()
        while heap and heap[0][2] not in live:
            heapq.heappop(heap)
        a = lane[0]._deadline if lane else math.inf
        b = heap[0][0] if heap else math.inf
        return a if a < b else b

    def pop_overdue(self, now: float) -> list[Request]:
        """(Lock held.) Remove and return the live requests whose deadline is before
        ``now``."""
        live = self.ledger.live
        lane, heap = self.lane, self.deadlines
        overdue: list[Request] = []
        while lane and lane[0]._deadline < now:
            r = lane.popleft()
            if r in live:
                overdue.append(r)
        while heap and heap[0][0] < now:
            r = heapq.heappop(heap)[2]
            if r in live:
                overdue.append(r)
        return overdue

    def running_left_s(self, now: float) -> float:
        """About how long until a runner is free: the least time a run going on will
        still take (0 when a runner is idle)."""
        runs = list(self.runs.values())
        if len(runs) < self.instances:
            return 0.0
        drain = self.cost.drain_s
        return max(0.0, min(drain(rows, 1) - (now - t0) for rows, t0 in runs))

    def refuse_if_late(self, r: Request, rows: int, d: float, high: bool = False) -> None:
        """(Lock held.) :class:`OverloadedError` if ``r`` (``rows`` rows, deadline ``d``)
        could not be served before its deadline, behind what is served before it: all
        that is queued, or for the high class (``high``) the high class's alone."""
        # Admission by deadline: refuse now what cannot be served in time, rather
        # than queue it to time out later (and make everyone behind it wait). A
        # request with nothing ahead of it is always admitted: its run is what
        # keeps the learned cost current (a stale estimate must not lock a model
        # into refusing everything).
        queued_rows = self.high_rows if high else self.queued_rows
        ahead = queued_rows + rows
        # Requests ahead (for the high class, its queue's length: settled ones not yet
        # trimmed count too, erring on the long side). Each runs alone if the model cannot
        # batch; else batches of the policy's size now (an AIMD cap, or max_batch_size),
        # each holding at least one request however small the cap.
        queued = len(self.hq) if high else self.depth()
        batches = (min(-(-ahead // self.policy.batch_rows(self.max_rows)), queued + 1)
                   if self.batchable else queued + 1)
        # ``instances`` runners drain the queue together.
        # At a high percentile of the recent slowdowns: a crowded machine slows
        # cycles unevenly, and the typical wait admitted what then timed out.
        wait_s = (self.cost.drain_s(ahead, batches, high=True) / self.instances
                  + self.running_left_s(r._t_submit))
        # A margin: the prediction is a typical wait, and a request admitted right at
        # its limit would time out about half the time, its batch's run wasted.
        if r._t_submit + wait_s * _ADMIT_MARGIN > d:
            raise OverloadedError(
                f"model {self.name!r} is overloaded: {queued} "
                f"requests ({queued_rows} rows){' of the high class' if high else ''} are "
                f"queued ahead, a predicted "
                f"wait of {wait_s * 1000:.0f} ms (+{(_ADMIT_MARGIN - 1) * 100:.0f} % "
                f"margin), past this request's timeout of "
                f"{_ms(d - r._t_submit)} ms; it was refused at once. Send "
                "less traffic, raise timeout_ms, or raise max_batch_size")


def _ms(seconds: float) -> str:
    """Milliseconds as said in a refusal: whole from 1 ms, three figures below (a 1e-300 ms
    timeout read "timeout of 0 ms")."""
    ms = seconds * 1000
    return f"{ms:.0f}" if ms >= 1 else f"{ms:.3g}"
