"""An A/B experiment's comparison segments across an engine server's restart.

What is kept: the ended segments' reports (the few kept, :data:`routing._KEEP_SEGMENTS`),
the number of the segment under way, and, at a graceful stop, that segment's report as of
the stop (ended "by the restart"). A crash loses the segment under way: the restored
experiment's next segment is numbered past it and says so. Reports only, a few KB each,
never the samples.

Example:
    >>> saved = kept_segments(exp, current=True)      # JSON-able
    >>> restore_segments(fresh_exp, {"segment": exp.segment, "segments": saved})
"""

from __future__ import annotations

import json
import time
from typing import Any

from .routing import ABExperiment, _keep_segments

__all__ = ["kept_segments", "restore_segments", "RESTART_REASON"]

#: How a segment ended by a graceful stop of the engine server says it ended.
RESTART_REASON = "the engine server restarted"
#: The fields of a kept segment (as ``ABReport.previous_segments`` gives them).
_FIELDS = ("segment", "reason", "started", "ended", "report")


def _plain(value: Any) -> Any:
    """``value`` as JSON (numpy numbers as Python's; anything else as its words)."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item")
                                 else str(o)))


def kept_segments(exp: ABExperiment, current: bool = False) -> list[dict[str, Any]]:
    """The ended segments ``exp`` keeps, brought up to date, JSON-able; with ``current``
    (a graceful stop) the segment under way too, ended now, when a request came in it."""
    exp._settle_previous()
    with exp._lock:
        entries = list(exp.previous_segments)
    out = [{**{k: e.get(k) for k in _FIELDS}, "compared": bool(e.get("_compared"))}
           for e in entries if "report" in e]
    if current:
        report = exp.report().to_dict()
        report.pop("previous_segments", None)
        if report["total_requests"] or any(a.get("requests") for a in report["arms"].values()):
            out.append({"segment": report["segment"], "reason": report["segment_reason"],
                        "started": report["segment_started"], "ended": time.time(),
                        "report": report, "compared": report["mode"] in ("shadow", "bandit")
                        or 0.0 < float(report["b_share"]) < 1.0, "cut": True})
    return _plain(out)


def restore_segments(exp: ABExperiment, saved: dict[str, Any]) -> None:
    """Put back what :func:`kept_segments` kept (``saved``: ``segment``, the number under
    way then, ``segments``, and ``stopped`` when saved at a graceful stop) into a freshly
    made ``exp``: its segments, and a new one
    under way numbered past every one before, saying the restart began it. Malformed
    entries are passed over (a hand-edited file must not keep the experiment away)."""
    entries = []
    for s in saved.get("segments") or []:
        if (isinstance(s, dict) and isinstance(s.get("segment"), int)
                and isinstance(s.get("report"), dict)
                and isinstance(s["report"].get("total_requests"), int)):
            entries.append({**{k: s.get(k) for k in _FIELDS}, "_final": True,
                            "_compared": bool(s.get("compared"))})
    under_way = saved.get("segment")
    numbers = [e["segment"] for e in entries] + (
        [under_way] if isinstance(under_way, int) and under_way >= 1 else [])
    if not numbers:
        return
    cut = any(e["segment"] == under_way for e in entries)
    # Stopped gracefully with no request in the segment under way: nothing lost, its
    # number goes on; after a crash it is passed over, said lost.
    empty = bool(saved.get("stopped")) and not cut and isinstance(under_way, int)
    with exp._lock:
        exp.previous_segments.extend(sorted(entries, key=lambda e: e["segment"]))
        _keep_segments(exp.previous_segments)
        exp.segment = under_way if empty else max(numbers) + 1
        exp.segment_reason = (RESTART_REASON if cut or empty or not isinstance(under_way, int)
                              else f"{RESTART_REASON}; segment {under_way}, under way then, "
                              "was not kept (the server did not stop gracefully)")
        exp.segment_started = time.time()
