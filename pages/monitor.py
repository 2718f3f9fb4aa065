"""Monitor: live latency, throughput, errors, batches and queue for one model."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.ui import charts
from core.ui.fmt import recent_errors_by_type
from pages._common import (chart_refresh, measuring_job, paused_for_measurement, WINDOW_S, fmt_ms,
                           fmt_num, fmt_pct, fmt_rate, fmt_s, get_engine, live_fragment,
                           keep_values, live_interval, pick_target, stop_when_idle)

#: The time ranges the charts offer (those within what the engine keeps).
RANGES = {"1 min": 60, "5 min": 300, "15 min": 900, "1 h": 3600}

engine = get_engine()

st.title("Monitor", anchor=False)
st.caption("Everything the engine measures: the numbers update every 2 seconds while traffic "
           "runs, the charts at the pace set in the sidebar; a hidden tab draws nothing.")

c1, c2 = st.columns([3, 1])
with c1:
    target = pick_target("Model or experiment", "monitor_model", engine, default="mlp")
if target is None:
    st.stop()
is_exp = target in engine.ab_experiments()
arm = None
if is_exp:
    # (A alone hid half the experiment: "Throughput now 106/s" while 200 req/s were sent)
    keep_values({"monitor_arm": "both"})   # (back at "both" after another page; a newcomer)
    arm = st.segmented_control("Arm", ["both", "a", "b"], key="monitor_arm",
                               required=True, format_func={"both": "both (what callers saw)",
                                                           "a": "A", "b": "B"}.get)
with c2:
    st.write("")
    if not is_exp:
        if st.button("Reset metrics", key="monitor_reset",
                     help="Zero this model's counters, histograms and time series."):
            engine.reset_metrics(target)
            st.rerun()
    else:   # (one click wiped the A/B verdict and the bandit's learning, unsaid; a newcomer)
        with st.popover("Reset"):   # (short: "Reset me…" at 1024 px)
            st.write(f"Resetting **{target}** zeroes its A/B report too: both arms' figures, "
                     "its earlier segments and what the bandit has learnt (its split starts "
                     "again). Its models' own metrics are kept.")
            if st.button(f"Reset {target}", key="monitor_reset", type="primary"):
                engine.reset_metrics(target)
                st.rerun()

interval = live_interval(engine)
remote = not is_exp and engine.remote_info(target) is not None
kept_s = engine.config.timeseries_seconds
ranges = {label: s for label, s in RANGES.items() if s < kept_s}
ranges[fmt_s(kept_s)] = kept_s  # everything kept
r1, r2 = st.columns([2, 3])
keep_values({"monitor_range": next(iter(ranges))})   # (back at 1 min after another page)
if st.session_state["monitor_range"] not in ranges:   # (a server keeping less history)
    st.session_state["monitor_range"] = next(iter(ranges))
with r1:
    range_label = st.segmented_control(
        "Charts show the last", list(ranges),
        key="monitor_range", required=True,
        help=f"The engine keeps {fmt_s(kept_s)} of per-second metrics per model "
             "(a server's --history-minutes)." + (
                 " An experiment's arm counts from its current segment: the charts start "
                 "there (its models' own views keep the whole run)." if is_exp else ""))
window_s = ranges.get(range_label, charts.WINDOW_S)
with r2:
    marks = st.toggle("Mark changes on the charts", value=True, key="monitor_marks",
                      help="A dotted line where settings changed, the model was swapped, "
                           "a job or traffic started or ended, metrics were reset or inputs "
                           "changed; hover its triangle for what.")


def read(window_s: float | None = None):
    return (engine.ab_metrics(target, arm, window_s=window_s) if is_exp and arm != "both"
            else engine.metrics(target, window_s=window_s))


@live_fragment(interval)
def tiles() -> None:
    """The numbers: cheap to draw, every ``interval``."""
    if paused_for_measurement(engine, interval, here="Monitor"):
        return
    total, snap = read(), read(WINDOW_S)  # totals since the reset; the recent window
    served = snap.success_count > 0
    st.caption("SINCE START OR THE LAST RESET" if not is_exp else
               # (both: what callers saw since the reset, across segments; it said segment)
               f"SINCE THE EXPERIMENT'S LAST RESET, {fmt_s(total.uptime_s)} AGO (what its "
               "callers saw, across its segments; A or B alone counts from the current "
               "segment)" if arm == "both" else
               f"SINCE THE EXPERIMENT'S CURRENT SEGMENT BEGAN, {fmt_s(total.uptime_s)} AGO (a "
               "change of mode, of an arm's model or of its settings starts one; the A/B test "
               "page keeps the earlier)")
    m = st.columns(4)
    m[0].metric("Requests", fmt_num(total.total_requests))
    m[1].metric("Succeeded", fmt_num(total.success_count))
    m[2].metric("Errors", fmt_num(total.error_count))
    m[3].metric("Error rate", fmt_pct(total.error_rate),
                help=f"p50 {fmt_ms(total.p50_ms)}, p99 {fmt_ms(total.p99_ms)} over the same "
                     "span" if total.success_count else None)
    st.caption(f"LAST {WINDOW_S} SECONDS")
    m = st.columns(4)
    m[0].metric("p50", fmt_ms(snap.p50_ms) if served else "-")
    m[1].metric("p95", fmt_ms(snap.p95_ms) if served else "-")
    m[2].metric("p99", fmt_ms(snap.p99_ms) if served else "-")
    m[3].metric("Throughput now", fmt_rate(snap.throughput_rps),
                help="Requests served per second, mean of the last 5 full seconds.")
    stop_when_idle(engine, interval)


chart_interval = chart_refresh(interval)


@live_fragment(chart_interval)
def dashboard() -> None:
    """The charts: most of what a refresh costs (the browser redraws each one), so every
    ``chart_interval``."""
    if measuring_job(engine) is not None:
        return
    snap = read(window_s)
    ts = snap.timeseries
    span = fmt_s(window_s)
    events = engine.events(target, since_s=window_s) if marks else None
    live = dict(window_s=window_s, events=events)
    r1 = st.columns(2)
    with r1[0]:
        st.plotly_chart(charts.latency_figure(
            ts, **live, **({"empty_note": "no requests in this window: start the "
                                          "experiment's traffic on the A/B test page"}
                           if is_exp else {})),
            key="mon_latency")
    with r1[1]:
        st.plotly_chart(charts.throughput_figure(ts, **live), key="mon_throughput")
    r2 = st.columns(2)
    with r2[0]:
        st.plotly_chart(charts.breakdown_figure(
            engine.breakdown(target, last_s=10.0, by_arm=is_exp), by_arm=is_exp,
            title="Where each request's time goes, last 10 s"),
            key="mon_breakdown")
    with r2[1]:
        st.plotly_chart(charts.error_figure(ts, **live), key="mon_errors")
    if remote:  # a remote model's batches are its server's: not visible to a client
        r3 = st.columns(2)
        with r3[0]:
            st.plotly_chart(charts.queue_compute_figure(
                ts, title="Before sending vs round trip",
                names=("before sending", "round trip"), **live), key="mon_batches")
        with r3[1]:
            st.plotly_chart(charts.queue_depth_figure(
                ts, title="Waiting for a connection (max per second)", subtitle=None, **live),
                key="mon_depth")
        st.caption("A remote model: each request is sent alone as it comes and its server "
                   "batches; latency is measured here, at the client.")
        server_view(engine.server_stats(target))
    else:
        # (two a row: three cut their titles and crowded their axes at 1024 px; a newcomer)
        r3 = [*st.columns(2), st.columns(2)[0]]
        with r3[0]:
            max_bs = None if is_exp or not engine.model_info(target).batchable \
                else engine.batch_config(target).max_batch_size
            st.plotly_chart(charts.batch_size_figure(snap.batch_sizes, max_bs,
                                                     title=f"Batch sizes, last {span}"),
                            key="mon_batches")
        with r3[1]:
            if is_exp:   # an arm counts its requests; the queue is its model's, all of it
                arms = engine.ab_arms(target)
                of = list(dict.fromkeys(arms if arm == "both" else
                                        [arms[0 if arm == "a" else 1]]))
                st.plotly_chart(charts.queue_depth_figure(   # (the series is its models')
                    ts, **live, title=f"Queued at {' and '.join(of)} as batches leave",
                    # (shorter: cut at "...other traffi" at 1024 px; a newcomer)
                    subtitle="the most each second, other traffic to it included"),
                    key="mon_depth")
            else:
                st.plotly_chart(charts.queue_depth_figure(ts, **live), key="mon_depth")
        with r3[2]:
            st.plotly_chart(charts.release_reasons_figure(
                snap.release_reasons, title=f"Why batches left, last {span}"),
                key="mon_reasons")

    st.subheader("Recent errors", anchor=False)
    if snap.recent_errors:
        errs = pd.DataFrame(snap.recent_errors)
        errs["time"] = pd.to_datetime(errs["time"], unit="s")
        # One line per kind of error, its latest message whole (the table cut it mid-way)
        st.caption(("The most recent error the engine keeps" if len(errs) == 1 else
                    f"The {len(errs)} most recent errors the engine keeps, by type")
                   + " (all of them since the last reset are counted below the table).")
        st.table(recent_errors_by_type(errs))
        with st.expander("The recent error, whole" if len(errs) == 1 else
                         f"Each of the {len(errs)} recent errors"):
            st.dataframe(errs.iloc[::-1], hide_index=True, key="mon_error_table",
                         column_config={"time": st.column_config.DatetimeColumn(
                             format="HH:mm:ss.SSS"),
                             "message": st.column_config.TextColumn(width="large")})
    else:
        st.caption("No errors.")
    by_type = read().errors_by_type  # since the reset, like the Errors tile
    if by_type:
        st.caption("By type, since the last reset: " + ", ".join(
            f"{k}: {fmt_num(v)}" for k, v in by_type.items()))


def server_view(stats: dict) -> None:
    """What the remote model's server reports of it (the statistics extension)."""
    st.subheader("The server's own view", anchor=False)
    if not stats["available"]:
        st.caption(f"Not available: {stats['reason']}.")
        return
    m = st.columns(4)
    m[0].metric("Served (server)", fmt_num(stats["success"]))
    m[1].metric("Mean rows per run", f"{stats['mean_batch_rows']:.2f}"
                if stats["executions"] else "-")
    m[2].metric("Queue in the server", fmt_ms(stats["mean_queue_ms"]))
    m[3].metric("Compute in the server", fmt_ms(stats["mean_compute_ms"]))
    sizes = {k: v["executions"] for k, v in stats["batch_sizes"].items()}
    st.plotly_chart(charts.batch_size_figure(sizes, None, title="The server's batch sizes "
                                             "(runs per size, since it started)"),
                    key="mon_server_batches")
    st.caption(f"From {stats['source']} (the statistics extension), cumulative since the "
               "server started and over every client it serves; means per request.")


tiles()
dashboard()

snap = read()
st.download_button("Download the time series (CSV)", snap.timeseries.to_csv(index=False),
                   file_name=f"batchlab-{target}{'-' + arm if arm else ''}-metrics.csv",
                   mime="text/csv", key="monitor_csv", icon=":material/download:")
