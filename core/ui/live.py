"""The live charts of a model's per-second series (latency, throughput, errors, queue), over
a chosen window, with what happened to the model marked on them (settings changed, hot
swaps, jobs and traffic started: the engine's :meth:`events`).

Example:
    >>> snap = engine.metrics("mlp")
    >>> latency_figure(snap.timeseries, window_s=300, events=engine.events("mlp")).show()
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .style import COLORS, EMPTY_NOTE, WINDOW_S, _empty_note, _layout, recent

__all__ = ["latency_figure", "throughput_figure", "error_figure", "queue_compute_figure",
           "queue_depth_figure", "add_events", "EVENT_COLORS", "MAX_MARKS"]

#: One colour per kind of event (core/metrics/events.py).
EVENT_COLORS = {"settings": "#0d9488", "swap": "#9333ea", "job": "#475569",
                "traffic": "#65a30d", "reset": "#94a3b8", "inputs": "#0891b2", "ab": "#ea580c"}
#: At most this many marks on one chart (the newest): a sweep changes settings per point.
MAX_MARKS = 60
#: Throughput is drawn as a bar a second up to this window, as stacked areas beyond.
BARS_UP_TO_S = 180


def add_events(fig: go.Figure, events: pd.DataFrame | None, ts: pd.DataFrame,
               window_s: int = WINDOW_S) -> go.Figure:
    """Mark ``events`` that fall in the chart's window: a dotted line each, and a marker at
    the top whose hover names what happened (one legend entry, "changes", hides them)."""
    if events is None or events.empty or ts.empty:
        return fig
    end = ts["time"].max() + pd.Timedelta(seconds=1)
    shown = events[events["time"] >= end - pd.Timedelta(seconds=window_s)].tail(MAX_MARKS)
    if shown.empty:
        return fig
    colors = [EVENT_COLORS.get(k, "#475569") for k in shown["kind"]]
    # On the series' own seconds: the unified hover then reads the other traces' values
    # at that second (off it, plotly showed them as raw "(time, value)" pairs).
    times = shown["time"].dt.floor("s")
    for t, color in zip(times, colors):
        fig.add_shape(type="line", x0=t, x1=t, xref="x", y0=0, y1=1, yref="paper",
                      line=dict(color=color, width=1, dash="dot"), layer="below")
    text = [f"{target}: {what}" for target, what in zip(shown["target"], shown["text"])]
    fig.add_trace(go.Scatter(
        x=times, y=[1.0] * len(shown), yaxis="y9", mode="markers", name="changes",
        legendrank=2000,
        marker=dict(symbol="triangle-down", size=9, color=colors), text=text,
        customdata=shown["kind"], hovertemplate="%{customdata}: %{text}<extra></extra>"))
    fig.update_layout(yaxis9=dict(overlaying="y", range=[0, 1.04], visible=False,
                                  fixedrange=True))
    return fig


def latency_figure(ts: pd.DataFrame, title: str = "Latency percentiles (per second)",
                   window_s: int = WINDOW_S, events: pd.DataFrame | None = None,
                   empty_note: str = EMPTY_NOTE) -> go.Figure:
    ts = recent(ts, window_s)
    fig = go.Figure()
    for col, name in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
        y = ts[col]
        # A second with requests between seconds without is a point no line reaches: drawn
        # as a dot (4 requests in the throughput's bars, an empty latency chart; a newcomer)
        alone = y.notna() & y.shift(1).isna() & y.shift(-1).isna()
        fig.add_trace(go.Scatter(x=ts["time"], y=y, name=name, mode="lines+markers",
                                 marker=dict(size=np.where(alone, 7, 0)),
                                 line=dict(color=COLORS[name], width=2), connectgaps=False))
    _empty_note(fig, ts, "p50_ms", empty_note)
    _layout(fig, title, "ms", ts=ts, window_s=window_s, hover="%{y:.2f} ms")
    return add_events(fig, events, ts, window_s)


def throughput_figure(ts: pd.DataFrame, title: str = "Throughput", window_s: int = WINDOW_S,
                      events: pd.DataFrame | None = None) -> go.Figure:
    ts = recent(ts, window_s)
    fig = go.Figure()
    if window_s <= BARS_UP_TO_S:
        fig.add_trace(go.Bar(x=ts["time"], y=ts["successes"], name="served",
                             marker_color=COLORS["ok"]))
        fig.add_trace(go.Bar(x=ts["time"], y=ts["errors"], name="errors",
                             marker_color=COLORS["err"]))
        fig.update_layout(barmode="stack", bargap=0.05)
    else:  # hundreds of one-second bars are hairlines: stacked areas instead
        # (errors' area without an edge: stacked on the served, an edge drew red along the
        # top of every burst, errors or none)
        for col, name, color, width in (("successes", "served", COLORS["ok"], 1),
                                        ("errors", "errors", COLORS["err"], 0)):
            fig.add_trace(go.Scatter(x=ts["time"], y=ts[col], name=name, mode="lines",
                                     stackgroup="rate", line=dict(color=color, width=width)))
    _layout(fig, title, "requests / s", ts=ts, window_s=window_s, hover="%{y:,.0f} req/s")
    return add_events(fig, events, ts, window_s)


def error_figure(ts: pd.DataFrame, title: str = "Error rate", window_s: int = WINDOW_S,
                 events: pd.DataFrame | None = None) -> go.Figure:
    ts = recent(ts, window_s)
    fig = go.Figure(go.Scatter(x=ts["time"], y=ts["error_rate"] * 100, name="error rate",
                               mode="lines", fill="tozeroy", line=dict(color=COLORS["err"])))
    fig.update_yaxes(rangemode="tozero", ticksuffix=" %")   # 1 is 1 %, not 100 %
    _layout(fig, title, "% of requests", ts=ts, window_s=window_s, hover="%{y:.2f} %")
    return add_events(fig, events, ts, window_s)


def queue_compute_figure(ts: pd.DataFrame,
                         title: str = "Where the time goes: queue vs compute",
                         names: tuple[str, str] = ("waiting in queue", "computing"),
                         window_s: int = WINDOW_S, events: pd.DataFrame | None = None
                         ) -> go.Figure:
    """Mean queue and compute time per second, stacked (``names`` label the two: a remote
    model's are the time before sending and the round trip)."""
    ts = recent(ts, window_s)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=ts["time"], y=ts["mean_queue_ms"], name=names[0],
                             stackgroup="t", line=dict(color=COLORS["queue"])))
    fig.add_trace(go.Scatter(x=ts["time"], y=ts["mean_compute_ms"], name=names[1],
                             stackgroup="t", line=dict(color=COLORS["compute"])))
    _layout(fig, title, "mean ms per request", ts=ts, window_s=window_s,
            hover="%{y:.2f} ms")
    return add_events(fig, events, ts, window_s)


def queue_depth_figure(ts: pd.DataFrame,
                       title: str = "Queued as batches leave",
                       window_s: int = WINDOW_S, events: pd.DataFrame | None = None,
                       subtitle: str | None = "the most in each second, the leaving batch "
                                              "included") -> go.Figure:
    """The requests waiting as a batch left, its own included (the most in each second): 4-14
    beside batches of 2 read as a queue the batches ignored; it is one burst in that second."""
    ts = recent(ts, window_s)
    fig = go.Figure(go.Scatter(x=ts["time"], y=ts["queue_depth"], mode="lines",
                               line=dict(color=COLORS["depth"], shape="hv"), name="queued"))
    fig.update_yaxes(rangemode="tozero")
    _layout(fig, title, "requests", ts=ts, window_s=window_s, hover="%{y:,.0f} queued")
    if subtitle:   # (what is counted, under the title)
        fig.update_layout(title_subtitle=dict(text=subtitle, font=dict(size=12)),
                          margin=dict(t=62))
    return add_events(fig, events, ts, window_s)
