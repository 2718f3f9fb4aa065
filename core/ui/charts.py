"""Plotly figures built from engine snapshots: one place for the dashboard and notebooks.

Every function takes plain data (a metrics time series DataFrame, a dict, a warm-up
frame) and returns a ``plotly.graph_objects.Figure``; nothing here touches Streamlit.

Example:
    >>> fig = latency_figure(engine.metrics("mlp").timeseries)
    >>> fig.show()  # in a notebook
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from .timeline import MAX_DRAWN, timeline_figure, timeline_lines_up
from .live import (add_events, error_figure, latency_figure, queue_compute_figure,
                   queue_depth_figure, throughput_figure)
from core.metrics.breakdown import from_timeline
from .fmt import reason_words
from .style import COLORS, WINDOW_S, _layout, recent, style

__all__ = ["MAX_DRAWN", "runs_figure", "drawable_runs", "RUN_POINT_COLUMNS", "ab_figure", "timeline_figure", "breakdown_figure", "latency_figure",
           "throughput_figure", "error_figure", "batch_size_figure", "queue_compute_figure",
           "queue_depth_figure", "release_reasons_figure", "warmup_figure", "recent", "COLORS",
           "WINDOW_S", "style", "pareto_figure", "what_if_figure", "add_events",
           "timeline_lines_up"]

def batch_size_figure(batch_sizes: Mapping[int, int], max_batch_size: int | None = None,
                      title: str = "Batch sizes (rows per batch)") -> go.Figure:
    """Batches per size, the x range fitted to the sizes seen (not squeezed by a far
    ``max_batch_size``: drawn when near them, else named); None: a model that cannot batch.
    Past 64 rows of range, sizes are counted in bins (bars one row wide over 256 rows were
    under a pixel: the chart looked empty beside one tall bar; a newcomer)."""
    sizes = sorted(batch_sizes)
    top = max(sizes) if sizes else (max_batch_size or 1)
    right = top
    if max_batch_size and max_batch_size <= max(2 * top, 8):
        right = max(top, max_batch_size)
    w = max(1, math.ceil(right / 64))               # rows per bar
    counts: dict[int, int] = {}
    for size in sizes:
        counts[(size - 1) // w] = counts.get((size - 1) // w, 0) + batch_sizes[size]
    bins = sorted(counts)
    # one bar wide (less a gap) wherever the sizes are: plotly sizes bars from the closest
    # two, so sizes 1 and 32 alone drew the 32s as a bar from ~20 to 32
    fig = go.Figure(go.Bar(
        x=[k * w + (w + 1) / 2 for k in bins], y=[counts[k] for k in bins], name="batches",
        marker_color=COLORS["compute"], width=0.8 * w,
        customdata=[f"{k * w + 1}" if w == 1 else f"{k * w + 1}-{(k + 1) * w}" for k in bins],
        hovertemplate="%{y:,} batches of %{customdata} rows<extra></extra>"))
    if max_batch_size:
        if right >= max_batch_size:
            # labelled above the plot beside its line, on the side with room (left of it,
            # the label was cut at the axis when the line was near it: "ax_batch_size=4")
            fig.add_vline(x=max_batch_size, line_dash="dash", line_color="#64748b")
            # (short: "max_batch_size=" lost its number past a narrow plot's edge at
            # 1024 px; a newcomer)
            # (bars past it are batches made under an earlier, larger setting: the chart
            # drew "max 1" beside bars up to 8 rows, unsaid; a newcomer)
            past = " (now; larger before)" if top > max_batch_size else ""
            fig.add_annotation(text=f"max {max_batch_size}{past}", x=max_batch_size, y=1,
                               yref="paper", yanchor="bottom", showarrow=False,
                               xanchor="right" if max_batch_size > (right + 1) / 2
                               else "left",
                               font=dict(color="#64748b", size=11))
        else:
            fig.add_annotation(text=f"max {max_batch_size} (off to the right)",
                               showarrow=False, xref="paper", yref="paper", x=1, y=1.02,
                               xanchor="right", font=dict(color="#64748b", size=11))
    # whole-number ticks only ("1 1 2" came from ticks at 1, 1.5, 2 printed as integers),
    # about six of them, a power of two apart (eleven ran together at 1024 px)
    fig.update_xaxes(title="rows in batch", range=[0.4, right + 0.6],
                     tickformat="d", rangemode="normal", tick0=0,
                     dtick=1 << max(0, math.ceil(math.log2(max(right, 1) / 6))))
    if not sizes:   # (over a white ground: it crossed the max_batch_size line)
        fig.add_annotation(text="no batches yet", showarrow=False, xref="paper", yref="paper",
                           x=0.5, y=0.5, font=dict(color="#64748b"),
                           bgcolor="rgba(255,255,255,0.9)")
    return _layout(fig, title, "batches")


def release_reasons_figure(reasons: Mapping[str, int],
                           title: str = "Why batches left the queue") -> go.Figure:
    names = [r for r in ("full", "deadline", "drain", "retry") if r in reasons] + sorted(
        set(reasons) - {"full", "deadline", "drain", "retry"})
    fig = go.Figure(go.Bar(x=[reasons[n] for n in names], y=[reason_words(n) for n in names],
                           orientation="h",
                           marker_color=["#16a34a" if n == "full" else "#f59e0b" if
                                         n == "deadline" else "#64748b" for n in names]))
    fig.update_xaxes(rangemode="nonnegative", title="batches")   # (no unit; a newcomer)
    if not names:
        fig.add_annotation(text="no batches yet", showarrow=False, xref="paper", yref="paper",
                           x=0.5, y=0.5, font=dict(color="#64748b"))
        fig.update_xaxes(range=[0, 1])
        fig.update_yaxes(visible=False)
    return _layout(fig, title, "", height=220)


def warmup_figure(frame: pd.DataFrame, title: str = "Cold vs warm latency per batch size") -> go.Figure:
    x = [str(b) for b in frame["batch_size"]]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=x, y=frame["cold_ms"], name="first run (cold)",
                         marker_color=COLORS["cold"]))
    fig.add_trace(go.Bar(x=x, y=frame["warm_p50_ms"], name="warm (median)",
                         marker_color=COLORS["warm"]))
    fig.update_layout(barmode="group")
    fig.update_xaxes(title="batch size (rows)", type="category")
    return _layout(fig, title, "ms per run", height=320, hover="%{y:.2f} ms")


def memory_figure(frame: pd.DataFrame,
                  title: str = "Peak memory added by one run, per batch size") -> go.Figure:
    """Bars of ``peak_mib`` per batch size (from ``Engine.measure_memory``), run time on hover."""
    ok, fig = frame[frame["error"].isna()] if "error" in frame else frame, go.Figure()
    fig.add_trace(go.Bar(x=[str(int(b)) for b in ok["batch_size"]], y=ok["peak_mib"],
                         name="peak MiB", marker_color=COLORS["warm"],
                         customdata=ok["run_ms"],
                         hovertemplate="batch %{x}: %{y:.2f} MiB, run %{customdata:.2f} ms"
                                       "<extra></extra>"))
    fig.update_xaxes(title="batch size (rows)", type="category")
    peaks = pd.to_numeric(ok["peak_mib"], errors="coerce")
    if len(peaks) and peaks.max() < 1.0:
        # RSS moves in 4 KiB pages: which size got one page more says nothing (batch 1 once
        # read as the dearest). On a 0-1 MiB axis the bars look as small as they are.
        pages = round(peaks.max() * 256)   # ("at most 1 pages"; a newcomer)
        fig.add_annotation(text=f"every run added under 1 MiB (at most {pages} "
                                f"page{'' if pages == 1 else 's'} of 4 KiB):<br>differences "
                                "this small are noise",
                           showarrow=False, xref="paper", yref="paper", x=0.5, y=0.95,
                           xanchor="center", yanchor="top", font=dict(color="#64748b", size=11))
        fig.update_yaxes(range=[0, 1])
    return _layout(fig, title, "MiB", height=300)


_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "x", "star-triangle-up",
            "hexagon", "pentagon", "triangle-down")


def _latency_axis(fig: go.Figure, values: pd.Series, title: str) -> None:
    """A log axis only when the values span more than 20x, with labels at 1-2-5 steps
    (no crowded minor labels); else a plain linear one."""
    v = values[values > 0]
    if len(v) and v.max() / v.min() > 20:
        # every label a whole number at 1-2-5 steps ("1, 2, 5, 10, 20"): plotly's own minor
        # labels ("5, 2, 100, 5, 2, 10") read as a scramble
        lo, hi = float(v.min()), float(v.max())
        ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)) - 1,
                                              math.ceil(math.log10(hi)) + 1)
                 for m in (1, 2, 5) if lo / 2.5 <= m * 10.0 ** e <= hi * 2.5]
        fig.update_yaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks],
                         title=title + " (log)")
    else:
        fig.update_yaxes(type="linear", rangemode="tozero", title=title)


def _throughput_p99_layout(fig: go.Figure, frame: pd.DataFrame, title: str,
                           height: int) -> go.Figure:
    """Axes of the throughput-vs-p99 charts (sweeps and compared runs)."""
    fig.update_xaxes(title="achieved throughput (req/s)", tickformat=",")
    fig = _layout(fig, title, "p99 latency (ms)", height=height)
    fig.update_layout(hovermode="closest")
    if not frame.empty:
        _latency_axis(fig, frame["p99_ms"], "p99 latency (ms)")
    return fig


def pareto_figure(frame: pd.DataFrame, frontier: pd.DataFrame, slo_ms: float | None = None,
                  chosen: tuple[int, float] | None = None,
                  title: str = "Throughput vs p99: every point, and the Pareto frontier",
                  chosen_load: float | None = None) -> go.Figure:
    """Sweep points, one legend entry per setting (colour: max batch size, symbol: max
    wait), the frontier, the SLO and the recommendation (at the load it was chosen for)."""
    fig = go.Figure()
    if not frame.empty:
        batches = sorted(frame["max_batch_size"].unique())
        waits = sorted(frame["max_wait_ms"].unique())
        palette = px.colors.qualitative.Safe
        for (b, w), pts in frame.groupby(["max_batch_size", "max_wait_ms"], sort=True):
            pts = pts.sort_values("load")
            symbol = _SYMBOLS[waits.index(w) % len(_SYMBOLS)]
            # An unstable point (its windows never agreed) or one measured under
            # disturbance is drawn open, and says so (the frontier ran up to a disturbed
            # point at 2.5x the target, drawn as any other; a newcomer).
            shaky = (pts["stable"].eq(False).tolist() if "stable" in pts
                     else [False] * len(pts))
            loud = [isinstance(d, str) and d != "" for d in pts.get(
                "disturbed", pd.Series([None] * len(pts)))]
            fig.add_trace(go.Scatter(
                x=pts["achieved_rps"], y=pts["p99_ms"], mode="markers+lines",
                name=f"batch {int(b)} · wait {w:g} ms"
                     + (" (model's own)" if "baseline" in pts and pts["baseline"].fillna(False)
                        .astype(bool).any() else ""),
                text=[f"load {v:g}" + (" · UNSTABLE" if u else "") + (" · DISTURBED" if d
                                                                       else "")
                      for v, u, d in zip(pts["load"], shaky, loud)],
                hovertemplate="batch " + str(int(b)) + f", wait {w:g} ms, " +
                              "%{text}<br>%{x:,.0f} req/s, p99 %{y:.2f} ms<extra></extra>",
                line=dict(width=1, color=palette[batches.index(b) % len(palette)]),
                marker=dict(size=10, symbol=[symbol + "-open" if u or d else symbol
                                             for u, d in zip(shaky, loud)],
                            color=palette[batches.index(b) % len(palette)])))
    if not frontier.empty:
        fig.add_trace(go.Scatter(x=frontier["achieved_rps"], y=frontier["p99_ms"],
                                 mode="lines", name="Pareto frontier",
                                 line=dict(color="#0f172a", dash="dot")))
    if slo_ms is not None and not frame.empty:
        xs = [0.0, float(frame["achieved_rps"].max()) * 1.05]
        fig.add_trace(go.Scatter(x=xs, y=[slo_ms, slo_ms], mode="lines",
                                 name=f"p99 target {slo_ms:g} ms",
                                 line=dict(color=COLORS["err"], dash="dash")))
    if chosen is not None and not frame.empty:
        sel = frame[(frame["max_batch_size"] == chosen[0]) & (frame["max_wait_ms"] == chosen[1])]
        if chosen_load is not None and (sel["load"] == chosen_load).any():
            sel = sel[sel["load"] == chosen_load]
        if not sel.empty:
            best = sel.sort_values("load").iloc[-1]
            fig.add_trace(go.Scatter(x=[best["achieved_rps"]], y=[best["p99_ms"]],
                                     mode="markers", name="recommended",
                                     marker=dict(symbol="star", size=20, color=COLORS["ok"],
                                                 line=dict(width=1, color="#0f172a"))))
    return _throughput_p99_layout(fig, frame, title, height=400)


def breakdown_figure(frame: pd.DataFrame, by_arm: bool = False,
                     title: str = "Where each request's time goes") -> go.Figure:
    """Waiting in the queue, running, and the hand-off after the run, as stacked
    percentiles (p50, p90, p99 of each part): ``frame`` is ``engine.breakdown(...)`` (one
    group per A/B arm when it was asked by arm, so it shows whether an arm is slower in the
    model or in the queue), or a timeline (``engine.timeline``) to compute it from."""
    table = frame if "percentile" in frame.columns else from_timeline(frame, by_arm)
    fig = go.Figure()
    parts = (("wait_ms", "waiting in the queue", COLORS["queue"]),
             ("compute_ms", "running", COLORS["compute"]),
             ("handoff_ms", "hand-off", "#94a3b8"))
    labels = [f"arm {str(a).upper()} p{q}" if a else f"p{q}"
              for a, q in zip(table["arm"], table["percentile"])]
    for col, name, colour in parts:
        fig.add_trace(go.Bar(x=labels, y=table[col].astype(float).tolist(), name=name,
                             marker_color=colour,
                             hovertemplate="%{x}: %{y:.3f} ms<extra>" + name + "</extra>"))
    fig.update_layout(barmode="stack")
    if not int(table["requests"].max() if len(table) else 0):  # zeros: an axis from 0
        fig.add_annotation(text="no requests in this window", showarrow=False, xref="paper",
                           yref="paper", x=0.5, y=0.5, font=dict(color="#64748b"))
        fig.update_yaxes(range=[0, 1])
    return _layout(fig, title, "ms (each part's percentile)")


def ab_figure(report: object, title: str = "Latency per arm") -> go.Figure:
    """Grouped bars of each arm's p50, p95 and p99 from an :class:`~core.ABReport`."""
    fig = go.Figure()
    for arm in ("a", "b"):
        snap = report.arms[arm]
        model = report.a if arm == "a" else report.b
        fig.add_trace(go.Bar(x=["p50", "p95", "p99"],
                             y=[snap.p50_ms, snap.p95_ms, snap.p99_ms],
                             name=f"{arm.upper()}: {model} ({snap.total_requests:,} requests)",
                             marker_color=COLORS[arm],
                             hovertemplate="%{x}: %{y:.2f} ms<extra></extra>"))
    fig.update_layout(barmode="group")
    return _layout(fig, title, "latency (ms)")


