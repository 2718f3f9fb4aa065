"""The trace's views of a model or an A/B experiment (the engine's methods): each request
(``timeline``) and where their time went (``breakdown``), from the models' traces
(:mod:`core.metrics.trace`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.config import check_positive_s
from core.errors import ConfigError
from core.metrics.breakdown import breakdown_table
from core.metrics.trace import last_settled

__all__ = ["TraceMethods"]


class TraceMethods:
    """Mixed into :class:`~core.engine.core.EngineCore` (its ``_ns`` and ``config``)."""

    _ns: Any
    config: Any

    def _traced(self, name: str, last_s: float | None) -> tuple[Any, Any, float | None]:
        last_s = check_positive_s("last_s", last_s, "all kept")
        entry, exp = self._ns.resolve(name)
        if self.config.trace_requests == 0:
            raise ConfigError("tracing is off (EngineConfig.trace_requests=0): no timeline")
        return entry, exp, last_s

    def timeline(self, name: str, last_s: float | None = 2.0,
                 limit: int | None = None) -> pd.DataFrame:
        """What happened to each request settled in the last ``last_s`` seconds: columns
        :data:`~core.metrics.TIMELINE_COLUMNS` (``time.perf_counter`` seconds; a request
        that never ran has no start and batch -1, and its ``release_reason`` names why it
        ended). An A/B experiment's: its requests on both arms since its segment began
        (``experiment`` names it, ``shadow_copy`` marks B's copies in shadow mode).
        ``limit``: the last ``limit`` of them to be settled only (a live chart's)."""
        entry, exp, last_s = self._traced(name, last_s)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise ConfigError(f"limit must be a whole number of requests >= 1 (or None for "
                              f"all in the window), got {limit!r}")
        if entry is not None:
            f = entry.trace.frame(last_s, limit=limit)
        else:
            # (its own since its reset; the limit after its rows are picked out: taken from
            # each model's newest, other traffic to the arms left none of its; a reviewer)
            parts = [self._ns.entry(m).trace.frame(last_s, since=exp.reset_perf)
                     for m in dict.fromkeys((exp.a, exp.b))]
            f = pd.concat(parts, ignore_index=True)
            f = f[f["experiment"] == name]
            f = f.sort_values("arrived_s", kind="stable").reset_index(drop=True)
        return f if limit is None else last_settled(f, limit)

    def breakdown(self, name: str, last_s: float | None = 10.0,
                  by_arm: bool | None = None) -> pd.DataFrame:
        """Where the time of the requests that ran in the last ``last_s`` seconds went:
        p50, p90 and p99 of their wait in the queue, their run and the hand-off after it
        (ms), a row per percentile (columns
        :data:`~core.metrics.breakdown.BREAKDOWN_COLUMNS`); by arm for an experiment (its
        requests since its segment began). What ``timeline`` would give, at a fraction of
        its cost: a page that charts it every second does not load the engine it watches."""
        entry, exp, last_s = self._traced(name, last_s)
        if entry is not None:
            parts, arms = entry.trace.parts(last_s, arms=bool(by_arm))
            return breakdown_table(parts, arms if by_arm else None)
        got = [self._ns.entry(m).trace.parts(last_s, experiment=name, since=exp.reset_perf)
               for m in dict.fromkeys((exp.a, exp.b))]
        parts = {k: np.concatenate([p[k] for p, _ in got]) for k in got[0][0]}
        arms = [arm for _, labels in got for arm in labels]
        return breakdown_table(parts, arms if by_arm is not False else None)
