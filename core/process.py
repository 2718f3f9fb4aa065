"""Process-wide interpreter settings that keep batching latency low next to other work.

An engine shares its process (and the GIL) with whatever else runs there: a Streamlit
server building charts, a notebook, a load generator. Two CPython defaults then show up
in the tail latency:

* the GIL switch interval (5 ms): a thread woken at a batch deadline can wait that long
  for a CPU-bound thread to let go, several times per batch;
* full garbage collections, which walk every long-lived object (a web server's heap) while
  holding the GIL: 50-100 ms pauses were seen in the dashboard's process.

:func:`tune_for_serving` lowers the switch interval and moves everything alive at start-up
into the collector's permanent generation (``gc.freeze``), so full collections only walk
what was allocated since. It changes the whole process, so it is opt-in: the dashboard
calls it; notebooks and scripts may.

Example:
    >>> from core.process import tune_for_serving
    >>> tune_for_serving()
    {'switch_interval_s': 0.001, 'frozen_objects': 183211}
"""

from __future__ import annotations

import gc
import sys

__all__ = ["tune_for_serving"]


def tune_for_serving(switch_interval_s: float = 0.001) -> dict[str, float | int]:
    """Lower the GIL switch interval and freeze start-up objects out of the GC's way."""
    if not 0 < switch_interval_s <= 0.1:
        raise ValueError(f"switch_interval_s must be > 0 and <= 0.1, got {switch_interval_s!r}")
    sys.setswitchinterval(switch_interval_s)
    gc.collect()
    gc.freeze()
    return {"switch_interval_s": sys.getswitchinterval(), "frozen_objects": gc.get_freeze_count()}
