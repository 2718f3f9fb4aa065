"""An A/B experiment's earlier comparison segments, in words for the A/B page."""

from __future__ import annotations

from typing import Any

from core.ui.fmt import clock_time

__all__ = ["segment_words"]


def segment_words(previous: list[dict[str, Any]], current: int) -> tuple[str, list[str]]:
    """An A/B experiment's earlier segments (``ABReport.previous_segments``, newest last)
    for a person: a title, and a line each, newest first; segments in a row without a
    request in one line (eight arrow-key steps of a slider made five such segments, each
    "Not enough data yet"; a newcomer), and the segments no longer kept said."""
    clock = clock_time   # (as the charts' axes: UTC)

    lines: list[str] = []
    empty: list[dict[str, Any]] = []

    def flush() -> None:
        if empty:
            first, last = empty[-1], empty[0]   # (newest first: the run's first is last)
            which = (f"Segment {first['segment']}" if first is last else
                     f"Segments {first['segment']}-{last['segment']}")
            lines.append(f"**{which}** ({clock(first['started'])} to {clock(last['ended'])}): "
                         "no requests (a setting changed again before any came)"
                         + (f"; the last after: {last['reason']}" if last["reason"] else ""))
            empty.clear()

    for seg in reversed(previous):
        if not seg["report"]["total_requests"]:
            empty.append(seg)
            continue
        flush()
        lines.append(f"**Segment {seg['segment']}** ({clock(seg['started'])} to "
                     f"{clock(seg['ended'])}" + (f", after: {seg['reason']}" if seg["reason"]
                                                 else "") + f"): "
                     f"{seg['report']['total_requests']:,} requests. "
                     + (seg["report"]["verdict"] or "No verdict."))
    flush()
    gone = previous[0]["segment"] - 1 if previous else current - 1
    if gone > 0:
        lines.append(f"Segment{'s 1-' if gone > 1 else ' '}{gone}: not kept (the last "
                     f"{len(previous)} are)")
    title = (f"Earlier segments ({len(previous)})" if gone <= 0 else
             f"Earlier segments (the last {len(previous)} of {current - 1})")
    return title, lines
