"""An A/B experiment's earlier comparison segments, in words for the A/B page."""

from __future__ import annotations

from typing import Any

from core.ui.fmt import clock_time, fmt_ms, fmt_pct

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
                     + _closed_verdict(seg["report"]))
    flush()
    # the segments not kept: before the first kept, and between kept ones (the last
    # comparison is kept however old; the gaps went unsaid; a reviewer)
    # (from the kept numbers only: a page counted every number up to the current one, and
    # a hand-edited 3e9 would have taken it 20 minutes; an adversary)
    gone = _gaps(sorted({int(seg["segment"]) for seg in previous}), current)
    many = len(gone) > 1 or "-" in gone[0] if gone else False
    newest = len(gone) == 1 and gone[0].split("-")[0] == "1"   # (only the last N kept)
    if gone and not previous:   # (a crash lost the only one: "the last 0 are"; a reviewer)
        return (f"Earlier segments (none of {current - 1} kept)",
                [f"Segment{'s' if many else ''} {', '.join(gone)}: not kept"])
    if gone:
        # ("these 5 are" beside five lost read as "these 5 are not kept"; a newcomer)
        n = len(previous)
        lines.append(f"Segment{'s' if many else ''} {', '.join(gone)}: not kept "
                     + (("(only the last one, above, is kept)" if n == 1 else
                         f"(only the last {n}, above, are kept)") if newest else
                        "(only the one above is kept)" if n == 1 else
                        f"(only the {n} above are kept)"))
    title = (f"Earlier segments ({len(previous)})" if not gone else
             f"Earlier segments (the last {len(previous)} of {current - 1})" if newest else
             f"Earlier segments ({len(previous)} of {current - 1} kept)")
    return title, lines


def _gaps(kept: list[int], current: int) -> list[str]:
    """The numbers from 1 to ``current - 1`` not in ``kept`` (sorted), as ranges
    (``['1-3', '5']``), in time proportional to ``len(kept)``."""
    out, nxt = [], 1
    for k in [*[k for k in kept if k < current], current]:
        if k > nxt:
            out.append(f"{nxt}-{k - 1}" if k - 1 > nxt else f"{nxt}")
        nxt = max(nxt, k + 1)
    return out


def _closed_verdict(report: dict[str, Any]) -> str:
    """An ended segment's verdict: for one where every caller went to one arm (promoted
    or rolled back), what that arm served (its verdict read "Not enough data yet ... Every
    caller goes to B now" of a segment that can get no more, and left out B's p50 and p99
    under all the load; a newcomer)."""
    share, mode = report.get("b_share"), report.get("mode")
    arms = report.get("arms") or {}
    if mode in ("random", "sticky") and share in (0.0, 1.0):
        key = "b" if share == 1.0 else "a"
        arm = arms.get(key) or {}
        if arm.get("requests"):
            return (f"Every caller went to {key.upper()} ({arm.get('model', '?')}): "
                    f"p50 {fmt_ms(arm.get('p50_ms'))}, p99 {fmt_ms(arm.get('p99_ms'))}, "
                    f"error rate {fmt_pct(arm.get('error_rate'))} (nothing to compare it "
                    "with in the same segment).")
    # (a segment that ended gets no more: "yet" promised what cannot come)
    return (report.get("verdict") or "No verdict.").replace(" yet:", ":")
