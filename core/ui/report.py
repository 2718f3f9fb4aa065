"""One self-contained HTML report per sweep (or quick search), to share: it opens offline.

What it holds: the summary sentence (the recommendation, or the search's answer), the
pinned settings and the constraints, goodput and p99 across load for the top settings and
the model's own, throughput vs p99 for every point (the Pareto chart of the page), memory
vs latency (when the model's memory was measured), where each request's time went (queue
vs compute) per setting, the table of every point with its stability mark, and the machine
it was measured on. plotly.js is inlined once, so nothing is fetched when it is opened.

Example:
    >>> html = sweep_report(engine.store.get(run_id), slo_ms=10)
    >>> Path("sweep.html").write_text(html)
"""

from __future__ import annotations

import datetime as _dt
import html as _html
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from core.lab import pareto_frontier, recommend, setting_scores
from core.lab.analysis import disturbed_points
from core.lab.search import Constraints
from . import charts
from .fmt import SWEEP_TABLE_LABELS

__all__ = ["sweep_report"]

_TOP = 3  # settings drawn besides the model's own

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1100px; color: #0f172a; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.summary { background: #f0fdf4; border-left: 4px solid #16a34a; padding: .8rem 1rem; }
.summary.none { background: #fff7ed; border-color: #ea580c; }
.muted { color: #64748b; font-size: .9rem; }
table { border-collapse: collapse; font-size: .82rem; width: 100%; }
.scroll { overflow-x: auto; }
th, td { border-bottom: 1px solid #e2e8f0; padding: .25rem .4rem; text-align: right; }
th { background: #f8fafc; position: sticky; top: 0; }
tr.unstable td { background: #fffbeb; } tr.baseline td:first-child { font-weight: 600; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dt { color: #64748b; } dd { margin: 0; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
"""


def _esc(x: Any) -> str:
    return _html.escape(str(x))


def _dl(items: dict[str, Any]) -> str:
    return "<dl>" + "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in items.items()
                            if v is not None and v != "") + "</dl>"


def _setting(b: Any, w: Any, t: Any = None) -> str:
    text = f"batch {int(b)} · wait {float(w):g} ms"
    return text + (f" · {int(t)} thread(s)" if t is not None and pd.notna(t) else "")


def _top_settings(frame: pd.DataFrame, slo_ms: float | None) -> list[tuple]:
    """The best settings by goodput score (by lowest p99 at the top load without a target)
    and the model's own, as (batch, wait, threads) keys."""
    keys = ["max_batch_size", "max_wait_ms", "session_threads"]
    f = frame.copy()
    if "session_threads" not in f:
        f["session_threads"] = float("nan")
    chosen: list[tuple] = []
    if slo_ms is not None and "goodput_rps" in f and f["goodput_rps"].notna().any():
        s = setting_scores(f, Constraints(p99_ms=slo_ms))
        s = s.sort_values(["goodput_rps", "p99_ms"], ascending=[False, True])
        chosen = [tuple(r) for r in s[keys].head(_TOP).itertuples(index=False)]
    else:
        top = f[f["load"] == f["load"].max()].sort_values("p99_ms")
        chosen = [tuple(r) for r in top[keys].head(_TOP).itertuples(index=False)]
    if "baseline" in f:
        own = f[f["baseline"].fillna(False).astype(bool)]
        if not own.empty:
            key = tuple(own[keys].iloc[0])
            if key not in chosen:
                chosen.append(key)
    return chosen


def _rows_of(frame: pd.DataFrame, key: tuple) -> pd.DataFrame:
    b, w, t = key
    m = (frame["max_batch_size"] == b) & (frame["max_wait_ms"] == w)
    if "session_threads" in frame and pd.notna(t):
        m &= frame["session_threads"] == t
    return frame[m].sort_values("load")


def _curves(frame: pd.DataFrame, keys: list[tuple], slo_ms: float | None) -> go.Figure:
    use_goodput = slo_ms is not None and "goodput_rps" in frame and frame["goodput_rps"].notna().any()
    fig = go.Figure()
    palette = ["#2563eb", "#16a34a", "#7c3aed", "#ea580c", "#0891b2"]
    for i, key in enumerate(keys):
        pts = _rows_of(frame, key)
        own = "baseline" in pts and pts["baseline"].fillna(False).astype(bool).any()
        name = _setting(*key) + (" (model's own)" if own else "")
        y = pts["goodput_rps"] if use_goodput else pts["achieved_rps"]
        fig.add_trace(go.Scatter(x=pts["load"], y=y, mode="lines+markers", name=name,
                                 line=dict(color=palette[i % len(palette)],
                                           dash="dot" if own else "solid")))
    fig.update_xaxes(title="offered load (req/s or clients)", tickformat=",")
    what = f"Goodput within {slo_ms:g} ms" if use_goodput else "Throughput"
    return charts.style(fig, f"{what} across load: the top settings and the model's own",
                        "goodput (req/s)" if use_goodput else "achieved (req/s)", height=360)


def _p99_curves(frame: pd.DataFrame, keys: list[tuple], slo_ms: float | None) -> go.Figure:
    fig = go.Figure()
    palette = ["#2563eb", "#16a34a", "#7c3aed", "#ea580c", "#0891b2"]
    for i, key in enumerate(keys):
        pts = _rows_of(frame, key)
        shaky = pts["stable"].eq(False).tolist() if "stable" in pts else [False] * len(pts)
        fig.add_trace(go.Scatter(
            x=pts["load"], y=pts["p99_ms"], mode="lines+markers", name=_setting(*key),
            line=dict(color=palette[i % len(palette)]),
            marker=dict(size=9, symbol=["circle-open" if u else "circle" for u in shaky]),
            error_y=dict(type="data", symmetric=False,
                         array=(pts["p99_ci_high_ms"] - pts["p99_ms"]).clip(lower=0),
                         arrayminus=(pts["p99_ms"] - pts["p99_ci_low_ms"]).clip(lower=0))
            if "p99_ci_high_ms" in pts else None))
    if slo_ms is not None and not frame.empty:
        fig.add_hline(y=slo_ms, line_dash="dash", line_color=charts.COLORS["err"],
                      annotation_text=f"target {slo_ms:g} ms")
    fig.update_xaxes(title="offered load (req/s or clients)", tickformat=",")
    return charts.style(fig, "p99 across load (open markers: unstable points; bars: 95 % "
                        "interval)", "p99 (ms)", height=360)


def _breakdown(frame: pd.DataFrame, keys: list[tuple], load: float) -> go.Figure:
    at = frame[frame["load"] == load]
    labels, queue, compute = [], [], []
    for key in keys:
        r = _rows_of(at, key)
        if r.empty:
            continue
        labels.append(_setting(*key))
        queue.append(float(r["mean_queue_ms"].iloc[0]))
        compute.append(float(r["mean_compute_ms"].iloc[0]))
    fig = go.Figure([go.Bar(x=labels, y=queue, name="waiting (queue + batching)",
                            marker_color=charts.COLORS["queue"]),
                     go.Bar(x=labels, y=compute, name="running (the batch's compute)",
                            marker_color=charts.COLORS["compute"])])
    fig.update_layout(barmode="stack")
    return charts.style(fig, f"Where a request's time went at {load:,.0f} (mean per request)",
                        "ms", height=320)


def _memory(frame: pd.DataFrame, memory: pd.DataFrame, load: float) -> go.Figure:
    at = frame[frame["load"] == load]
    peak = {int(r.batch_size): float(r.peak_mib) for r in memory.itertuples()
            if pd.notna(getattr(r, "peak_mib", None))}
    xs, ys, text = [], [], []
    for r in at.itertuples():
        if int(r.max_batch_size) in peak:
            xs.append(peak[int(r.max_batch_size)])
            ys.append(float(r.p99_ms))
            text.append(_setting(r.max_batch_size, r.max_wait_ms))
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="markers", text=text,
                               marker=dict(size=10, color=charts.COLORS["depth"]),
                               hovertemplate="%{text}<br>%{x:,.0f} MiB, p99 %{y:.2f} ms"
                                             "<extra></extra>"))
    fig.update_xaxes(title="peak memory of the batch size (MiB, measured in a child process)")
    return charts.style(fig, f"Memory vs p99 at {load:,.0f}", "p99 (ms)", height=320)


#: Columns of whole numbers (a frame with a missing value holds them as floats: "2.00").
_WHOLE = frozenset({"max_batch_size", "session_threads", "load", "windows", "measurements",
                    "max_batch_rows"})


def _cell(v: Any, col: str = "") -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "-"
    if isinstance(v, float) and col in _WHOLE and v.is_integer():
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:,.2f}"
    return str(v)


def _table(frame: pd.DataFrame) -> str:
    cols = [c for c in ("max_batch_size", "max_wait_ms", "session_threads", "load_kind", "load",
                        "achieved_rps", "goodput_rps", "p50_ms", "p99_ms", "p99_ci_low_ms",
                        "p99_ci_high_ms", "error_rate", "mean_batch_rows", "max_batch_rows",
                        "windows", "spread_rps_pct", "spread_p99_pct", "measurements", "disturbed")
            if c in frame]
    # headers in words (wrapping), as on the page; the table scrolls inside its box
    head = "<tr><th>stable</th>" + "".join(
        f"<th>{_esc(SWEEP_TABLE_LABELS.get(c, c.replace('_', ' ')))}</th>" for c in cols) + "</tr>"
    body = []
    for _, r in frame.iterrows():
        st_v = r.get("stable")
        measured_in_windows = st_v is not None and pd.notna(st_v)
        unstable = measured_in_windows and not bool(st_v)
        own = bool(r.get("baseline", False)) if pd.notna(r.get("baseline", False)) else False
        cls = " ".join(c for c, on in (("unstable", unstable), ("baseline", own)) if on)
        mark = "⚠ unstable" if unstable else ("yes" if measured_in_windows else "-")
        cells = "".join(f"<td>{_esc(_cell(r[c], c))}</td>" for c in cols)
        body.append(f'<tr class="{cls}"><td>{mark}</td>{cells}</tr>')
    return f'<div class="scroll"><table>{head}{"".join(body)}</table></div>'


def sweep_report(run: dict[str, Any], slo_ms: float | None = None,
                 memory: pd.DataFrame | None = None) -> str:
    """The HTML report of a stored run (``store.get(run_id)``: a sweep's or a quick
    search's), self-contained. ``slo_ms``: the p99 target (default: the run's own);
    ``memory``: the model's memory profile (``engine.memory_profile(model)``), if any."""
    frame: pd.DataFrame = run["results"]
    cfg: dict[str, Any] = run.get("config", {}) or {}
    env: dict[str, Any] = run.get("environment", {}) or {}
    slo = slo_ms if slo_ms is not None else cfg.get("slo_p99_ms")
    if frame.empty:
        raise ValueError(f"run {run.get('id')} has no points: nothing to report")
    model = cfg.get("model", "?")
    if cfg.get("search") == "quick":
        summary, found = cfg.get("reason", ""), cfg.get("best") is not None
        load = (frame["load"].max())
    elif slo is not None:
        rec = recommend(frame, float(slo))
        summary, found = rec.reason, rec.max_batch_size is not None
        load = rec.load if rec.load is not None else frame["load"].max()
    else:
        summary, found = "No p99 target was given: every point is below, nothing chosen.", False
        load = frame["load"].max()
    first = frame.iloc[0]
    base = (frame["baseline"].fillna(False).astype(bool) if "baseline" in frame
            else pd.Series(False, index=frame.index))
    sizes = cfg.get("max_batch_sizes") or sorted(frame["max_batch_size"].unique())
    waits = cfg.get("max_waits_ms") or sorted(frame["max_wait_ms"].unique())
    own = (None if not base.any() else
           f"max batch size {int(frame[base]['max_batch_size'].iloc[0])}, max wait "
           f"{frame[base]['max_wait_ms'].iloc[0]:g} ms")
    pinned = {
        "policy": first.get("policy", cfg.get("policy")),
        "latency SLO (admission)": (f"{first['latency_slo_ms']:g} ms"
                                    if pd.notna(first.get("latency_slo_ms", float("nan")))
                                    else "none"),
        "instances": first.get("instances"),
        "ONNX Runtime threads": ", ".join(
            f"{int(t)}" for t in sorted(frame["session_threads"].dropna().unique()))
        if "session_threads" in frame else None,
        # (the grid's: the model's own, measured beside it as the baseline, said apart;
        # "max waits 2 ms, 5 ms" under a title of "wait 2 ms"; a newcomer)
        "max batch sizes": ", ".join(str(int(b)) for b in sorted(set(sizes))),
        "max waits": ", ".join(f"{float(w):g} ms" for w in sorted(set(waits))),
        "the model's own (the baseline)": own,
        "loads": ", ".join(f"{v:,.0f}" for v in sorted(frame["load"].unique()))
                 + f" ({first.get('load_kind', 'rate')})",
        "seconds per point": cfg.get("duration_s"),
        "inputs": cfg.get("inputs") or "not recorded (runs saved before inputs were)",
        "measurement": "windows until the last 3 agree within 10 % on throughput and p99 "
                       "(up to 10; otherwise unstable)" if "windows" in frame else "one window",
    }
    constraints = {"p99 target": f"{slo:g} ms" if slo is not None else "none",
                   "minimum goodput": cfg.get("min_throughput_rps"),
                   "max memory per setting": (f"{cfg['max_memory_mib']:g} MiB"
                                              if cfg.get("max_memory_mib") else None)}
    search = ({"settings searched": f"{cfg.get('points')} of the grid's {cfg.get('grid_points')}"
               f" points, {cfg.get('measured_s', 0):.0f} s of measurement"}
              if cfg.get("search") == "quick" else {})
    keys = _top_settings(frame, slo)
    figs = [_curves(frame, keys, slo), _p99_curves(frame, keys, slo),
            charts.pareto_figure(frame, pareto_frontier(frame), slo),
            _breakdown(frame, keys, load)]
    mem = _memory(frame, memory, load) if memory is not None and not memory.empty else None
    if mem is not None and len(mem.data[0].x or ()):
        figs.append(mem)
    parts = []
    for i, fig in enumerate(figs):
        parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False,
                                 config={"displaylogo": False}))
    unstable = int(frame["stable"].eq(False).sum()) if "stable" in frame else 0
    disturbed = disturbed_points(frame)
    created = _dt.datetime.fromtimestamp(float(run.get("created", 0))).strftime("%Y-%m-%d %H:%M")
    # (as the page: a setting found among points measured under disturbance is a caution,
    # not a success; the report's green box beside the page's yellow one; a newcomer)
    caution = (f" <b>{disturbed} of {len(frame)} points were measured under disturbance the "
               "engine could see: measure again before relying on them.</b>" if found and
               disturbed else "")
    mem_note = ("" if mem is not None and len(mem.data[0].x or ()) else
                "<p class='muted'>No memory profile for this model's batch sizes here: "
                "measure it (Models page, or <code>engine.measure_memory</code>) to have "
                "memory vs latency here.</p>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Batchlab report: {_esc(run.get('name', 'sweep'))} (run {_esc(run.get('id'))})</title>
<style>{_CSS}</style></head><body>
<h1>{_esc(run.get('name', 'sweep'))}</h1>
<p class="muted">Batchlab run {_esc(run.get('id'))} of model <b>{_esc(model)}</b>, measured
{_esc(created)}{'' if cfg.get('complete', True) else ' (cancelled: the points finished are shown)'};
{len(frame)} points, {unstable} unstable, {disturbed} measured under disturbance (see the
disturbed column).</p>
<div class="summary{'' if found and not disturbed else ' none'}">{_esc(summary)}{caution}</div>
<h2>Pinned for every point</h2>{_dl(pinned)}
<h2>Constraints</h2>{_dl({**constraints, **search})}
<h2>Curves</h2><div class="grid2">{parts[0]}{parts[1]}</div>
<h2>Every point</h2>{parts[2]}
<h2>Where the time went, and memory</h2><div class="grid2">{''.join(parts[3:])}</div>{mem_note}
<h2>The table</h2><p class="muted">Unstable points (their windows never agreed) are
highlighted; the model's own settings are in bold.</p>{_table(frame)}
<h2>Machine</h2>{_dl(env)}
<p class="muted">Made by Batchlab; self-contained (plotly.js inlined), opens offline.</p>
</body></html>"""
