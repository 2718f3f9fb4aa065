"""Batching: tune batch size, wait and policy live, drive traffic, watch the effect."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import ARRIVAL_PATTERNS, POLICIES, BatchlabError
from core.config import MAX_INSTANCES
from core.lab import JOB_WORDS, arrivals_to_csv, disturbed_rows, read_arrivals_csv
from core.lab.replay import DEFAULT_SLO_MS
from core.policies import policy_label, uses_slo
from core.ui.policies import aimd_caption, class_table, replay_verdict
from core.ui import charts
from core.ui.style import share_x_range
from core.ui.traffic import (catch_up, lag_note, replay_traffic_warning, sends_caption,
                             via_experiments)
from pages._common import (box_refusal, number_box, pending_traffic, rate_input, last_settings_change, keep_values, follow_traffic_rate, traffic_line, paused_for_measurement, WINDOW_S, fmt_ms, fmt_num, fmt_rate, get_engine, job_progress,
                           live_fragment, live_interval, pick_model, start_job, agents_controls, chart_refresh, measuring_job,
                           stop_when_idle, running_traffic, replaced_note, settings_held_by)

engine = get_engine()

st.title("Batching", anchor=False)
st.caption("Bigger batches amortise per-run overhead (throughput up); waiting for them costs "
           "latency. Change the settings while traffic runs and watch the charts respond.")

model = pick_model("Model", "batching_model", engine, default="mlp")
if model is None:
    st.stop()
keep_values({"traffic_rate": 200.0, "traffic_class": "one stream", "traffic_pattern": "poisson",
             "traffic_rows": 1, "traffic_duration": 0, "traffic_high": 0,
             "bs_replay_slo": DEFAULT_SLO_MS, "bs_replay_stop_traffic": True})
info = engine.model_info(model)
cfg = engine.batch_config(model)
remote = engine.remote_info(model)   # None for a model served here
# A remote model's batching is its server's: shown, and changeable only where the server
# lets a client change it (a Batchlab server, Triton's model load with a config).
server_fixed = remote is not None and not remote.configurable

# Widgets show the engine's truth (shared by every tab); changes go through the engine.
# Written only where they differ (a change from another tab, a refused one): writing a
# widget's state sends its value to the browser, and an equal value written on every run
# undid the arrow-key presses made while the last one was applied (24 presses: 22 steps).
for key, value in (("bs_max_batch", cfg.max_batch_size), ("bs_max_wait", float(cfg.max_wait_ms)),
                   ("bs_policy", cfg.policy), ("bs_slo", cfg.latency_slo_ms),
                   ("bs_instances", cfg.instances)):
    if key not in st.session_state or st.session_state[key] != value:
        st.session_state[key] = value


def _apply(field: str, key: str) -> None:
    changes = {field: st.session_state[key]}
    kept = f"bs_slo_kept_{model}"   # (deadline and back to aimd dropped the SLO silently)
    now = engine.batch_config(model)
    if field == "policy" and not uses_slo(changes["policy"]):
        changes["latency_slo_ms"] = None  # the SLO belongs to adaptive and aimd
        if now.latency_slo_ms:
            st.session_state[kept] = now.latency_slo_ms   # kept for the way back
    elif field == "policy" and not now.latency_slo_ms and st.session_state.get(kept):
        changes["latency_slo_ms"] = st.session_state[kept]
    # (emptied: none; 0 is the engine's to refuse in words, it was taken as none unsaid)
    try:
        engine.configure(model, **changes)
        st.session_state.pop("bs_error", None)
    except BatchlabError as err:   # (said once, with what was kept: the box shows it again,
        kept = getattr(now, field, None)   # and the error stayed under the fixed value)
        st.session_state["bs_error"] = str(err) + ("" if kept is None else
                                                   f"; {field} stays {kept:g}" if
                                                   isinstance(kept, (int, float)) else
                                                   f"; {field} stays {kept}")


#: The traffic box's "Class" choices: one generator (with a high share, or none), or a
#: generator of one class beside the other's.
TRAFFIC_CLASSES = {"one stream": None, "high class": 1, "normal class": 2}


def _start_traffic() -> None:
    ss = st.session_state
    for key, what in (("traffic_rate", "Rate"), ("traffic_rows", "Rows per request"),
                      ("traffic_duration", "Run for"),
                      ("traffic_high", "High-priority share")):   # (the box says so too)
        if refused := box_refusal(key, what, empty_ok=key == "traffic_high"):
            ss["traffic_error"] = f"Could not start traffic: {refused}"   # (empty: none)
            return
    share = st.session_state.get("traffic_high")
    priority = TRAFFIC_CLASSES[st.session_state.get("traffic_class") or "one stream"]
    agents = int(st.session_state.get("traffic_agents") or 0)
    old = running_traffic(engine, model, priority)
    try:
        engine.start_traffic(
            model, rate_rps=float(st.session_state["traffic_rate"]),
            pattern=st.session_state["traffic_pattern"] or "poisson",
            rows_per_request=int(st.session_state["traffic_rows"]),
            duration_s=float(st.session_state["traffic_duration"]) or None,
            **({"agents": agents, "ray_address":
                (st.session_state.get("traffic_ray_address") or "").strip() or None}
               if agents else {}),
            **({"priority": priority} if priority is not None
               else {"high_share": share / 100.0} if share else {}))
    except BatchlabError as err:
        st.session_state["traffic_error"] = f"Could not start traffic: {err}"
    else:
        if old:   # (said: the counts below start again, the model's metrics do not)
            st.session_state["traffic_replaced"] = replaced_note(old)


interval = live_interval(engine)


@live_fragment(interval)
def policy_live() -> None:
    """What the adaptive and AIMD policies have learnt, as it changes (drawn once with
    the settings, the AIMD cap read "9 of 32" for 16 s while batches of 22 left)."""
    cfg = engine.batch_config(model)
    learned = engine.learned_cost(model) if cfg.policy == "adaptive" else None
    if learned is not None and learned.get("rate_rps") is not None:   # (None: switched away)
        if learned.get("identified", True):
            st.caption(f"Learned: t(n) = {learned['a_ms']:.3f} + {learned['b_ms']:.4f}·n "
                       f"ms; arrivals {learned['rate_rps']:,.0f} rows/s")
        else:
            lo = learned.get("min_rows", 1)
            st.caption(f"Learned so far: a run of {lo} row(s) costs about "
                       f"{learned['a_ms'] + learned['b_ms'] * lo:.3f} ms, but its fixed "
                       "and per-row parts are not yet known apart: "
                       "that needs batches of sizes at least 4× apart (more load, or a "
                       f"warm-up over several batch sizes); arrivals "
                       f"{learned['rate_rps']:,.0f} rows/s")
    if cfg.policy == "aimd" and (state := engine.policy_state(model)):
        st.caption(aimd_caption(state, cfg.max_batch_size))


@live_fragment(interval)
def traffic_status() -> None:
    """This model's generator, live: counts, and what goes wrong if anything does."""
    traffic_line(engine, model)
    if via := via_experiments(engine, model):
        st.caption(via)


