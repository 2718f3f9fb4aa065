"""An A/B experiment's comparison segments across an engine server's restart.

What is kept: the ended segments' reports (the few kept, :data:`routing._KEEP_SEGMENTS`),
the segment under way (its number, why and when it began, whether a request came in it)
and, at a graceful stop, that segment's report as of the stop. A crash loses the figures
of the segment under way: the restored experiment's next segment is numbered past it and
says so. Reports only, a few KB each, never the samples; non-finite numbers as null.

Example:
    >>> saved = kept_state(exp, current=True)          # JSON-able
    >>> restore_segments(fresh_exp, {**saved, "stopped": True})
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from .routing import AB_MODES, ABExperiment, _keep_segments

__all__ = ["kept_state", "restore_segments", "RESTART_REASON"]

#: How a segment ended by a graceful stop of the engine server says it ended.
RESTART_REASON = "the engine server restarted"
#: The fields of a kept segment (as ``ABReport.previous_segments`` gives them).
_FIELDS = ("segment", "reason", "started", "ended", "report")
#: Said once after the reason of a segment that went on through a restart.
_SINCE = " (the engine server restarted since)"
#: ... after a crash, when the segment had no request at the last save.
_CRASHED = (" (the engine server restarted since without a graceful stop: requests in the "
            "2 s before it, if any came, were not kept)")
#: How far past now a kept time may lie (a hand edit's 1e300 broke the page's clock).
_SLACK_S = 86_400.0


def _plain(value: Any) -> Any:
    """``value`` as strict JSON: numpy numbers as Python's, NaN and infinities as None
    (``NaN`` is not JSON: jq and other tools refuse the file), anything else as words."""
    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return None if isinstance(v, float) and not math.isfinite(v) else v
    return walk(json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item")
                                      else str(o))))


def kept_state(exp: ABExperiment, current: bool = False) -> dict[str, Any]:
    """What a restart keeps of ``exp``, JSON-able, read in one step: ``segment``,
    ``segment_reason``, ``segment_started``, ``segment_busy`` (a request came in it) of
    the segment under way, and ``segments``: the ended ones kept, brought up to date; with
    ``current`` (a graceful stop) the one under way too, ended now, when it had a request."""
    for _ in range(2):   # (a segment that ended meanwhile has no report yet: once more)
        exp._settle_previous()
        with exp._lock:
            entries = list(exp.previous_segments)
            state = {"segment": exp.segment, "segment_reason": exp.segment_reason,
                     "segment_started": exp.segment_started,
                     "segment_busy": any(m.totals()["total_requests"]
                                         for m in exp.metrics.values())}
        if all("report" in e for e in entries):
            break
    out = [{**{k: e.get(k) for k in _FIELDS}, "compared": bool(e.get("_compared"))}
           for e in entries if "report" in e]
    if current and state["segment_busy"]:
        report = exp.report().to_dict()
        report.pop("previous_segments", None)
        if report["segment"] == state["segment"]:
            out.append({"segment": state["segment"], "reason": state["segment_reason"],
                        "started": state["segment_started"], "ended": time.time(),
                        "report": report, "compared": report["mode"] in ("shadow", "bandit")
                        or 0.0 < float(report["b_share"]) < 1.0})
    return _plain({**state, "segments": out})


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _time(v: Any) -> bool:
    return _number(v) and 0 <= v <= time.time() + _SLACK_S


def _report_ok(r: Any) -> bool:
    """A kept report the page and the report's words can read (an adversary's hand edits:
    a split in words, a verdict that is a number, broke the experiment's report)."""
    arms = r.get("arms") if isinstance(r, dict) else None
    return (isinstance(arms, dict) and isinstance(r.get("total_requests"), int)
            and r["total_requests"] >= 0 and r.get("mode") in AB_MODES
            and (r.get("b_share") is None or _number(r["b_share"]))
            and all(r.get(k) is None or isinstance(r[k], str) for k in ("verdict", "a", "b"))
            and all(isinstance(v, dict) and all(x is None or _number(x) or k == "model"
                                                for k, x in v.items()) for v in arms.values()))


def _entry(s: Any) -> dict[str, Any] | None:
    """A kept segment from the file, or None for one that is not (a hand edit)."""
    if not (isinstance(s, dict) and isinstance(s.get("segment"), int) and s["segment"] >= 1
            and _report_ok(s.get("report")) and _time(s.get("started"))
            and _time(s.get("ended"))
            and (s.get("reason") is None or isinstance(s.get("reason"), str))):
        return None
    return {**{k: s.get(k) for k in _FIELDS}, "_final": True,
            "_compared": bool(s.get("compared"))}


def restore_segments(exp: ABExperiment, saved: dict[str, Any]) -> None:
    """Put back what :func:`kept_state` kept (``saved``; ``stopped`` when it was saved at
    a graceful stop) into a freshly made ``exp``. The segment under way then: kept whole
    (a graceful stop), or had no request (it goes on, its number, reason and start kept),
    or its figures were lost (a crash: the next is numbered past it and says so).
    Malformed entries are passed over (a hand-edited file must not keep the experiment,
    or its page, away)."""
    segments = saved.get("segments")
    entries = sorted((e for e in map(_entry, segments if isinstance(segments, list) else [])
                      if e is not None), key=lambda e: e["segment"])
    under_way = saved.get("segment")
    under_way = under_way if isinstance(under_way, int) and under_way >= 1 else None
    numbers = [e["segment"] for e in entries] + ([under_way] if under_way else [])
    if not numbers:
        return
    cut = any(e["segment"] == under_way for e in entries)
    # No request in it at the last save: it goes on. Saved at a graceful stop, nothing was
    # lost; after a crash, requests since that save (2 s at most) may have been, and that
    # is said. (A missing flag reads as one had: a loss said rather than one unsaid.)
    stopped = bool(saved.get("stopped"))
    empty = (under_way is not None and not cut and under_way > max(numbers[:-1], default=0)
             and (stopped or saved.get("segment_busy") is False))
    reason, started = saved.get("segment_reason"), saved.get("segment_started")
    with exp._lock:
        exp.previous_segments.extend(entries)
        _keep_segments(exp.previous_segments)
        if empty:
            exp.segment = under_way
            base = (reason.split(_SINCE)[0].split(_CRASHED)[0] if isinstance(reason, str)
                    else RESTART_REASON if under_way > 1 else None)
            exp.segment_reason = (base if base is None else base + (_SINCE if stopped
                                                                     else _CRASHED))
            exp.segment_started = started if _time(started) else time.time()
            return
        exp.segment = max(numbers) + 1
        exp.segment_reason = (RESTART_REASON if cut or under_way is None
                              else f"{RESTART_REASON}; segment {under_way}, under way then, "
                              "was not kept: the server did not stop gracefully")
        exp.segment_started = time.time()
