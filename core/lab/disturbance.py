"""Whether a sweep's point was measured undisturbed: what the engine can see of its
surroundings (CPU other processes took on its cores, requests that were not the point's
own, the sender's lag), and when that counts as disturbance.

Example:
    >>> look = _Disturbance(engine); ...; look.verdict(sent=1000, max_lag_ms=3.0)
    {'other_cpu_cores': 0.02, 'foreign_requests': 0, 'disturbed': ''}
"""

from __future__ import annotations

import time
from typing import Any

from core.metrics import cores_busy_s, process_cpu_s

__all__ = ["DISTURBED_CPU_CORES", "DISTURBED_FOREIGN_SHARE", "DISTURBED_LAG_MS"]


#: A point is flagged as measured under disturbance when, over its windows, other
#: processes kept this much of the engine's cores busy (on average), other requests reached
#: the engine's models beyond this share of the point's own, or the sender fell this far
#: behind its schedule.
DISTURBED_CPU_CORES = 0.25
DISTURBED_FOREIGN_SHARE = 0.01
DISTURBED_LAG_MS = 20.0


class _Disturbance:
    """What the engine can see of a point's surroundings: CPU other processes took on its
    cores, requests that were not the point's own, and the sender's lag."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.t0 = time.monotonic()
        self.busy0 = cores_busy_s()
        self.proc0 = process_cpu_s()
        self.req0 = self._requests()

    def _requests(self) -> dict[str, int] | None:
        """Each model's requests so far (a total over models hid a reset: one model's count
        going back to 0 took the other requests off the sum; an adversary)."""
        counters = getattr(self.engine, "counters", None)
        names = getattr(self.engine, "model_names", None)
        if counters is None or names is None:
            return None
        out = {}
        for name in names():
            try:
                out[name] = int(counters(name).get("total_requests", 0))
            except Exception:  # a model unloaded meanwhile  # noqa: BLE001
                pass
        return out

    def verdict(self, sent: int, max_lag_ms: float, load_cpu_s: float = 0.0,
                measured: str = "the point") -> dict[str, Any]:
        """``other_cpu_cores``, ``foreign_requests`` and ``disturbed`` (why, in words; empty
        when nothing was seen) since this was made, for a measurement that sent ``sent``
        requests (``measured``: what it is, in the words) and whose load used ``load_cpu_s``
        of this machine's CPU outside the process (load agents here)."""
        wall = max(1e-6, time.monotonic() - self.t0)
        other = float("nan")
        busy1 = cores_busy_s()
        if self.busy0 is not None and busy1 is not None:
            busy = busy1[0] - self.busy0[0]
            stolen = busy1[1] - self.busy0[1]
            mine = process_cpu_s() - self.proc0
            other = max(0.0, (busy - mine - load_cpu_s) + stolen) / wall
        req1 = self._requests()
        reset: list[str] = []
        foreign = 0
        if req1 is not None and self.req0 is not None:
            # (a model whose count went back was reset meanwhile: its requests since, at
            # least, came; said, as what came before the reset cannot be counted)
            reset = sorted(n for n, c in req1.items() if c < self.req0.get(n, 0))
            foreign = max(0, sum(c - (0 if n in reset else self.req0.get(n, 0))
                                 for n, c in req1.items()) - sent)
        why = []
        if reset:
            why.append(f"the metrics of {', '.join(reset)} were reset during {measured}: "
                       "other requests cannot all be counted")
        if other >= DISTURBED_CPU_CORES:
            why.append(f"other processes used {other:.2f} of the engine's cores")
        if sent and foreign > DISTURBED_FOREIGN_SHARE * sent:
            why.append(f"{foreign:,} other requests reached the engine "
                       f"({100 * foreign / sent:.0f} % of {measured}'s)")
        if max_lag_ms >= DISTURBED_LAG_MS:
            why.append(f"the sender fell {max_lag_ms:.0f} ms behind its schedule")
        return {"other_cpu_cores": other, "foreign_requests": foreign,
                "disturbed": "; ".join(why)}


def _node_ip() -> str | None:
    try:
        import ray
        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - no Ray here: no agent is on this machine
        return None


def agents_cpu_s(res: Any, here: str | None) -> float:
    """CPU seconds the load agents on this machine (node ``here``) used sending ``res``:
    the measurement's own load, not a disturbance."""
    return sum(a["client_cpu_pct"] for a in getattr(res, "agents", None) or ()
               if a.get("ip") == here) / 100.0 * res.duration_s
