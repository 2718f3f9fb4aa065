"""A/B test: split traffic between two models and compare them per arm."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import BatchlabError, charts
from pages._common import fmt_ms, get_engine, live_interval, stop_when_idle

engine = get_engine()

st.title("A/B test")
st.caption("Send a share of traffic to model B and compare latency and errors per arm. "
           "Requests are routed by a seeded weighted random draw.")

experiments = engine.ab_experiments()
models = engine.model_names()

with st.expander("New experiment", expanded=not experiments):
    c1, c2, c3 = st.columns(3)
    name = c1.text_input("Experiment name", "clf-ab", key="ab_name")
    a = c2.selectbox("Model A (control)", models, key="ab_a",
                     index=models.index("clf-v1") if "clf-v1" in models else 0)
    b = c3.selectbox("Model B (candidate)", models, key="ab_b",
                     index=models.index("clf-v2") if "clf-v2" in models else min(1, len(models) - 1))
    share = st.slider("Share of traffic to B", 0.0, 1.0, 0.2, 0.05, key="ab_new_share")
    if st.button("Create experiment", key="ab_create", type="primary"):
        try:
            engine.create_ab(name.strip(), a=a, b=b, b_share=share, seed=0)
        except BatchlabError as err:
            st.error(f"Could not create the experiment: {err}")
        else:
            st.session_state["ab_exp"] = name.strip()
            st.rerun()

experiments = engine.ab_experiments()
if not experiments:
    st.info("No experiment yet: create one above (the demo classifiers clf-v1 and clf-v2 "
            "share an interface).")
    st.stop()
if st.session_state.get("ab_exp") not in experiments:
    st.session_state["ab_exp"] = experiments[0]
exp = st.selectbox("Experiment", experiments, key="ab_exp")
report = engine.ab_report(exp)
st.session_state["ab_share"] = report.b_share


def _set_share(value: float | None = None) -> None:
    try:
        engine.update_ab(exp, b_share=st.session_state["ab_share"] if value is None else value)
    except BatchlabError as err:
        st.session_state["ab_error"] = str(err)


left, right = st.columns([1, 2], gap="large")
with left:
    with st.container(border=True):
        st.markdown(f"**A** = `{report.a}` · **B** = `{report.b}` · mode `{report.mode}`")
        st.slider("Share of traffic to B", 0.0, 1.0, step=0.05, key="ab_share",
                  on_change=_set_share)
        p1, p2 = st.columns(2)
        p1.button("Promote B (100%)", key="ab_promote", on_click=_set_share, args=(1.0,))
        p2.button("Roll back (0%)", key="ab_rollback", on_click=_set_share, args=(0.0,))
        if "ab_error" in st.session_state:
            st.error(st.session_state.pop("ab_error"))
    with st.container(border=True):
        st.number_input("Rate (requests/s)", 1, 20_000, 300, step=50, key="ab_rate")
        t1, t2 = st.columns(2)
        if t1.button("Start traffic", key="ab_start", type="primary"):
            try:
                engine.start_traffic(exp, rate_rps=float(st.session_state["ab_rate"]),
                                     pattern="poisson")
            except BatchlabError as err:
                st.error(f"Could not start traffic: {err}")
            else:
                st.rerun()
        if t2.button("Stop traffic", key="ab_stop"):
            engine.stop_traffic(exp)
            st.rerun()
        r1, r2 = st.columns(2)
        if r1.button("Reset arm metrics", key="ab_reset"):
            engine.reset_metrics(exp)
            st.rerun()
        if r2.button("Delete experiment", key="ab_delete"):
            engine.stop_traffic(exp)
            engine.delete_ab(exp)
            st.rerun()
    st.info("Mind the split confound: with a 90/10 split the small arm sees a tenth of the "
            "arrivals, so its batches fill more slowly and its requests wait longer for "
            "reasons that are not the model. Compare 'mean batch rows' per arm.",
            icon=":material/info:")

interval = live_interval(engine)


@st.fragment(run_every=interval)
def arms() -> None:
    rep = engine.ab_report(exp).to_dict()
    table = pd.DataFrame([{"arm": arm.upper(), **v} for arm, v in rep["arms"].items()])
    cols = st.columns(2)
    for col, arm in zip(cols, ("a", "b")):
        v = rep["arms"][arm]
        col.metric(f"Arm {arm.upper()}: {v['model']}", fmt_ms(v["p50_ms"]) + " p50",
                   f"{v['share_served']:.0%} of traffic · {v['errors']} errors",
                   delta_color="off")
    st.dataframe(table, hide_index=True, key="ab_table", column_config={
        "error_rate": st.column_config.NumberColumn(format="percent"),
        "share_served": st.column_config.NumberColumn(format="percent"),
        "p50_ms": st.column_config.NumberColumn(format="%.2f"),
        "p95_ms": st.column_config.NumberColumn(format="%.2f"),
        "p99_ms": st.column_config.NumberColumn(format="%.2f"),
        "avg_latency_ms": st.column_config.NumberColumn(format="%.2f"),
        "mean_batch_rows": st.column_config.NumberColumn(format="%.1f")})
    lat = go.Figure()
    served = go.Figure()
    ts = None
    for arm in ("a", "b"):
        ts = charts.recent(engine.ab_metrics(exp, arm).timeseries)
        lat.add_trace(go.Scatter(x=ts["time"], y=ts["p50_ms"], name=f"{arm.upper()} p50",
                                 line=dict(color=charts.COLORS[arm])))
        lat.add_trace(go.Scatter(x=ts["time"], y=ts["p99_ms"], name=f"{arm.upper()} p99",
                                 line=dict(color=charts.COLORS[arm], dash="dot")))
        served.add_trace(go.Bar(x=ts["time"], y=ts["successes"], name=f"{arm.upper()} served",
                                marker_color=charts.COLORS[arm]))
        served.add_trace(go.Bar(x=ts["time"], y=ts["errors"], name=f"{arm.upper()} errors",
                                marker_color=charts.COLORS["err"], opacity=0.6))
    served.update_layout(barmode="stack")
    c1, c2 = st.columns(2)
    with c1:
        st.plotly_chart(charts.style(lat, "Latency per arm", "ms", ts), key="ab_latency_chart")
    with c2:
        st.plotly_chart(charts.style(served, "Requests served per arm", "requests / s", ts),
                        key="ab_served_chart")
    stop_when_idle(engine, interval)


with right:
    arms()