held = settings_held_by(engine, model)
if held is not None:    # (the engine refuses changes meanwhile: said, not failed; full width:
    own = held.params["own_settings"]          # in the settings column it ran down the page)
    st.info(f"**{model}** is being measured by a {JOB_WORDS.get(held.kind, held.kind)} "
            f"(job {held.job_id}, {held.progress:.0%}): the settings below are those of the "
            "point it measures now, and stay as it sets them until it ends; the model's own "
            f"(max batch size {own['max_batch_size']}, max wait {own['max_wait_ms']:g} ms) "
            "come back then. To change them now, cancel it where it shows (the Experiments "
            "page for a sweep or search).", icon=":material/lock:")
# (settings a third wide left the sliders ~110 px for 1-1024 rows at 1024 px, hard to set;
# a newcomer)
controls, live = st.columns([2, 3], gap="medium")
with controls:
    with st.container(border=True):
        st.subheader("Settings", anchor=False)
        if remote is not None:
            how = ("Batchlab changes them there." if remote.configurable else
                   "Batchlab cannot change them: they are set where the model is deployed.")
            st.info(f"**{model}** is served by {remote.server} at {remote.url} "
                    f"(model `{remote.model}`). Its batch settings are the server's "
                    f"({remote.source}). {how} Latency is measured here, at the client.", icon=":material/cloud:")
            stats = engine.server_stats(model)
            if stats["available"] and stats["executions"]:
                st.caption(f"The server reports (statistics extension, since it started): "
                           f"{stats['mean_batch_rows']:.2f} rows per run, "
                           f"{fmt_ms(stats['mean_queue_ms'])} queued and "
                           f"{fmt_ms(stats['mean_compute_ms'])} computing per request.")
        if not info.batchable:
            st.warning(f"{model} is not batchable: {info.batch_reason}")
        unknown = remote is not None and remote.batching.max_batch_size is None
        if unknown:
            st.caption("The server does not report its batch size and wait (give them to "
                       "add_remote(batch=...) to have them shown and used by sweeps).")
        if not unknown:
            # a server may report more than the sliders' usual range
            # (a model that runs each request alone still takes a request's rows up to it)
            st.slider("Max batch size (rows)" if info.batchable else "Max rows per request",
                      1, max(256, cfg.max_batch_size), key="bs_max_batch",
                      on_change=_apply, args=("max_batch_size", "bs_max_batch"),
                      disabled=info.batch_mode == "exact" or server_fixed or held is not None,
                      help="A batch is released as soon as it holds this many rows."
                      if info.batchable else "Its requests are not batched with others: "
                      "this is the most rows one request may bring (more are refused).")
            st.slider("Max wait (ms)", 0.0, max(50.0, float(cfg.max_wait_ms)), step=0.5,
                      key="bs_max_wait",
                      on_change=_apply, args=("max_wait_ms", "bs_max_wait"),
                      disabled=not info.batchable or server_fixed or held is not None,
                      help="The longest the oldest request waits for the batch to fill. 0 sends "
                           "whatever is queued at once.")
            st.radio("Policy", POLICIES, key="bs_policy", horizontal=True,
                     on_change=_apply, args=("policy", "bs_policy"),
                     disabled=not info.batchable or remote is not None or held is not None,
                     format_func=policy_label,
                     help="deadline: the wait starts when the oldest request of the batch "
                          "arrived (Triton, TF Serving, Ray Serve). fixed window: a free-running "
                          "timer restarted after each flush. adaptive: learns t(n) = a + b·n and "
                          "the arrival rate, and waits (up to max wait) only while the next "
                          "request is expected sooner than a run's fixed cost. AIMD (Clipper): "
                          "a batch-size cap that grows by a row after each full batch whose run "
                          "meets the latency objective and shrinks by 10 % after a miss. Any policy "
                          "module in core/policies/ appears here.")
            number_box(st, "Latency SLO (ms; adaptive and AIMD; empty = none)", "bs_slo",
                       0.001, 86_400_000.0, value=None, on_change=_apply,   # (the engine's)
                            args=("latency_slo_ms", "bs_slo"),
                            disabled=not uses_slo(cfg.policy) or not info.batchable
                            or remote is not None or held is not None,
                            help="adaptive: requests that can no longer finish within it are "
                                 "shed with SLOShedError instead of making everyone behind "
                                 "them late. AIMD: the objective a batch's run must meet "
                                 "for its cap to grow (empty: 10 ms); it sheds nothing.")
            st.number_input(f"Instances (batches running at once, 1 to {MAX_INSTANCES})",
                            None, None, step=1,
                            key="bs_instances", on_change=_apply,
                            args=("instances", "bs_instances"),
                            disabled=remote is not None or held is not None,
                            help="Triton's instance_group count. 2 lets one batch compute while "
                                 "the next forms, on another core: more throughput under "
                                 "steady open-loop load, but a closed loop of about two "
                                 "batches' worth of clients gets slower (both batches run and "
                                 "settle in step). Measure it here.")
        policy_live()
        if said := st.session_state.pop("bs_error", None):
            st.error(said)

    with st.container(border=True):
        st.subheader("Traffic", anchor=False)
        st.caption(sends_caption(engine, model))
        cls = st.segmented_control(
            "Class", list(TRAFFIC_CLASSES), key="traffic_class",
            required=True, disabled=remote is not None and server_fixed,
            help="one stream: one generator (a share of it high-priority, below). high / "
                 "normal class: a generator sending only that class, at its own rate and "
                 "arrivals, beside the other class's: start one, switch, start the other.")
        follow_traffic_rate(engine, model, "traffic_rate", 200,
                            TRAFFIC_CLASSES[cls or "one stream"], rows_key="traffic_rows")
        rate_input("traffic_rate")
        st.segmented_control("Arrivals", ARRIVAL_PATTERNS,
                             key="traffic_pattern", required=True,
                             help="constant: evenly spaced. poisson: random gaps, as from "
                                  "many independent clients.")
        # (bounded by the model's max batch size, said before Start: 16 rows at max 8 was
        # refused request by request, 100 % errors, after Start; a newcomer)
        most_rows = min(64, int(cfg.max_batch_size))
        number_box(st, "Rows per request", "traffic_rows", 1, most_rows, step=1,
                   disabled=info.batch_mode == "exact",
                   words=lambda v: (f"{v:g} rows is over max_batch_size={cfg.max_batch_size},"
                                    " the most rows a request may have"
                                    if v > cfg.max_batch_size else f"{v:g} cannot be used"))
        number_box(st, "Run for (s, 0 = until stopped)", "traffic_duration", 0, 3600, step=1,
                   help="The traffic stops this long after it starts; a sender that fell "
                        "behind its schedule stops then too (about half a second later), "
                        "leaving the rest of the schedule unsent.")
        number_box(st, "High-priority share (%; 0 = no priorities)", "traffic_high", 0, 100,
                   step=1,
                        disabled=(remote is not None and server_fixed)
                        or TRAFFIC_CLASSES[cls or "one stream"] is not None,
                        help="That share of the requests is sent with priority=1 (the high "
                             "class: served first, refused last), the rest with priority=2. "
                             "Under Poisson arrivals these are two independent streams. "
                             "Each class's figures appear below the tiles.")
        agents_controls("traffic", narrow=True)
        pending_traffic(engine, model, "traffic_rate", TRAFFIC_CLASSES[cls or "one stream"],
                        "traffic_rows")
        # (a row that wraps: two columns cut both labels to "St..." at 1024 px; a newcomer)
        b1 = b2 = st.container(horizontal=True)
        # Actions run as on_click callbacks: they run before the rerun starts, so a click
        # is never lost when a live fragment's timer interrupts the script.
        b1.button("Start traffic", key="traffic_start", type="primary", on_click=_start_traffic)
        b2.button("Stop traffic", key="traffic_stop", on_click=engine.stop_traffic,
                  args=(model,), help="Stops every generator of this model (each class's).")
        if "traffic_error" in st.session_state:
            st.error(st.session_state.pop("traffic_error"))
        if "traffic_replaced" in st.session_state:   # (no icon: the column is narrow, and
            st.info(st.session_state.pop("traffic_replaced"))   # it took a word a line)
        traffic_status()


