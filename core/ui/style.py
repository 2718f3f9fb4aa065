"""The house style of every chart: colours, the layout, the live window, empty states.

Example:
    >>> style(go.Figure(), "Latency", "ms").layout.title.text
    'Latency'
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

__all__ = ["COLORS", "WINDOW_S", "style", "recent", "share_x_range"]

COLORS = {"p50": "#2563eb", "p95": "#f59e0b", "p99": "#dc2626", "ok": "#16a34a",
          "err": "#dc2626", "queue": "#f59e0b", "compute": "#2563eb", "depth": "#7c3aed",
          "a": "#2563eb", "b": "#ea580c", "cold": "#94a3b8", "warm": "#16a34a",
          # errors of arm A and arm B side by side: two reds told apart at a glance
          "err_a": "#dc2626", "err_b": "#7f1d1d"}


WINDOW_S = 60


def _layout(fig: go.Figure, title: str, y_title: str, height: int = 300,
            ts: pd.DataFrame | None = None, window_s: int = WINDOW_S,
            hover: str | None = None) -> go.Figure:
    """House style; with ``ts`` the x axis is a fixed window of the last ``window_s``
    seconds; ``hover`` (e.g. ``"%{y:.2f} ms"``): how a value reads on hover, with its unit,
    for the traces that do not say themselves (plotly's own: '1.206897')."""
    if hover:
        for t in fig.data:
            if t.hovertemplate is None and getattr(t, "hovertext", None) is None:
                t.hovertemplate = hover
    # The toolbar stands at the right edge, upright, so a title is never under it. The
    # legend sits at the foot of the whole figure (``yref="container"``): plotly then lifts
    # the plot above it, so it never covers the x axis's title (at ``y=-0.15`` of the plot
    # it did, on every chart with one).
    fig.update_layout(title=dict(text=title, x=0.01, font=dict(size=14)), height=height,
                      margin=dict(l=10, r=30, t=40, b=10), template="plotly_white",
                      legend=dict(orientation="h", yref="container", yanchor="bottom", y=0,
                                  xanchor="left", x=0),
                      yaxis_title=y_title, hovermode="x unified",
                      modebar=dict(orientation="v"))
    if ts is not None and not ts.empty:
        end = ts["time"].max() + pd.Timedelta(seconds=1)
        fig.update_xaxes(range=[end - pd.Timedelta(seconds=window_s), end],
                         tickformat="%H:%M:%S")
    linear_y = fig.layout.yaxis.type in (None, "linear", "-")
    if _no_data(fig) and linear_y and fig.layout.yaxis.range is None:
        fig.update_yaxes(range=[0, 1])  # nothing yet: no negative counts or times on the axis
    elif linear_y and fig.layout.yaxis.rangemode is None:
        # counts, times and rates: never below zero (all-zero seconds drew -1 to 1)
        fig.update_yaxes(rangemode="nonnegative")
    return fig


def _no_data(fig: go.Figure) -> bool:
    """Whether no trace of ``fig`` has a point to draw."""
    ys = [t.y for t in fig.data if getattr(t, "y", None) is not None]
    return not any(v is not None and v == v for y in ys for v in y)


def style(fig: go.Figure, title: str, y_title: str, ts: pd.DataFrame | None = None,
          height: int = 300, window_s: int = WINDOW_S, hover: str | None = None) -> go.Figure:
    """Apply the house style to a figure built elsewhere (e.g. per-arm charts)."""
    return _layout(fig, title, y_title, height=height, ts=ts, window_s=window_s, hover=hover)


def recent(ts: pd.DataFrame, seconds: int = WINDOW_S) -> pd.DataFrame:
    """The last ``seconds`` rows of a per-second series."""
    return ts.tail(seconds) if len(ts) > seconds else ts


#: What an empty live chart says (the A/B page starts an experiment's traffic: its own).
EMPTY_NOTE = ("no requests in this window: start traffic in the Batching page's Traffic "
              "box")


def _empty_note(fig: go.Figure, ts: pd.DataFrame, column: str,
                text: str = EMPTY_NOTE) -> None:
    if ts.empty or ts[column].isna().all():
        if "errors" in ts and ts["errors"].sum() > 0:   # (requests came, none answered)
            text = "no request answered in this window: every one failed (see the errors)"
        # (on two lines, over a white ground: one line ran past the plot at 1024 px, and
        # a note crossed the max_batch_size line; a newcomer)
        fig.add_annotation(text=text.replace(": ", ":<br>", 1),
                           showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                           font=dict(color="#64748b"), bgcolor="rgba(255,255,255,0.9)")


def share_x_range(figs: list[go.Figure]) -> list[go.Figure]:
    """Charts shown one above the other on one x scale: each gets the widest range any of
    them set (a replay's policies drew 0-50 ms and 0-3.5 ms alike)."""
    ranges = [tuple(f.layout.xaxis.range) for f in figs if f.layout.xaxis.range]
    if ranges:
        lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
        for f in figs:
            f.update_xaxes(range=[lo, hi])
    return figs
