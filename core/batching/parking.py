"""Idle models cost no threads: a model whose queue stays empty for ``PARK_AFTER_S`` parks.

Its runner leaves ``next_batch`` with :data:`PARK` (and ends), its completer is sent the end
of its queue and its supervisor's generation moves on (both end); the next ``put`` finds
the queue parked and the batcher starts all three again before that request can wait on
them (``on_unpark``, called by ``put`` after it released the lock). The decision to park
and the test of it in ``put`` are made under the queue's lock, so a request either finds
the runner still there (and wakes it) or finds the queue parked (and restarts it): none is
left without a runner.

Only a model with one runner (``instances == 1``, the default) parks; a model that still
has requests live (running or being settled) looks again after another idle spell.
"""

from __future__ import annotations

import time
import weakref
from typing import Any, Callable

__all__ = ["ParkingMixin", "PARK", "PARK_AFTER_S", "weakly"]

#: What ``next_batch`` gives a runner whose model parks (it should end).
PARK = "park"

#: Seconds a model's queue stays empty before its threads leave (None: they never do).
PARK_AFTER_S: float | None = 30.0


class ParkingMixin:
    """(A part of :class:`~core.batching.admission.AdmissionQueue`.) Parking and unparking
    of the model's threads (see the module docstring)."""

    #: whether the model's threads have left (the next put brings them back)
    parked = False
    #: set by the batcher: called under the lock when the model parks, and without it by
    #: the put that finds the model parked
    on_park: Callable[[], None] | None = None
    on_unpark: Callable[[], None] | None = None
    park_after_s: float | None = PARK_AFTER_S
    #: how many times the model parked (for tests and the idle-models benchmark)
    parks = 0
    #: runners leaving by an error, not yet restarted (the supervisor does not sleep idle
    #: while there is one)
    dying: set[int]

    def call_back(self, on_park: Callable[[], None], on_unpark: Callable[[], None]) -> None:
        """Set the batcher's callbacks (its bound methods), held weakly: a queue keeping its
        batcher alive would make a reference cycle, and a retired or unloaded model's
        session (with the model's bytes) would stay resident until a full collection,
        which a serving process with raised thresholds seldom runs (+190 MiB a load and
        unload of a 190 MiB model, in `python -m core.server`)."""
        self.on_park, self.on_unpark = weakly(on_park), weakly(on_unpark)

    def _idle_sleep(self: Any, slot: int) -> bool:
        """(Lock held; the queue empty and open.) Sleep as runner ``slot`` until a put;
        True when the model parks instead (the runner should end)."""
        after = self.park_after_s
        if after is None or self.on_unpark is None or self.instances != 1 or slot != 0:
            self._sleep(1, None)
            return False
        t0 = time.monotonic()
        while (left := after - (time.monotonic() - t0)) > 0:
            self._sleep(1, left)
            if self.q or self.hq or self.closed or slot >= self.instances:
                return False
        if self.ledger.live or self.runs:    # a batch still being settled: not yet
            return False
        self.parked = True
        self.parks += 1
        if self.on_park is not None:
            self.on_park()
        return True

    def unpark(self: Any) -> bool:
        """(Lock held.) True when the model was parked: the caller restarts its threads
        (``on_unpark``) once it has released the lock."""
        if not self.parked:
            return False
        self.parked = False
        return True


def weakly(method: Callable[..., Any], default: Any = None) -> Callable[..., Any]:
    """``method`` (bound) called through a weak reference: its object is not kept alive
    by whoever holds the callback (no reference cycle), and once it is gone the call
    returns ``default``."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> Any:
        m = ref()
        return default if m is None else m(*args)
    return call