def tiles_window() -> tuple[float, str, str]:
    """The seconds the tiles and the batch-size histogram cover, their words and the
    histogram's title: the last ``WINDOW_S``, or since the settings last changed when that
    was within it (ten seconds after a change to 256 / 50 ms, 30 s of tiles were mostly the
    old settings'; and the histogram kept the old batches beside tiles that had moved on;
    newcomers)."""
    changed = last_settings_change(engine, model, WINDOW_S)
    if changed is None:
        return float(WINDOW_S), f"the last {WINDOW_S} seconds", f"Batch sizes, last {WINDOW_S} s"
    since, clock = changed
    return max(1.0, since), f"since the settings changed at {clock}", f"Batch sizes since {clock}"


@live_fragment(interval)
def live_tiles() -> None:
    """The numbers, every ``interval`` (cheap to draw)."""
    if paused_for_measurement(engine, interval, here="Batching"):
        return
    window_s, over, _ = tiles_window()
    snap = engine.metrics(model, window_s=window_s)  # follows the settings: recent seconds
    served = snap.success_count > 0
    st.caption(over.upper().removeprefix("THE "))
    # Tiles in a row that wraps, each as wide as its figure (four columns read
    # "Throu... 35..." at 1024 px; a newcomer)
    m = [st.container(horizontal=True)] * 4
    tile = "content"
    m[0].metric("Throughput now", fmt_rate(snap.throughput_rps),
                help="Requests served per second, mean of the last 5 full seconds.", width=tile)
    m[1].metric("p50", fmt_ms(snap.p50_ms) if served else "-",
                help=f"Over {over}.", width=tile)
    m[2].metric("p99", fmt_ms(snap.p99_ms) if served else "-",
                help=f"Over {over}.", width=tile)
    if remote is None:
        m[3].metric("Mean batch", f"{snap.avg_batch_rows:.1f}" if snap.batches else "-",
                    help=f"Rows per batch over {over}, so it follows the settings; the "
                         "Monitor page has the totals since the last reset.", width=tile)
    else:
        m[3].metric("Rows/request", f"{snap.avg_batch_rows:.1f}" if snap.batches else "-",
                    help="A remote model's requests are sent one by one as they come; the "
                         "server's batches are not visible to a client.", width=tile)
    classes = class_table(engine.class_metrics(model, window_s=WINDOW_S))
    if classes:
        unclassed = snap.total_requests - sum(r["requests"] for r in classes)
        st.caption(f"PRIORITY CLASSES, LAST {WINDOW_S} SECONDS: the high class is served first and "
                   "refused last; the normal class absorbs an overload"
                   + (f". {fmt_num(unclassed)} requests sent without a class (one stream) are "
                      "in neither row" if unclassed > 0 else ""))
        # a row per figure, a column per class (a row per class cut p50 and p99 off at
        # 1024 px; a newcomer)
        st.dataframe(pd.DataFrame(
            {r["class"]: [fmt_num(r["requests"]), fmt_num(r["served"]), fmt_num(r["refused"]),
                          fmt_num(r["other errors"]), fmt_ms(r["p50_ms"]),
                          fmt_ms(r["p99_ms"])] for r in classes},
            index=pd.Index(["requests", "served", "refused at once", "other errors", "p50",
                            "p99"], name="figure")), key="bs_classes")
        # (compared only when both rows have answers: a verdict beside "0 / None" came from
        # samples older than the table's window; a newcomer)
        both = len(classes) == 2 and all(r["served"] for r in classes)
        comparison = engine.class_comparison(model) if both else None
        if comparison is not None:
            st.caption(comparison["verdict"])
        elif len(classes) == 2:
            st.caption(f"A class had no answers in the last {WINDOW_S} s: nothing to compare.")
    stop_when_idle(engine, interval)


