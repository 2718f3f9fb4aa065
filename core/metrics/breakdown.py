"""Where requests' time went: waiting in the queue, running, and the hand-off after the run,
as percentiles of each part, from the trace (:class:`~core.metrics.Trace`) without building
the timeline. A page that charts this every second asked for the whole timeline instead:
20,000 rows a refresh at 2,000 req/s, ~210 ms of the engine's interpreter and a 3.4 MB
answer, which moved the latencies it charted (an adversary).

Example:
    >>> engine.breakdown("mlp", last_s=10.0)
      arm  percentile  wait_ms  compute_ms  handoff_ms  requests
    0             50    1.92       0.81        0.05       20000
    ...
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

__all__ = ["BREAKDOWN_COLUMNS", "PARTS", "PERCENTILES", "breakdown_table", "from_timeline"]

#: The parts of a request's time, as the timeline names them.
PARTS = ("wait_ms", "compute_ms", "handoff_ms")
PERCENTILES = (50, 90, 99)
BREAKDOWN_COLUMNS = ["arm", "percentile", *PARTS, "requests"]


def breakdown_table(parts: dict[str, np.ndarray], arms: Sequence[Any] | None = None
                    ) -> pd.DataFrame:
    """Percentiles of each part (``parts``: :data:`PARTS` -> one value per request that
    ran), a row per percentile; with ``arms`` (each request's arm) a group per arm, in
    order ("" when not by arm; requests of no arm are in no group unless no request has
    one). No requests: one group of zeros, ``requests`` 0."""
    n = len(parts[PARTS[0]])
    groups = []
    if arms is not None and n:   # (requests of no arm, sent to a model directly: left out,
        labels = np.array(["" if a is None else str(a) for a in arms], dtype=object)
        groups = [(a, labels == a) for a in sorted(set(labels.tolist())) if a]  # as before)
    groups = groups or [("", np.ones(n, bool))]
    rows = []
    for arm, mask in groups:
        k = int(mask.sum())
        values = {p: (np.percentile(parts[p][mask], PERCENTILES) if k
                      else np.zeros(len(PERCENTILES))) for p in PARTS}
        for i, q in enumerate(PERCENTILES):
            rows.append([arm, q, *(float(values[p][i]) for p in PARTS), k])
    return pd.DataFrame(rows, columns=BREAKDOWN_COLUMNS)


def from_timeline(frame: pd.DataFrame, by_arm: bool = False) -> pd.DataFrame:
    """The same table from a timeline (``engine.timeline``): its requests that ran."""
    ran = frame[frame["batch_id"] >= 0] if not frame.empty else frame
    return breakdown_table({p: ran[p].to_numpy(np.float64) for p in PARTS},
                           ran["arm"].tolist() if by_arm else None)