#: What a stored run's point needs to be drawn among the runs compared.
RUN_POINT_COLUMNS = ("max_batch_size", "max_wait_ms", "load", "achieved_rps", "p99_ms")


def drawable_runs(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[Any]]:
    """The points of ``frame`` (``ExperimentStore.compare``) a runs chart can draw (a
    sweep's: every :data:`RUN_POINT_COLUMNS` a number), and the ids of runs with none (a
    run saved from a notebook with columns of its own broke the History with a traceback;
    an adversary)."""
    if frame.empty or "run_id" not in frame:
        return frame, []
    missing = [c for c in RUN_POINT_COLUMNS if c not in frame]
    ok = (pd.Series(False, index=frame.index) if missing else
          frame[list(RUN_POINT_COLUMNS)].apply(pd.to_numeric, errors="coerce").notna().all(axis=1))
    kept = frame[ok]
    return kept, [r for r in pd.unique(frame["run_id"]) if r not in set(kept["run_id"])]


def runs_figure(frame: pd.DataFrame, title: str = "Runs compared") -> go.Figure:
    """Points of several stored runs (``ExperimentStore.compare``), one colour per run,
    named by id and name, so runs can be told apart; points it cannot draw are left out
    (:func:`drawable_runs`)."""
    frame = drawable_runs(frame)[0].reset_index(drop=True)
    where = _label_places(frame)
    fig = go.Figure()
    palette = px.colors.qualitative.Bold
    for rid, pts in frame.groupby("run_id", sort=True):
        # (by the run's id, not its place in the selection: deleting run 1 swapped the
        # colours of runs 2 and 3; a newcomer)
        k = int(rid) if isinstance(rid, (int, np.integer)) else hash(str(rid))
        name = pts["run"].iloc[0] if "run" in pts else ""
        labels = [f"batch {int(b)}, wait {w:g} ms, load {v:g}" for b, w, v in
                  zip(pts["max_batch_size"], pts["max_wait_ms"], pts["load"])]
        # each point named by its setting where few are drawn (only the run was: batch 8
        # and 32 told apart by hovering; a newcomer)
        few = len(frame) <= 12
        fig.add_trace(go.Scatter(
            x=pts["achieved_rps"], y=pts["p99_ms"], mode="markers+text" if few else "markers",
            name=f"run {rid}: {name}",
            text=[f"{int(b)} / {w:g} ms" for b, w in zip(pts["max_batch_size"],
                                                       pts["max_wait_ms"])] if few else None,
            textposition=[where[i] for i in pts.index], customdata=labels,
            hovertemplate="%{customdata}<br>%{x:,.0f} req/s, p99 %{y:.2f} ms",
            marker=dict(size=10, color=palette[k % len(palette)],
                        symbol=_SYMBOLS[k % len(_SYMBOLS)])))
    # Named even when only one run is drawn (plotly hides a lone trace's legend).
    fig.update_layout(showlegend=True)
    fig = _throughput_p99_layout(fig, frame, title, height=380)
    if not frame.empty:   # (one load: 199.34 to 199.365 req/s across the width; a newcomer)
        lo, hi = float(frame["achieved_rps"].min()), float(frame["achieved_rps"].max())
        if hi > 0 and hi - lo < 0.05 * hi:
            fig.update_xaxes(range=[0.8 * lo, 1.2 * hi])
    return fig