chart_interval = chart_refresh(interval)


@live_fragment(chart_interval)
def live_charts() -> None:
    """The charts, every ``chart_interval``: a redraw costs the browser far more."""
    if measuring_job(engine) is not None:
        return
    # (the histogram's window is the tiles'; the series is whole)
    window_s, over, hist_title = tiles_window()
    snap = engine.metrics(model, window_s=window_s)
    cur = engine.batch_config(model)
    ts = snap.timeseries
    st.plotly_chart(charts.latency_figure(   # (not "the Batching page's": this is it)
        ts, empty_note="no requests in this window: start traffic in the Traffic box"),
        key="bs_latency_chart")
    c1, c2 = st.columns(2)
    with c1:
        st.plotly_chart(charts.throughput_figure(ts), key="bs_throughput_chart")
    with c2:
        if remote is None:
            st.plotly_chart(charts.batch_size_figure(
                snap.batch_sizes, cur.max_batch_size if info.batchable else None,
                # (short: the words went under the chart's toolbar; the caption says why)
                title=hist_title), key="bs_batch_chart")
        else:
            st.plotly_chart(charts.queue_compute_figure(
                ts, title="Before sending vs round trip",
                names=("before sending", "round trip")), key="bs_batch_chart")
    if remote is None:
        # (the requests it draws, not the second's thousands: looking must not load it)
        st.plotly_chart(charts.timeline_figure(
            engine.timeline(model, last_s=1.0, limit=charts.MAX_DRAWN), cur.max_wait_ms,
            cut=True), key="bs_timeline")
        # (a model whose requests run alone was described by batch settings it ignores; a
        # newcomer)
        st.caption((f"Live: max_batch_size={cur.max_batch_size}, "
                    f"max_wait_ms={cur.max_wait_ms:g}, policy={cur.policy}. A grey bar longer "
                    "than max wait is a batch that left on time and waited for the model to "
                    "finish the one before (each instance runs one batch at a time)."
                    if info.batchable else f"Live: {model}'s requests run alone, each as soon "
                    "as the one before it is done (at most "
                    f"{cur.max_batch_size} rows a request); a grey bar is a request waiting "
                    "for that.") + " Tiles and the "
                   f"histogram cover {over if over.startswith('the') else 'the time ' + over}; "
                   "charts show the last minute. "
                   f"Queued now: {fmt_num(snap.queue_depth)}.")
    else:
        st.plotly_chart(charts.timeline_figure(
            engine.timeline(model, last_s=1.0, limit=charts.MAX_DRAWN), None, cut=True,
            title="Requests in the last second (each sent alone; the server batches)"),
            key="bs_timeline")
        st.caption(f"Remote: each request goes to {remote.url} as it comes; grey is the "
                   "time before it was sent, blue the round trip. Tiles cover the last "
                   f"{WINDOW_S} s; charts show the last minute. Waiting for a connection "
                   f"now: {fmt_num(snap.queue_depth)}.")


