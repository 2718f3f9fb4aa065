"""The chart of a sweep over replicas (core.cluster.sweep_replicas): at one offered load,
the mean batch size and the p99 against the number of replicas, one line per per-replica
concurrency and batch setting — batches shrink as replicas are added, and never fill when
a replica may hold fewer requests than a batch has rows.

Example:
    >>> fig = replica_sweep_figure(frame)
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import _layout

__all__ = ["replica_sweep_figure"]

_PALETTE = ["#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2"]


def replica_sweep_figure(frame: Any,
                         title: str = "Mean batch and p99 against replicas, at one offered load"
                         ) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("mean batch (rows)", "p99 (ms)"))
    keys = ["max_ongoing_requests", "max_batch_size", "max_wait_ms"]
    groups = frame.sort_values("replicas").groupby(keys, sort=True)
    for k, ((ongoing, mbs, wait), g) in enumerate(groups):
        color = _PALETTE[k % len(_PALETTE)]   # one setting, one colour in both panels
        name = f"concurrency {int(ongoing)} · batch {int(mbs)} · wait {wait:g} ms"
        hover = [f"{int(r.replicas)} replica(s): {r.achieved_rps:,.0f} of {r.rate_rps:,.0f} "
                 f"req/s answered, {r.error_rate:.1%} errors" for r in g.itertuples()]
        for col, y in ((1, "mean_batch_rows"), (2, "p99_ms")):
            fig.add_trace(go.Scatter(x=g["replicas"], y=g[y], mode="lines+markers", name=name,
                                     legendgroup=name, showlegend=col == 1, text=hover,
                                     line=dict(color=color),
                                     hovertemplate="%{text}<br>%{y:.2f}<extra></extra>"),
                          row=1, col=col)
        if int(ongoing) < int(mbs):
            fig.add_hline(y=int(ongoing), line=dict(dash="dot", width=1, color="#94a3b8"),
                          annotation_text=f"concurrency {int(ongoing)}: batches can't pass it",
                          row=1, col=1)
    _layout(fig, title, "", height=360)
    fig.update_layout(margin=dict(t=70))
    fig.update_xaxes(title_text="replicas", dtick=1)
    fig.update_yaxes(rangemode="tozero")
    return fig
