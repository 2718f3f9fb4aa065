"""The quick search's chart: the goodput of each setting the climb measured.

Example:
    >>> search_figure(result.scores, result.path, result.best)
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from .charts import COLORS, _layout

__all__ = ["search_figure"]


def search_figure(scores: pd.DataFrame, path: list, best: list | None,
                  title: str = "Quick search: goodput of each setting tried") -> go.Figure:
    """One bar per setting the climb measured (in the order tried), its goodput within the
    target; the settings it stood on are outlined and numbered, the best is green, settings
    that never met the target at the lowest load are grey."""
    fig = go.Figure()
    if scores is None or scores.empty:
        return _layout(fig, title, "goodput (req/s)")

    def key(b, w, t) -> tuple:
        return (int(b), float(w), None if t is None or pd.isna(t) else int(t))

    labels, colors, lines, text = [], [], [], []
    steps = {key(*p): i for i, p in enumerate(path)}
    chosen = key(*best) if best else None
    for r in scores.itertuples():
        k = key(r.max_batch_size, r.max_wait_ms, r.session_threads)
        k_path = next((p for p in steps if p[:2] == k[:2] and (p[2] is None or p[2] == k[2])),
                      None)
        labels.append(f"{k[0]} / {k[1]:g} ms" + (f" / {k[2]}t" if k[2] is not None else ""))
        best_here = chosen is not None and chosen[:2] == k[:2] and (chosen[2] is None
                                                                    or chosen[2] == k[2])
        colors.append(COLORS["ok"] if best_here else COLORS["p50"] if r.feasible
                      else COLORS["cold"])
        lines.append(2.5 if k_path is not None else 0)
        text.append(f"step {steps[k_path]}" if k_path is not None else "")
    fig.add_trace(go.Bar(x=labels, y=scores["goodput_rps"], marker_color=colors,
                         marker_line_color="#111827", marker_line_width=lines, text=text,
                         textposition="outside", showlegend=False,
                         hovertemplate="%{x}: %{y:,.0f} req/s within the target<extra></extra>"))
    fig = _layout(fig, title, "goodput (req/s)", height=320)
    fig.update_xaxes(title_text="max batch size / max wait / threads, in the order tried",
                     type="category")
    return fig