def _label_places(frame: pd.DataFrame) -> dict[Any, str]:
    """Where each point's label goes: above it, or below where another point sits just
    above it at about the same throughput ("32 / 5 ms" and "8 / 2 ms" overlapped at 800
    req/s, p99 8.4 and 7.8 ms; a newcomer)."""
    where = {i: "top center" for i in frame.index}
    if frame.empty:
        return where
    x, y = frame["achieved_rps"].astype(float), frame["p99_ms"].astype(float)
    dx = max(float(x.max() - x.min()), 1e-9) * 0.06
    dy = max(float(y.max() - y.min()), 1e-9) * 0.12
    for i in frame.index:
        if any(j != i and abs(x[j] - x[i]) <= dx
               and (0 < y[j] - y[i] <= dy or (y[j] == y[i] and j > i)) for j in frame.index):
            where[i] = "bottom center"
    return where


def what_if_figure(curve: pd.DataFrame, measured: pd.DataFrame | None = None,
                   title: str = "What-if: predicted latency across load",
                   capacity_rps: float | None = None) -> go.Figure:
    """Predicted p50/p99 versus arrival rate, with measured points when there are any, and
    the setting's capacity as a line when it falls on the chart."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=curve["rate_rps"], y=curve["p50_ms"], name="predicted p50",
                             line=dict(color=COLORS["p50"])))
    fig.add_trace(go.Scatter(x=curve["rate_rps"], y=curve["p99_ms"], name="predicted p99",
                             line=dict(color=COLORS["p99"])))
    if measured is not None and not measured.empty:
        fig.add_trace(go.Scatter(x=measured["load"], y=measured["p50_ms"], mode="markers",
                                 name="measured p50", marker=dict(color=COLORS["p50"], size=10)))
        fig.add_trace(go.Scatter(x=measured["load"], y=measured["p99_ms"], mode="markers",
                                 name="measured p99", marker=dict(color=COLORS["p99"], size=10)))
    fig.update_xaxes(title="arrival rate (req/s)")
    if capacity_rps and math.isfinite(capacity_rps) and capacity_rps <= curve["rate_rps"].max():
        fig.add_vline(x=capacity_rps, line_dash="dash", line_color="#64748b",
                      annotation_text=f"capacity {capacity_rps:,.0f} req/s",
                      annotation_position="top left")
    return _layout(fig, title, "ms", height=340, hover="%{y:.2f} ms")
