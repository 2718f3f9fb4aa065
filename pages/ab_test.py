"""A/B test: split traffic between two models and compare them per arm."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import AB_MODES, BatchlabError
from core.models import alike_models
from core.ui import charts
from core.ui.bandit import bandit_caption, bandit_figure, bandit_warning
from core.ui.fmt import clock_time, fmt_p, more_needed, shadow_diff_words
from core.ui.segments import segment_words
from core.ui.traffic import sends_caption
from core.lab import experiments_with_arm
from pages._common import (box_refusal, keep_values, pending_traffic, rate_input, follow_traffic_rate, traffic_line, paused_for_measurement, fmt_ms, fmt_num, fmt_pct, get_engine, live_fragment, live_interval, chart_refresh,
                           stop_when_idle, running_traffic, replaced_note)

engine = get_engine()

st.title("A/B test", anchor=False)
st.caption("Send a share of traffic to model B and decide with statistics whether it is "
           "different. random: each request is a weighted draw. sticky: a user (key) always "
           "sees the same model. shadow: callers get A; B gets a copy of every request, so "
           "both arms see the full rate and compare fairly. bandit: the split moves by itself "
           "towards the arm that answers within the SLO more often (Thompson sampling), "
           "each arm keeping a floor share.")

MODE_HELP = {"random": "random (weighted draw per request)",
             "sticky": "sticky (by user key)",
             "shadow": "shadow (B gets copies; fair comparison)",
             "bandit": "bandit (moves traffic to the arm meeting the SLO)"}

experiments = engine.ab_experiments()
models = engine.model_names()

with st.expander("New experiment", expanded=not experiments):
    c1, c2, c3 = st.columns(3)
    name = c1.text_input("Experiment name", "clf-ab", key="ab_name")
    a = c2.selectbox("Model A (control)", models, key="ab_a",
                     index=models.index("clf-v1") if "clf-v1" in models else 0)
    b = c3.selectbox("Model B (candidate)", models, key="ab_b",
                     index=models.index("clf-v2") if "clf-v2" in models else min(1, len(models) - 1))
    mode = st.radio("Routing", AB_MODES, key="ab_new_mode", horizontal=True,
                    format_func=MODE_HELP.get)
    # (the bandit sets the share itself and shadow sends B every request: a share given
    # here was ignored, the bandit starting near half; a newcomer)
    share = st.slider("Share of traffic to B", 0.0, 1.0, 0.2, 0.05, key="ab_new_share",
                      disabled=mode in ("bandit", "shadow"),
                      help="Random and sticky routing only: the bandit moves the share "
                           "itself, and in shadow mode B gets a copy of every request.")
    n1, n2 = st.columns(2)
    new_slo = n1.number_input("Bandit SLO (ms)", None, None, 50.0, key="ab_new_slo",
                              disabled=mode != "bandit",
                              help="A request rewards its arm if answered within this, "
                                   "without error.")
    new_floor = n2.slider("Bandit floor (least share per arm)", 0.0, 0.5, 0.05, 0.01,
                          key="ab_new_floor", disabled=mode != "bandit",
                          help="Each arm keeps at least this share, so a change in the "
                               "losing arm is still seen.")
    if not st.button("Create experiment", key="ab_create", type="primary"):
        pass
    elif name.strip() in experiments:   # (the engine's words name its Python API)
        st.error(f"An experiment named {name.strip()!r} exists: pick it in the Experiment "
                 "menu below to change it (or delete it there first), or give this one "
                 "another name.")
    else:
        try:
            engine.create_ab(name.strip(), a=a, b=b, b_share=share, mode=mode, seed=0,
                             bandit_slo_ms=float(new_slo), bandit_floor=float(new_floor))
        except BatchlabError as err:
            st.error(f"Could not create the experiment: {err}")
        else:
            st.session_state["ab_exp"] = name.strip()
            st.rerun()

experiments = engine.ab_experiments()
# (Streamlit forgets a widget's value on another page: the page came back on the first
# experiment, not the one picked; a newcomer)
keep_values({"ab_exp": None})
if (shown := st.session_state.get("ab_exp")) and shown not in experiments:
    # (a click in a tab whose experiment another tab deleted redrew "No experiment yet",
    # the click and why it did nothing unsaid; a newcomer)
    mine = st.session_state.pop("ab_deleted", None) == shown
    st.info(f"Deleted {shown!r}." if mine else f"Experiment {shown!r} was deleted elsewhere "
            "(another tab or client)" + (f"; {st.session_state.pop('ab_error')}"
                                         if "ab_error" in st.session_state else "."),
            icon=":material/info:")
    st.session_state.pop("ab_error", None)
    st.session_state.pop("ab_exp")   # (said once; the menu below picks another)
    st.session_state.pop("_kept_ab_exp", None)
if not experiments:
    # (it named the demo classifiers whatever was loaded: under "have different inputs"
    # once one of them had been replaced; a newcomer)
    alike = alike_models(engine.models())   # (one call: one per model over HTTP before)
    st.info("No experiment yet: create one above" + (
        f" (these models share an interface: {'; '.join(', '.join(g) for g in alike[:3])})."
        if alike else ": no two models loaded share an interface; upload a second version "
        "of one on the Models page."))
    st.stop()
if st.session_state.get("ab_exp") not in experiments:
    # the newest (a new tab opened the first, and Promote went to an older experiment
    # than the one just made; a newcomer)
    st.session_state["ab_exp"] = experiments[-1]
exp = st.selectbox("Experiment", experiments, key="ab_exp")
report = engine.ab_report(exp)
if report.mode != "bandit":   # (the bandit's split is its own: no slider then)
    st.session_state["ab_share"] = report.b_share
st.session_state["ab_mode"] = report.mode


def _set_share(value: float | None = None) -> None:
    try:
        engine.update_ab(exp, b_share=st.session_state["ab_share"] if value is None else value)
    except BatchlabError as err:
        st.session_state["ab_error"] = str(err)


def _send_all(to_b: bool) -> None:
    """Promote B (every caller to B) or roll back (every caller to A). In shadow mode the
    callers always get A: promoting switches routing to random first, and says so."""
    try:
        if report.mode in ("shadow", "bandit"):
            engine.update_ab(exp, mode="random", b_share=1.0 if to_b else 0.0)
            how = (" (routing switched from shadow to random: B's copies stop)"
                   if report.mode == "shadow" else " (routing switched from the bandit to "
                   "random: the split no longer moves)")
        else:
            engine.update_ab(exp, b_share=1.0 if to_b else 0.0)
            how = ""
    except BatchlabError as err:
        st.session_state["ab_error"] = str(err)
        return
    st.session_state["ab_done"] = (f"Promoted: every caller now gets B ({report.b}){how}."
                                   if to_b else f"Rolled back: every caller now gets A "
                                   f"({report.a}){how}.")


def _match_settings() -> None:
    try:   # (refused while a sweep measures B's model: said, not raised)
        engine.ab_match_settings(exp)
    except BatchlabError as err:
        st.session_state["ab_error"] = str(err)


def _set_mode() -> None:
    try:
        engine.update_ab(exp, mode=st.session_state["ab_mode"])
    except BatchlabError as err:
        st.session_state["ab_error"] = str(err)


def _set_bandit(field: str, key: str) -> None:
    try:
        engine.update_ab(exp, **{field: float(st.session_state[key])})
    except BatchlabError as err:
        st.session_state["ab_error"] = str(err)


def _start_traffic() -> None:
    if refused := box_refusal("ab_rate", "Rate"):   # (the box says so too)
        st.session_state["ab_error"] = f"Could not start traffic: {refused}"
        return
    old = running_traffic(engine, exp)
    try:
        engine.start_traffic(exp, rate_rps=float(st.session_state["ab_rate"]),
                             pattern="poisson")
    except BatchlabError as err:
        st.session_state["ab_error"] = f"Could not start traffic: {err}"
    else:
        if old:   # (its counts leave the traffic line; the arms' metrics keep them)
            st.session_state["ab_replaced"] = replaced_note(old)


def _delete() -> None:
    # (another tab may have deleted it since this one was drawn: its traceback replaced
    # the page; an adversary)
    try:
        engine.stop_traffic(exp)
        engine.delete_ab(exp)
    except BatchlabError as err:
        st.session_state["ab_error"] = f"not deleted here: {err}"
    else:
        st.session_state["ab_deleted"] = exp


def _reset() -> None:
    try:
        engine.reset_metrics(exp)
    except BatchlabError as err:
        st.session_state["ab_error"] = f"not reset: {err}"


# (a large gap wrapped each routing label on 3-4 lines at 1024 px; a newcomer)
left, right = st.columns([1, 2], gap="small")
with left:
    with st.container(border=True):
        st.markdown(f"**A** = `{report.a}`  \n**B** = `{report.b}`  \nmode `{report.mode}`")
        # (the long labels wrapped to three lines, their dots out of line, at 1024 px: the
        # mode's name as the label, what it does below it; a newcomer)
        st.radio("Routing", AB_MODES, key="ab_mode", on_change=_set_mode,
                 captions=[MODE_HELP[m].split(" (", 1)[1].rstrip(")") for m in AB_MODES])
        if report.mode == "bandit":   # (its share moves live: a slider drawn once lagged)
            st.caption("Share of traffic to B: the bandit's, moving with what it learns "
                       "(live, with the chart, on the right).")
        else:
            st.slider("Share of traffic to B", 0.0, 1.0, step=0.05, key="ab_share",
                      on_change=_set_share, disabled=report.mode == "shadow",
                      help="In shadow mode callers always get A and B sees every request.")
        if report.mode == "bandit":
            st.session_state["ab_slo"] = report.bandit["slo_ms"]
            st.session_state["ab_floor"] = report.bandit["floor"]
            b1 = b2 = st   # (one under the other: two columns broke "Bandi / t SLO" at 1024 px)
            b1.number_input("Bandit SLO (ms)", None, None, key="ab_slo",
                            on_change=_set_bandit, args=("bandit_slo_ms", "ab_slo"),
                            help="Changing it starts the bandit's evidence again.")
            b2.number_input("Floor", None, None, step=0.01, key="ab_floor",
                            on_change=_set_bandit, args=("bandit_floor", "ab_floor"))
        # (rows that wrap: two columns cut the labels to "Pr...", "R..." at 1024 px; a
        # newcomer could not tell Start from Stop)
        p1 = p2 = st.container(horizontal=True)
        shadow_note = f" In {report.mode} mode this switches routing to random." \
            if report.mode in ("shadow", "bandit") else ""
        p1.button("Promote B", key="ab_promote", on_click=_send_all, args=(True,),
                  help="Send every caller to B." + shadow_note)
        p2.button("Roll back", key="ab_rollback", on_click=_send_all, args=(False,),
                  help="Send every caller to A." + shadow_note)
        if "ab_error" in st.session_state:
            st.error(st.session_state.pop("ab_error"))
        if "ab_done" in st.session_state:
            st.success(st.session_state.pop("ab_done"), icon=":material/check:")
    with st.container(border=True):
        follow_traffic_rate(engine, exp, "ab_rate", 300)
        rate_input("ab_rate")
        st.caption(sends_caption(engine, exp))
        pending_traffic(engine, exp, "ab_rate")
        t1 = t2 = st.container(horizontal=True)
        # on_click callbacks: a click is never lost when a live fragment reruns meanwhile.
        t1.button("Start traffic", key="ab_start", type="primary", on_click=_start_traffic)
        t2.button("Stop traffic", key="ab_stop", on_click=engine.stop_traffic, args=(exp,))
        if "ab_replaced" in st.session_state:
            st.info(st.session_state.pop("ab_replaced"), icon=":material/swap_horiz:")
        r1 = r2 = st.container(horizontal=True)
        # (asked once more, as Delete is and the Monitor's reset: one click erased the
        # report, its segments and the bandit's learning; a newcomer)
        with r1.popover("Reset"):
            st.caption(f"Zeroes {exp}'s report: both arms' figures, its earlier segments "
                       "and what the bandit has learnt (its models' own metrics stay).")
            st.button(f"Reset {exp}", key="ab_reset", on_click=_reset, type="primary")
        # (asked once more: one click deleted it and every segment; a newcomer)
        with r2.popover("Delete"):
            st.caption(f"Stops {exp}'s traffic and deletes it with its segments' reports "
                       "(the models stay).")
            st.button(f"Delete {exp}", key="ab_delete", on_click=_delete, type="primary")

interval = live_interval(engine)


@live_fragment(interval)
def traffic_status() -> None:
    """The experiment's traffic as it runs (also when another tab started it)."""
    traffic_line(engine, exp)