with live:
    live_tiles()
    live_charts()


# -- replay: the same arrivals under each policy ---------------------------------------------
if remote is not None:
    st.stop()  # replaying under Batchlab's policies means nothing for a server's batching
if not info.batchable:   # (every policy would run each request alone: one answer five times)
    st.caption(f"The replay of the same traffic under each batching policy is not offered "
               f"for {model}: its requests run alone whatever the policy.")
    st.stop()

with st.container(border=True):
    st.subheader("Same traffic, every policy", anchor=False)
    st.caption(f"Records the arrivals of the last 2 seconds (or takes them from a file) and "
               f"sends exactly those arrivals again under each policy "
               f"({', '.join(map(policy_label, POLICIES))}), on the engine, one after the "
               "other, to a warmed private copy of this model with its max batch size and max "
               "wait (live traffic does not mix into its batches). The arrivals are those the "
               "engine saw: a generator that fell behind on a busy machine sends its late "
               "requests at once, and the replay sends that burst too. Goodput counts the "
               "requests answered within the SLO below. The timelines below are those runs.")
    replay_job = job_progress(engine, "replay", model, key="bs_replay_job")
    replay_busy = replay_job is not None and not replay_job.finished
    # (said in words past its bounds: 0 was outlined red and not taken, unsaid; a newcomer)
    number_box(st, "SLO for goodput (ms)", "bs_replay_slo", 0.1, 600_000.0,
               help="A request counts towards a policy's goodput if it was answered "
                    "within this long of its (recorded) arrival.")
    slo_refused = box_refusal("bs_replay_slo", "The SLO for goodput")
    agents = agents_controls("bs_replay", what="Replay")
    running_note = replay_traffic_warning(engine)
    if running_note:
        st.warning(running_note, icon=":material/warning:")
    lag_ms, burst = catch_up(engine, model)
    if late := lag_note(model, lag_ms, burst):
        st.warning(late, icon=":material/schedule:")
    stop_first = st.toggle("Stop the traffic when the replay starts",
                           key="bs_replay_stop_traffic", disabled=not running_note,
                           help="Every built-in generator on this engine, stopped by the "
                                "replay as it starts (after the last 2 s of arrivals are "
                                "recorded): it then has the cores to itself. Start the "
                                "traffic again after.")
    quiet = {"quiet": True} if running_note and stop_first else {}

    r1, r2 = st.columns(2)
    if r1.button("Replay the last 2 s under each policy", key="bs_replay",
                 disabled=replay_busy):
        recorded = engine.timeline(model, last_s=2.0).dropna(subset=["arrived_s"])
        arrivals = recorded["arrived_s"].tolist()
        if slo_refused:
            st.error(f"Not replayed: {slo_refused}.")
        elif not arrivals:
            st.warning("No requests in the last 2 seconds: start traffic first.")
        else:   # (each with its rows: 4-row requests were replayed as 1-row; a newcomer)
            span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
            # (past ~10,000 req/s the trace holds less than 2 s, unsaid; an adversary)
            st.session_state["bs_replay_short"] = (
                f"The trace keeps a model's last {len(arrivals):,} requests: {span:.2f} s of "
                "the 2 s at that rate, which is what was replayed." if
                len(arrivals) >= engine.config.trace_requests and span < 1.9 else None)
            start_job(engine, "replay", model, "Could not replay", arrivals_s=arrivals,
                      rows_per_request=[int(r) for r in recorded["rows"]],
                      slo_ms=float(st.session_state["bs_replay_slo"]), **agents, **quiet,
                      recorded_lag_ms=lag_ms, recorded_burst=burst)
    def saved() -> str:   # (each with its rows: a file replayed 4-row requests as 1-row)
        recorded = engine.timeline(model, last_s=2.0).dropna(subset=["arrived_s"])
        return arrivals_to_csv(recorded["arrived_s"], recorded["rows"])
    r2.download_button(
        "Save the last 2 s of arrivals (CSV)", saved,
        file_name=f"batchlab-{model}-arrivals.csv", mime="text/csv", key="bs_save_arrivals",
        on_click="ignore", icon=":material/download:",
        help="A file to replay later (or on another model or machine): columns "
             "arrived_s, seconds from the first arrival, and rows, each request's rows.")
    with st.expander("Replay arrivals from a file"):
        up = st.file_uploader("A CSV with a column arrived_s (seconds; one row per arrival) "
                              "and, optionally, rows (each request's rows; else 1)",
                              type=["csv"], key="bs_arrivals_file")
        if up is not None:
            read = st.session_state.get("_bs_arrivals_read")
            if read is None or read[0] != up.file_id:   # (read once per upload, not per rerun)
                notes: list[str] = []
                try:
                    read = (up.file_id, read_arrivals_csv(up.getvalue(), notes), None, notes)
                except ValueError as err:
                    read = (up.file_id, None, str(err), notes)
                st.session_state["_bs_arrivals_read"] = read
            if read[2] is not None:
                st.error(f"Cannot replay {up.name}: {read[2]}")
            else:
                arrivals, file_rows = read[1]
                rate = (f" ({len(arrivals) / arrivals[-1]:,.0f} req/s on average)"
                        if len(arrivals) > 1 and arrivals[-1] > 0 else "")
                each = (f", {sum(file_rows) / len(file_rows):.2f} rows each on average"
                        if file_rows else ", one row each (the file has no rows column)")
                span = (f"{arrivals[-1]:.2f} s" if arrivals[-1] >= 1 else
                        f"{arrivals[-1] * 1e3:.3g} ms")   # (was "over 0.00 s"; a newcomer)
                st.caption(f"{len(arrivals):,} arrivals over {span}{rate}"
                           f"{each}; each policy replays all of them."
                           + "".join(f" {n[0].upper()}{n[1:]}." for n in read[3]))
                # (accepted here, then the replay failed naming engine.configure; a newcomer)
                too_big = max(file_rows or [1]) > cfg.max_batch_size
                if too_big:
                    st.error(f"The file has requests of up to {max(file_rows):,} rows; "
                             f"{model} takes at most {cfg.max_batch_size} rows a request now "
                             "(Max batch size, above): raise it to replay this file.")
                if st.button("Replay this file under each policy", key="bs_replay_file",
                             disabled=replay_busy or too_big):
                    if slo_refused:
                        st.error(f"Not replayed: {slo_refused}.")
                    else:
                        start_job(engine, "replay", model, "Could not replay",
                                  arrivals_s=arrivals, rows_per_request=file_rows,
                                  slo_ms=float(st.session_state["bs_replay_slo"]),
                                  **agents, **quiet)
    cur_cfg = engine.batch_config(model)
    if replay_job is not None and replay_job.state == "done" and replay_job.result:
        summary = replay_job.result["summary"]
        if len(hit := disturbed_rows(summary)):   # (the verdict itself qualified: it named
            # a winner above a warning that every run was disturbed; a newcomer)
            st.warning(replay_verdict(summary) + " **Caution**: not every policy ran "
                       "undisturbed, so the figures may not compare: "
                       + "; ".join(f"{r.policy}: {r.disturbed}" for r in hit.itertuples())
                       + ". Stop other work or traffic and replay again.",
                       icon=":material/warning:")
        else:
            st.markdown(replay_verdict(summary))
        # (the settings it ran with, not today's: its charts read "max wait 50 ms" after
        # the slider moved; a replay during a sweep ran the sweep's point; an adversary)
        ran_wait = replay_job.result.get("max_wait_ms", cur_cfg.max_wait_ms)
        if "max_batch_size" in replay_job.result:
            sent = (f", {int(summary['requests'].max()):,} requests to each policy"
                    if "requests" in summary and len(summary) else "")
            st.caption(f"Replayed with max_batch_size={replay_job.result['max_batch_size']} "
                       f"and max_wait_ms={ran_wait:g}{sent}."
                       + (f" {short}" if (short := st.session_state.get("bs_replay_short"))
                          else ""))
        if cold := replay_job.result.get("cold"):
            st.warning(f"The first policy's figures include cold runs: {cold}.",
                       icon=":material/ac_unit:")
        if cut := replay_job.result.get("timeline_note"):
            st.caption(f"Below, {cut}.")
        if late := lag_note(model, replay_job.result.get("recorded_lag_ms", 0.0),
                            replay_job.result.get("recorded_burst", 0), recorded=True):
            st.warning(late, icon=":material/schedule:")
        if stopped := replay_job.result.get("traffic_stopped"):
            st.caption(f"This replay stopped the traffic running when it started "
                       f"({', '.join(stopped)}): start it again in the Traffic box "
                       "(or on the A/B test page) when you want it back.")
        # what the verdict ranks by first (at 1024 px "within SLO" was past the edge; a
        # newcomer); the SLO is said once in the verdict, the batches beside mean batch
        st.dataframe(summary, hide_index=True, key="bs_replay_table", column_order=[
            "policy", "within_slo", "p99_ms", "p50_ms", "goodput_rps", "mean_batch_rows",
            "batches"], column_config={   # (requests: said above; "batches" was cut)
            c: st.column_config.NumberColumn(c[:3], format="%.2f ms") for c in ("p50_ms", "p99_ms")}
            | {"mean_batch_rows": st.column_config.NumberColumn("mean batch", format="%.1f"),
               "slo_ms": st.column_config.NumberColumn("SLO", format="%g ms"),
               "within_slo": st.column_config.NumberColumn("within SLO", format="percent"),
               "goodput_rps": st.column_config.NumberColumn("goodput", format="%.0f req/s")})
        timelines = replay_job.result["timelines"]
        # one view for all policies (side by side or on one time axis), so they compare
        lined_up = charts.timeline_lines_up(timelines[summary["policy"].iloc[0]])
        figs = share_x_range([charts.timeline_figure(
            timelines[row.policy], ran_wait, aligned=lined_up,
            title=f"{row.policy}: p50 {fmt_ms(row.p50_ms)}, p99 {fmt_ms(row.p99_ms)}, "
                  f"mean batch {row.mean_batch_rows:.1f}") for row in summary.itertuples()])
        for row, fig in zip(summary.itertuples(), figs):   # (one x scale: they compare)
            st.plotly_chart(fig, key=f"bs_replay_{row.policy}")

