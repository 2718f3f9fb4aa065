"""The timeline: recent requests as a Gantt (waiting, then running, grouped by batch,
coloured by why the batch left), drawn side by side at low load; shown by the Batching page
and a replay's runs, and in notebooks (re-exported by :mod:`core.ui.charts`).

Example:
    >>> fig = timeline_figure(engine.timeline("mlp", last_s=1.0), max_wait_ms=5.0)
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .fmt import reason_words
from .style import COLORS, _layout

__all__ = ["timeline_figure", "timeline_lines_up"]


_REASON_COLORS = {"full": "#2563eb", "deadline": "#16a34a", "adaptive": "#7c3aed",
                  "drain": "#64748b", "retry": "#f59e0b"}


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


#: Requests a timeline draws at most: what a page asks of ``engine.timeline(limit=...)``.
MAX_DRAWN = 120


def timeline_figure(frame: pd.DataFrame, max_wait_ms: float | None = None,
                    max_requests: int = MAX_DRAWN,
                    title: str = "Batches forming: the last second",
                    aligned: bool | None = None, cut: bool = False) -> go.Figure:
    """A Gantt of recent requests (``engine.timeline``): each request one row, a grey bar
    while it waits in the queue and a coloured bar while its batch runs (colour: why the
    batch left), grouped by batch; a failed request is red. Time in ms from the first
    arrival shown. At most the last ``max_requests`` are drawn, each row at least 4 px
    tall (hundreds in one chart made a faint diagonal line); the title says how many of
    how many (``cut``: ``frame`` was cut to its last requests already, by
    ``timeline(limit=...)``: "the last N", the total not known).

    At low load (requests waiting or running for under a quarter of the time shown, or
    the typical request's bar under 1.5 % of the axis) the batches are drawn side by side
    instead, each from its first request's arrival, so the time between them does not
    squeeze the waits and runs into slivers; the x axis says so. ``aligned`` decides it
    instead (charts shown one above the other, e.g. a replay's policies, share one view:
    :func:`timeline_lines_up` of one of them)."""
    fig = go.Figure()
    total = len(frame)
    f = frame.tail(max_requests) if len(frame) > max_requests else frame
    if f.empty:
        fig.add_annotation(text="no requests in this window", showarrow=False, xref="paper",
                           yref="paper", x=0.5, y=0.5, font=dict(color="#64748b"))
        fig.update_xaxes(range=[0, 1], title="ms")
        return _layout(fig, title, "requests")
    f = f.sort_values(["batch_id", "arrived_s"], kind="stable").reset_index(drop=True)
    if aligned is None:
        aligned = timeline_lines_up(f)
    if aligned:  # each batch from its own first arrival (a request that never ran: its own)
        key = f["batch_id"].where(f["batch_id"] >= 0, -1 - f.index.to_series())
        t0 = f.groupby(key)["arrived_s"].transform("min")
    else:
        t0 = float(f["arrived_s"].min())
    ran = f["started_s"].notna()
    start = ((f["started_s"].where(ran, f["done_s"]) - t0) * 1000.0)
    arrive = (f["arrived_s"] - t0) * 1000.0
    done = (f["done_s"] - t0) * 1000.0
    y = [f"{i}" for i in range(len(f))]
    hover = [f"request {r.request_id} · batch {r.batch_id} ({_rows(r.batch_rows)}, "
             f"{reason_words(r.release_reason)}) · waited {r.wait_ms:.2f} ms, "
             f"ran {r.compute_ms:.2f} ms"
             if r.batch_id >= 0 else f"request {r.request_id}: ended without running "
             f"({r.release_reason})" for r in f.itertuples()]
    # The high priority class (``priority=1``) waits in a darker grey, named as such.
    high = f["high"].to_numpy(bool) if "high" in f else np.zeros(len(f), bool)
    for is_high in ((False, True) if high.any() else (False,)):
        idx = np.flatnonzero(high == is_high)
        fig.add_trace(go.Bar(
            y=[y[i] for i in idx], x=(start - arrive)[idx], base=arrive[idx],
            orientation="h", marker_color="#475569" if is_high else "#cbd5e1",
            name=("waiting (high priority)" if is_high else
                  "waiting (normal priority)" if high.any() else "waiting in the queue"),
            hovertext=[hover[i] + (" · high priority" if is_high else "") for i in idx],
            hoverinfo="text"))
    for reason, part in f.groupby("release_reason", sort=False):
        idx = part.index
        colour = _REASON_COLORS.get(reason, "#0ea5e9")
        fig.add_trace(go.Bar(
            y=[y[i] for i in idx], x=(done - start)[idx], base=start[idx], orientation="h",
            name=(f"running, batch left: {reason_words(reason)}" if part["ok"].any()
                  else f"failed: {reason_words(reason)}"),
            marker_color=[colour if ok else COLORS["err"] for ok in part["ok"]],
            hovertext=[hover[i] for i in idx], hoverinfo="text"))
    # Each batch named at the end of its first request's bar: why it left, and its rows.
    # The chart grows (up to 900 px) to give labels their lines; a label that would still
    # touch the one above is left out (the hover names every batch).
    firsts = f[f["batch_id"] >= 0].groupby("batch_id", sort=False).head(1)
    height = max(360, min(900, 120 + max(5 * len(f), _LABEL_PX * len(firsts))))
    row_px = (height - _CHROME_PX) / len(f)
    keep, last = [], -math.inf
    for i in firsts.index:
        if (i - last) * row_px >= _LABEL_PX:
            keep.append(i)
            last = i
    if keep:
        fig.add_trace(go.Scatter(
            x=done[keep] + 0.05, y=[y[i] for i in keep], mode="text",
            text=[f"{reason_words(r.release_reason)} · {_rows(r.batch_rows)}"
                  for r in f.loc[keep].itertuples()],
            textposition="middle right", textfont=dict(size=10, color="#334155"),
            showlegend=False, hoverinfo="skip"))
        lo, hi = float(arrive.min()), float(done.max())
        if math.isfinite(lo) and math.isfinite(hi) and hi > lo:  # room for the labels
            fig.update_xaxes(range=[lo - 0.01 * (hi - lo), hi + 0.16 * (hi - lo)])
    fig.update_layout(barmode="overlay", bargap=0.15, hovermode="closest")
    # rows in batch order: plotly orders categories by first appearance over the traces,
    # so with a high class every normal request came first, each batch cut in two, and the
    # labels spaced by batch order touched (a newcomer at 1024 px)
    fig.update_yaxes(showticklabels=False, autorange="reversed", title="requests, by batch",
                     categoryorder="array", categoryarray=y)
    # (short: the long one was cut at both ends on a laptop's screen; a newcomer)
    fig.update_xaxes(title=("ms from each batch's first arrival (idle time left out)"
                            if aligned else "ms"))
    # What is drawn, under the title (in it, cut at 1,400 px), with the time span of the last
    # requests when only those are drawn (a second's title over a 150 ms axis)
    batches = int(f.loc[f["batch_id"] >= 0, "batch_id"].nunique())   # (-1: never ran)
    cut = cut and len(f) >= max_requests
    shown = (f"the last {len(f)} requests" if cut else
             f"{len(f)} request{'s' if len(f) != 1 else ''}" if len(f) == total else
             f"the last {len(f)} of {total} requests") + \
        f" in {batches} batch{'es' if batches != 1 else ''}"
    span = (float(f["done_s"].max()) - float(f["arrived_s"].min())) * 1000.0
    if (len(f) < total or cut) and math.isfinite(span):
        shown += f", {span:,.{0 if span >= 10 else 1}f} ms of it"
    note = f" · max wait {max_wait_ms:g} ms" if max_wait_ms is not None else ""
    return _layout(fig, title, "requests, by batch", height=height).update_layout(
        title=dict(text=title, subtitle=dict(text=shown + note, font=dict(size=12))),
        margin=dict(t=62), hovermode="closest")


#: Pixels a batch's label needs on the timeline (10 px text and a little air).
_LABEL_PX = 14
#: Pixels of the timeline's height that are not its plot: title and subtitle, the axis and
#: its title, the legend below (130 left labels touching at 1024 px; a newcomer).
_CHROME_PX = 230


def timeline_lines_up(frame: pd.DataFrame, max_requests: int = 120) -> bool:
    """Whether :func:`timeline_figure` draws ``frame``'s batches side by side, each from
    its first arrival: at low load (requests waiting or running under a quarter of the
    time shown, or the typical request's bar under 1.5 % of the axis)."""
    f = frame.tail(max_requests) if len(frame) > max_requests else frame
    if f.empty or f["batch_id"].nunique() < 2:
        return False
    width = float(f["done_s"].max() - f["arrived_s"].min())
    if not (math.isfinite(width) and width > 0):
        return False
    typical = float((f["done_s"] - f["arrived_s"]).median())
    return _busy_share(f) < 0.25 or typical < 0.015 * width


def _busy_share(f: pd.DataFrame) -> float:
    """The share of the time from the first arrival to the last end in which some request
    was waiting or running (the union of their spans)."""
    spans = sorted(zip(f["arrived_s"], f["done_s"]))
    total = float(f["done_s"].max() - f["arrived_s"].min()) if spans else 0.0
    if not total > 0:
        return 1.0
    busy, (lo, hi) = 0.0, spans[0]
    for a, d in spans[1:]:
        if a > hi:
            busy, lo, hi = busy + (hi - lo), a, d
        else:
            hi = max(hi, d)
    return (busy + hi - lo) / total