with left:
    traffic_status()
# The verdict, tables and charts together: at the charts' pace (a redraw costs the browser).
chart_interval = chart_refresh(interval)


@live_fragment(chart_interval)
def arms() -> None:
    if paused_for_measurement(engine, interval, here="A/B test"):
        return
    full = engine.ab_report(exp)
    rep = full.to_dict()
    lat, err = full.latency, full.errors
    # (a latency difference too small to act on is said, not flagged)
    significant = bool((lat and lat.meaningful) or (err and err.significant))
    # What differs between the arms besides the model comes first: it qualifies the verdict.
    for warning in full.warnings:
        st.warning(warning, icon=":material/balance:")
    if any("batch settings" in w for w in full.warnings):
        b_model = engine.ab_arms(exp)[1]
        elsewhere = [f"{e!r} (as {arm})" for e, arm in experiments_with_arm(engine, b_model)
                     if e != exp]
        st.button("Give B A's batch settings", key="ab_match", on_click=_match_settings,
                  help="Copies every batch setting of A's model to B's model "
                                    "(max batch size, max wait, policy, SLO, timeout, queue). "
                                    f"They are {b_model}'s own: its direct traffic"
                                    + (f" and experiments {', '.join(elsewhere)}"
                                       if elsewhere else "") + " run with them too (the "
                                    "Batching page shows them).")
    (st.warning if significant else st.info)(full.verdict or "No traffic yet.",
                                            icon=":material/analytics:")
    restored = (getattr(engine, "server_info", lambda: {})() or {}).get("restored") or {}
    if exp in (restored.get("experiments") or ()) and full.segment == 1 \
            and exp not in (restored.get("segments_kept") or ()):
        # (a restart kept the arms and split, not the figures: 20,640 requests and their
        # verdict went unsaid, segment 1 reading "no requests"; a newcomer)
        st.caption(f"{exp} was restored from the engine server's state folder when the "
                   "server started: its arms, split and mode came back; its figures and "
                   "segments from before are not kept.")
    if full.segment > 1:
        started = clock_time(full.segment_started)   # (as the charts' axes)
        moved = (full.mode in ("random", "sticky") and "B's share" in
                 (reason := full.segment_reason or "") and not reason.endswith(
                     f"→ {full.b_share:.2f}"))   # (read as the last change; a newcomer)
        st.caption(f"Comparing requests since {started} (segment {full.segment}), when "
                   f"{full.segment_reason}"
                   + (f" (B's share is {full.b_share:.2f} now: a split between 0 and 1 "
                      "changed again goes on in the same segment)" if moved else "")
                   + ": samples from before a change are kept apart, never mixed with "
                   "those after.")
    elif full.mode in ("random", "sticky") and 0.0 < full.b_share < 1.0:
        # (the slider moved 0.20 -> 0.35 and the tiles still read 74.5 % / 25.5 %, unsaid;
        # a newcomer)
        st.caption(f"Comparing requests since {clock_time(full.segment_started)} (segment "
                   "1): a split moved between 0 and 1 goes on in the same segment, so the "
                   "shares served count every request since, under each split it had; a "
                   "change of arms or mode, or a split to 0 or 1, begins a new segment.")
    if full.segment > 1:
        title, lines = segment_words(full.previous_segments, full.segment)
        with st.expander(title):
            for line in lines:
                st.markdown(line)
    if full.bandit:
        waits, runs = {}, {}
        for arm_key, model in (("a", full.a), ("b", full.b)):
            try:
                waits[arm_key] = engine.batch_config(model).max_wait_ms
                runs[arm_key] = engine.metrics(model).p50_compute_ms
            except BatchlabError:   # (an arm being swapped: no warning from it)
                waits[arm_key] = None
        if starved := bandit_warning(full.bandit, waits, runs):
            st.warning(starved, icon=":material/hourglass_empty:")
        st.caption(bandit_caption(full.bandit, full.a, full.b))
        st.plotly_chart(bandit_figure(full.bandit), key="ab_bandit_chart")
    # A row per figure, a column per arm, written as the tiles write them: ten columns of
    # snake_case were cut at "error_r" at 1024 px and at p99 at 1280, and one p50 read
    # 5.2 ms on the tile and 5.15 in the table (a newcomer). An arm without requests has
    # no latency ("-": its 0.00 ms beside the tile's "-" misled).
    rows = {"requests": lambda v: f"{v['requests']:,}",
            "succeeded": lambda v: f"{v['successes']:,}",
            "errors": lambda v: f"{v['errors']:,}",
            "error rate": lambda v: fmt_pct(v["error_rate"]) if v["requests"] else "-",
            "share served": lambda v: fmt_pct(v["share_served"]) if v["requests"] else "-",
            **{f"latency {q}": (lambda v, q=q: fmt_ms(v[f"{q}_ms"]) if v["requests"]
                                else "-") for q in ("p50", "p95", "p99")},
            "mean latency": lambda v: fmt_ms(v["avg_latency_ms"]) if v["requests"] else "-",
            "mean batch rows": lambda v: f"{v['mean_batch_rows']:.1f}" if v["requests"]
            else "-"}
    table = pd.DataFrame({"": list(rows), **{
        f"{arm.upper()} ({v['model']})": [say(v) for say in rows.values()]
        for arm, v in rep["arms"].items()}})
    cols = st.columns(2)
    for col, arm in zip(cols, ("a", "b")):
        v = rep["arms"][arm]
        served_what = (f"{fmt_num(v['shadow_copies'])} shadow copies" if arm == "b"
                       and full.mode == "shadow" else   # (which window: a newcomer read
                       # three splits at once, the bandit's now, the warning's and these)
                       f"{fmt_pct(v['share_served'])} served"   # (longer words were cut
                       if rep["total_requests"] else "no requests yet")   # at 1024 px)
        col.metric(f"Arm {arm.upper()}: {v['model']}",   # (no requests yet: no p50 either)
                   (fmt_ms(v["p50_ms"]) + " p50") if v["requests"] else "no p50 yet",
                   f"{served_what} · {fmt_num(v['errors'])} errors", delta_color="off",
                   delta_arrow="off",   # a share, not a rise
                   help="Its p50 in this segment; below, the share of this segment's "
                        "requests it served (in shadow mode: the copies of A's it ran) and "
                        "its errors. The table has every figure.")
    st.dataframe(table, hide_index=True, key="ab_table")
    lat_fig = go.Figure()
    served = go.Figure()
    ts = None
    for arm in ("a", "b"):
        ts = charts.recent(engine.ab_metrics(exp, arm).timeseries)
        lat_fig.add_trace(go.Scatter(x=ts["time"], y=ts["p50_ms"], name=f"{arm.upper()} p50",
                                 line=dict(color=charts.COLORS[arm])))
        lat_fig.add_trace(go.Scatter(x=ts["time"], y=ts["p99_ms"], name=f"{arm.upper()} p99",
                                 line=dict(color=charts.COLORS[arm], dash="dot")))
        # (in shadow mode B's are copies of A's requests: stacked on A's, 200 req/s read
        # as 400; a newcomer. Side by side there.)
        shadow = full.mode == "shadow"
        apart = dict(offsetgroup=arm) if shadow else {}
        what = "shadow copies" if shadow and arm == "b" else "served"
        served.add_trace(go.Bar(x=ts["time"], y=ts["successes"], name=f"{arm.upper()} {what}",
                                marker_color=charts.COLORS[arm], **apart))
        served.add_trace(go.Bar(x=ts["time"], y=ts["errors"], name=f"{arm.upper()} errors",
                                marker_color=charts.COLORS[f"err_{arm}"], opacity=0.8,
                                **apart, **(dict(base=ts["successes"]) if shadow else {})))
    served.update_layout(barmode="group" if full.mode == "shadow" else "stack")
    if lat is not None and lat.n_a >= 20 and lat.n_b >= 20:
        # (a row per figure, a column per measure: seven columns beside the controls were
        # cut at the 95 % interval at 1024 px, at 'more per arm needed' at 1280; a newcomer)
        # (a static table: its cells wrap. In a data grid "still needed", the line that says
        # whether to keep the test running, was cut at "none: only a smaller difference is
        # se..." at 1366 px; a newcomer)
        st.table(pd.DataFrame({
            "latency p50": [fmt_ms(lat.p50_a_ms), fmt_ms(lat.p50_b_ms),
                            f"{lat.diff_p50_ms:+.2f} ms",
                            f"{lat.ci_low_ms:+.2f} to {lat.ci_high_ms:+.2f} ms",
                            fmt_p(lat.p_value), more_needed(lat)],
            "error rate": [f"{err.rate_a:.2%}", f"{err.rate_b:.2%}", f"{err.diff:+.2%}", "",
                           fmt_p(err.p_value), more_needed(err)]},
            index=["A", "B", "B - A", "95% CI", "p-value", "still needed"]))
        st.caption("Latency: the p50 difference, its 95 % interval and p-value from one "
                   f"bootstrap of both arms' latencies; a difference under {lat.detect_ms:.2f} "
                   "ms (5 % of A's p50, at least 0.1 ms) is too small to act on. Errors: "
                   "chi-square test of the two proportions (Fisher's exact test when a cell "
                   "expects under 5), requests refused for their inputs left out (the "
                   "caller's doing); the difference worth detecting is "
                   "B at twice A's error rate (1 point more when A's is under 1 %, so with no "
                   "errors in either arm requests are still asked for). 'Still needed': "
                   "requests per arm still needed to detect those differences (none once one "
                   "is detected). The p50 here is the exact median of the latest "
                   f"{fmt_num(lat.n_a)} (A) and {fmt_num(lat.n_b)} (B) requests; the tiles and "
                   "the arms' table read theirs from latency histograms (every request of the "
                   "segment, within about 1 %), so the two can differ in the last digit.")
    if rep["shadow"]:
        sh = rep["shadow"]
        agree = sh["label_agreement"]
        pairs = ", ".join(f"A's {a} with B's {b}" for a, b in sh.get("pairs", {}).items())
        # (before the first copy came back it said "no outputs of the same kind"; a newcomer)
        what = ("none compared yet" if not sh["compared_requests"] else
                "no outputs of the same kind to compare")
        if sh.get("uncomparable") and not sh["compared_requests"]:
            st.warning(f"B's outputs could not be compared with A's on any of "
                       f"{fmt_num(sh['uncomparable'])} copies: no output of the same name, "
                       "or at the same position with the same kind and shape. Shadow mode "
                       "compares outputs that mean the same thing: pick arms that answer "
                       "alike.", icon=":material/warning:")
        source = engine.input_source(exp)
        on = (f"on real inputs ({source.removeprefix('real: ')})" if source.startswith("real")
              else "on random inputs, not real data: agreement on noise (give the models "
                   "real inputs on the Models page)")
        st.caption(f"Shadow comparison {on}, {fmt_num(sh['compared_requests'])} requests "
                   f"({pairs or what}): "
                   + (f"label agreement {fmt_pct(agree)}" if agree is not None else
                      "no integer outputs (labels) to compare")
                   + f" · B failed on {fmt_num(sh['b_failed'])} copies")
        if sh["max_abs_diff"]:
            st.caption("Max absolute difference: " + ", ".join(
                shadow_diff_words(k, v, sh.get("nonfinite", {}).get(k, 0))
                for k, v in sh["max_abs_diff"].items()))
    st.plotly_chart(charts.breakdown_figure(
        engine.breakdown(exp, last_s=60.0, by_arm=True), by_arm=True,
        title="Each arm's time, last minute: queue or model?"),
        key="ab_breakdown_chart")
    # (one under the other: side by side in the page's right column each plot was ~70 px
    # wide at 1024 px, its time labels stacked; a newcomer)
    st.plotly_chart(charts.style(lat_fig, "Latency per arm", "ms", ts), key="ab_latency_chart")
    st.plotly_chart(charts.style(served, "Requests served per arm", "requests / s", ts),
                    key="ab_served_chart")
    stop_when_idle(engine, interval)


with right:
    arms()
