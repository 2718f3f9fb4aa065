"""Experiments: sweep batch size x wait x load, pick settings for an SLO, what-if, history."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import POLICIES, BatchlabError
from core.policies import policy_short_label
from core.ui import charts
from core.ui.fmt import (SEARCH_TABLE_LABELS, SWEEP_TABLE_LABELS, history_caption,
                         run_config_words, sweep_table_columns)
from core.ui.sweeps import sweep_caption, sweep_cut_words, sweep_params_of
from core.ui.report import sweep_report
from core.ui.search import search_figure
from core.ui.traffic import cores_warning, sends_caption, traffic_warning
from core.ui.whatif import whatif_accuracy, whatif_ceiling_caveat, whatif_work_words
from core.lab import (WHAT_IF_REFUSED, check_clients, check_rates, disturbed_rows, kserve_inference_service, kserve_name, mlserver_settings,
                              ray_serve_config, pareto_frontier, provenance, recommend, simulate, tf_serving_batching,
                              triton_config, what_if_curve)
from pages._common import (agents_controls, box_refusal, number_box, keep_values, own_settings, fmt_ms, get_engine, job_progress, number_columns,
                           pick_model, start_job)

engine = get_engine()
store = engine.store  # the engine's history: sweeps save there, whoever started them

st.title("Experiments", anchor=False)
st.caption("Measure how max batch size and max wait trade latency for throughput on a "
           "model, find the settings that serve the most within a p99 target, predict "
           "other settings before applying them, and export the choice to a production "
           "server.")

model = pick_model("Model", "exp_model", engine, default="mlp")
if model is None:
    st.stop()
keep_values({"exp_batch_sizes": [8, 32], "exp_waits": [0.0, 2.0],
             "exp_load_kind": "rate (open loop)", "exp_loads": "500, 2000", "exp_duration": 2.0,
             "exp_slo": 10.0, "exp_policy": "deadline", "exp_quick": False, "exp_threads": [],
             "exp_min_tput": None, "exp_max_mem": None})
for _job in engine.jobs(kind="search", target=model):
    # (a reload forgot the toggle: the running search, its progress and Cancel were hidden
    # behind the grid's form; a newcomer). Shown once a search: the toggle stays the
    # user's to turn off while it runs.
    if not _job.finished and f"_exp_quick_shown_{_job.job_id}" not in st.session_state:
        st.session_state[f"_exp_quick_shown_{_job.job_id}"] = True
        st.session_state["exp_quick"] = True
info = engine.model_info(model)
if not info.batchable:
    st.warning(f"{model} is not batchable ({info.batch_reason}): batch settings have no "
               "effect on it.")

def _slo_of(frame: pd.DataFrame) -> float | None:
    """The latency SLO a sweep's points were measured with (its policy's), if any."""
    slo = frame["latency_slo_ms"].iloc[0] if "latency_slo_ms" in frame and len(frame) else None
    return None if slo is None or pd.isna(slo) else float(slo)


def report_button(run: dict, slo_ms: float | None, key: str) -> None:
    """Download the run's self-contained HTML report (made when clicked); ``slo_ms`` None:
    the target the run was measured at (its goodput was counted within that one)."""
    def make() -> str:
        try:
            memory = engine.memory_profile(run["config"].get("model", model))
        except BatchlabError:
            memory = None
        return sweep_report(run, slo_ms=slo_ms, memory=memory)

    st.download_button("HTML report", make, file_name=f"batchlab-run-{run['id']}.html",
                       mime="text/html", key=key, icon=":material/description:",
                       on_click="ignore",
                       help="One file to share: the answer, what was pinned, the curves, "
                            "the table with stability marks and the machine; opens offline.")


# -- sweep ----------------------------------------------------------------------------------------
with st.container(border=True):
    st.subheader("Sweep", anchor=False)
    c1, c2, c3 = st.columns(3)
    remote = engine.remote_info(model)
    if remote is not None and not remote.configurable:
        # The server's settings cannot be changed from here: sweep its load only.
        cfg = engine.batch_config(model)
        st.info(f"{model} is served by {remote.server} at {remote.url}, whose batch "
                "settings Batchlab cannot change: the sweep measures its load at its own "
                f"settings ({remote.source}).", icon=":material/cloud:")
        known = remote.batching.max_batch_size is not None
        sizes, waits = ([cfg.max_batch_size], [cfg.max_wait_ms]) if known else ([], [])
        if not known:
            st.warning("The server does not report its batch settings, so a sweep could not "
                       "say which settings it measured: add the model again with them "
                       "(Models page, 'When the server does not report everything').")
        c1.metric("Max batch size", cfg.max_batch_size if remote.batching.max_batch_size
                  is not None else "server's")
        c2.metric("Max wait", f"{cfg.max_wait_ms:g} ms" if remote.batching.max_wait_ms
                  is not None else "server's")
    else:
        sizes = c1.multiselect("Max batch sizes", [1, 2, 4, 8, 16, 32, 64, 128],
                               key="exp_batch_sizes")
        # (shown as 0, 2: "0.0", "2.0" cut the second chip at 1024 px; a newcomer)
        waits = c2.multiselect("Max waits (ms)", [0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0],
                               key="exp_waits", format_func=lambda w: f"{w:g}")
    kind = c3.radio("Load", ["rate (open loop)", "clients (closed loop)"], key="exp_load_kind")
    c4, c5, c6 = st.columns(3)
    loads_text = c4.text_input("Loads (comma-separated)", key="exp_loads",
                               help="Requests/s for open loop, or numbers of clients.")
    duration = c5.slider("Seconds per point", 0.5, 10.0, step=0.5, key="exp_duration")
    slo = number_box(c6, "p99 target (ms)", "exp_slo", 0.1, 10_000.0, format="%g")
    slo_ok = box_refusal("exp_slo", "p99 target") is None
    if not slo_ok:   # (what was done with it: the last target that could be used)
        slo = st.session_state.get("_exp_slo_used", 10.0)
    st.session_state["_exp_slo_used"] = slo
    try:
        loads = [float(v) for v in loads_text.replace(";", ",").split(",") if v.strip()]
        if not loads or any(v <= 0 for v in loads):
            raise ValueError
    except ValueError:
        loads = []
        st.error("Loads must be positive numbers separated by commas, e.g. 500, 2000.")
    if loads:
        try:   # (the sweep's own rules, said before the button)
            if kind.startswith("rate"):      # (statements: a bare expression's value
                check_rates(loads, duration, True,     # is drawn by Streamlit's magic)
                            1e7 if st.session_state.get("exp_agents") else 1e6)  # (agents)
            else:
                check_clients(loads)
        except BatchlabError as err:
            st.error(str(err))
            loads = []
    st.caption(sends_caption(engine, model, "Each point sends"))
    pinned_ok = remote is None
    sweep_policy = st.segmented_control(
        "Policy (pinned for every point)", POLICIES, key="exp_policy",
        required=True, disabled=not pinned_ok, format_func=policy_short_label,
        help="Each point is measured under this release policy, with no latency SLO and one "
             "instance, whatever the model has now; the model's own settings come back "
             "afterwards.") if pinned_ok else None
    own_cfg = own_settings(engine, model)
    own_in_grid = (own_cfg.max_batch_size in sizes
                   and float(own_cfg.max_wait_ms) in [float(w) for w in waits])
    n_points = len(sizes) * len(waits) * len(loads)
    n_run = n_points + (0 if own_in_grid or not n_points else len(loads))
    runs = getattr(own_cfg, "policy", None)   # (a running job's record has none)
    own_policy = (f", under {sweep_policy} as every point (the model runs {runs})"
                  if sweep_policy and runs and runs != sweep_policy else "")
    own_words = f"{own_cfg.max_batch_size} / {own_cfg.max_wait_ms:g} ms{own_policy}"
    with_own = (f" (the model's own settings, {own_words}, are among them)"
                if own_in_grid and own_policy else "" if n_run == n_points else
                f" (with the model's own settings, {own_words}, at each load, to compare with)")
    if not n_run:   # (it said "0 points, at least 0 s" under the error; a newcomer)
        st.caption("No points to measure: choose at least one batch size and one wait, "
                   "and give loads the sweep takes.")
    else:
        st.caption(f"{n_run} points{with_own}"
                   f", usually {n_run * (duration + 0.5):.0f}-"
                   f"{n_run * (10 * duration / 3 + 0.5):.0f} s (the longer where no point "
                   "settles; outliers are measured again, and a busy machine is slower): "
                   "each point "
                   f"is measured in windows of {duration / 3:.2g} s until the last three "
                   "agree within 10 % on throughput and p99 (up to 10 windows; otherwise it "
                   f"is marked unstable). The sweep sets {model}'s settings while it runs "
                   "(every tab sees that; changes from elsewhere are refused until it ends) "
                   "and restores them at the end.")
    for busy in (traffic_warning(engine, model), cores_warning(engine, model)):
        if busy:
            st.warning(busy, icon=":material/warning:")
    quick = pinned_ok and st.toggle(
        "Quick search instead of the whole grid", key="exp_quick",
        help="A hill-climb from the model's own settings over the batch sizes, waits and "
             "ONNX Runtime threads chosen here: it measures a setting's neighbours, moves to "
             "the one with the most goodput within the p99 target, and stops when none "
             "does better; each setting climbs the loads (open loop) and stops at its first "
             "miss. Typically a fraction of the grid's points.")
    if quick:
        q1, q2, q3 = st.columns(3)
        threads = q1.multiselect("ONNX Runtime threads", list(range(1, 9)),
                                 key="exp_threads", placeholder="the model's own",
                                 help="Intra-op threads to try (each a hot swap of the model "
                                      "with those session options; its own come back after). "
                                      "Empty: only the model's own.")
        min_tput = number_box(q2, "Minimum goodput (req/s, optional)", "exp_min_tput", 0.0,
                              1e7, value=None, format="%g",
                                   help="A setting that cannot serve this many requests per "
                                        "second within the p99 target does not count.")
        max_mem = number_box(q3, "Max memory per setting (MiB, optional)", "exp_max_mem",
                             1.0, 1e6, value=None, format="%g",
                                  help="Batch sizes whose peak memory (measured once, in a "
                                       "child process) is above this are never tried.")
        grid_n = len(sizes) * len(waits) * max(1, len(threads)) * len(loads)
        st.caption(f"The grid would be {grid_n} points; the climb measures a fraction of "
                   "them. Loads are requests/s (open loop), climbed from the lowest.")
        search_job = job_progress(engine, "search", model, key="exp_search_job")
        busy = search_job is not None and not search_job.finished
        if st.button("Run quick search", key="exp_run_search", type="primary",
                     # (not disabled while one runs: a click from a second tab as the
                     # first starts one is then refused in words, not dropped unsaid)
                     disabled=grid_n == 0 or not kind.startswith("rate") or not slo_ok
                     # (red boxes ran anyway: max memory 0.5 MiB; a reviewer)
                     or any(box_refusal(k, k, empty_ok=True)
                            for k in ("exp_min_tput", "exp_max_mem")),
                     help="Open-loop loads only." if not kind.startswith("rate") else
                     "Runs in the engine: it goes on if you leave this page."
                     + (" One is running now: another cannot start." if busy else "")):
            start_job(engine, "search", model, "The quick search could not start",
                      max_batch_sizes=[int(v) for v in sizes],
                      max_waits_ms=[float(v) for v in waits], rates_rps=loads,
                      p99_ms=float(slo), duration_s=float(duration),
                      session_threads=[int(t) for t in threads] or None,
                      min_throughput_rps=None if min_tput is None else float(min_tput),
                      max_memory_mib=None if max_mem is None else float(max_mem),
                      policy=sweep_policy or "deadline")
        if search_job is not None and search_job.finished and search_job.result:
            r = search_job.result
            frame_r = r.get("frame")
            if frame_r is not None and not isinstance(frame_r, pd.DataFrame):
                frame_r = pd.DataFrame(frame_r)   # (over HTTP: records)
            hit = frame_r is not None and len(disturbed_rows(frame_r)) > 0
            # (green beside "search again before relying on them"; the sweep's is a warning)
            (st.success if r["best"] and not hit else st.warning)(r["reason"])
            saved = None
            if r.get("run_id"):
                try:
                    saved = store.get(r["run_id"])
                except KeyError:  # deleted from the history meanwhile
                    pass
            st.caption(f"Measured {r['points']} of the grid's {r['grid_points']} points "
                       f"({100 * r['points'] / max(1, r['grid_points']):.0f} %), "
                       f"{r['measured_s']:.0f} s of measurement. "
                       + (f"Saved to the history as run {r['run_id']}." if saved is not None
                          else f"Run {r['run_id']} has since been deleted from the history."
                          if r.get("run_id") else "Saved to the history."))
            st.plotly_chart(search_figure(r["scores"], r["path"], r["best"]),
                            key="exp_search_chart")
            st.dataframe(r["scores"], hide_index=True, key="exp_search_table",
                         column_config=number_columns(r["scores"], SEARCH_TABLE_LABELS))
            if saved is not None:
                report_button(saved, None, "exp_search_report")
            for setting, why in r.get("excluded", {}).items():
                st.caption(f"Not tried: {setting} (batch/wait/threads): {why}")
            if r["best"]:
                b, w, t = r["best"]
                searched = (search_job.params or {}).get("policy") or "deadline"
                threads_note = (f" The search's {t} ONNX Runtime thread(s) are a session "
                                "option: set them on the Models page." if t is not None else "")
                if st.button("Apply the search's answer", key="exp_apply_search",
                             help="Sets its max batch size and max wait, and the policy it "
                                  "measured under." + threads_note):
                    try:
                        engine.configure(model, max_batch_size=int(b), max_wait_ms=float(w),
                                         **({"policy": searched} if remote is None else {}))
                    except BatchlabError as err:
                        st.error(f"Could not apply it: {err}")
                    else:
                        st.toast(f"{model}: max_batch_size={int(b)}, max_wait_ms={float(w):g}, "
                                 f"policy={searched}." + threads_note)
    agents = {} if quick else agents_controls("exp")
    job = job_progress(engine, "sweep", model, key="exp_job")
    running = job is not None and not job.finished
    if not quick and st.button("Run sweep", key="exp_run", type="primary",
                               disabled=n_points == 0 or not slo_ok,   # (running: refused
                               # in words)
                 help="Runs in the engine: it goes on if you leave this page, and every tab "
                      "sees its progress." if not running else "A sweep of this model is "
                      "running."):
        rate = kind.startswith("rate")
        start_job(engine, "sweep", model, "The sweep could not start",
                  max_batch_sizes=[int(v) for v in sizes], max_waits_ms=[float(v) for v in waits],
                  rates_rps=loads if rate else None,
                  concurrencies=None if rate else [int(v) for v in loads],
                  duration_s=float(duration), slo_p99_ms=float(slo), **agents,
                  **({"policy": sweep_policy} if sweep_policy else {}))

# The latest finished sweep of this model (any tab's), saved to the history by the engine;
# or a run of it opened from the history below, until a newer sweep finishes.
result = None
if job is not None and job.finished and job.result and job.result.get("run_id"):
    result = (model, job.result["run_id"])
opened = st.session_state.get("exp_open_run")   # (run id, its model, the latest sweep then)
# (until a newer sweep *finishes*: one starting hid it, as a running job has no result; a
# reviewer)
from_history = bool(opened and opened[1] == model
                    and (result is None and opened[2] is None
                         or job is not None and not job.finished
                         or result is not None and opened[2] == result[1]))
if from_history:
    result = (model, opened[0])
if result and result[0] == model:
    try:
        run = store.get(result[1])
    except KeyError:
        run = None
    if run is None:   # (its "cancelled; saved" caption stayed, the table gone; a newcomer)
        st.caption(f"The {'run opened' if from_history else 'last sweep'} of {model}, run "
                   f"{result[1]}, has since been deleted from the history.")
    elif not from_history and job.state == "cancelled":
        st.caption("The sweep was cancelled; the points it finished were saved.")
    if run is not None:
        frame = run["results"]
        if from_history:   # (a past run's answer, Apply and exports after a restart)
            st.subheader(f"Run {result[1]} of {model}, from the history", anchor=False)
            st.caption(f"Saved {pd.Timestamp(run['created'], unit='s'):%Y-%m-%d %H:%M:%S}. "
                       f"The newest sweep of "
                       f"{model} takes its place here when one finishes.")
        elif quick:   # (two answers, each with its Apply, read as one page's; a newcomer)
            st.subheader(f"The last full sweep of {model}", anchor=False)
            st.caption("A grid sweep run before, apart from the quick search above: its "
                       "answer is its own (turn the quick search off to run another).")
        st.caption(sweep_caption(sweep_params_of(run["config"]) if from_history
                                 else job.params, result[1], sizes, waits, loads, float(slo)))
        front = pareto_frontier(frame)
        rec = recommend(frame, float(slo))
        hit = disturbed_rows(frame)
        disturbed = len(hit) > 0
        # (a recommendation from points measured under disturbance is no success)
        cut = sweep_cut_words(run["config"], frame)
        # (a sweep cancelled after 1 of 10 points recommended from it as if whole; a newcomer)
        (st.success if rec.max_batch_size is not None and not disturbed and not cut
         else st.warning)(cut + rec.reason)
        if "stable" in frame and frame["stable"].eq(False).any():
            st.caption(f"{int(frame['stable'].eq(False).sum())} of {len(frame)} points were "
                       "unstable (drawn open; their spreads are in 'Every column' below): "
                       "their windows never "
                       "agreed within 10 %. A quieter machine or longer points settle them.")
        if disturbed:
            st.warning(f"{len(hit)} of {len(frame)} points were measured under disturbance "
                       f"the engine could see (e.g. {hit['disturbed'].iloc[0]}); see the "
                       "disturbed column (drawn open in the chart). Close other work or "
                       "traffic and measure again before relying on them.",
                       icon=":material/warning:")
        st.plotly_chart(charts.pareto_figure(frame, front, float(slo),
                                             (rec.max_batch_size, rec.max_wait_ms)
                                             if rec.max_batch_size else None,
                                             chosen_load=rec.load),
                        key="exp_pareto")
        everything = st.toggle("Every column", key="exp_all_columns",
                               help="The table shows what a person compares; every column "
                                    "(spreads, windows, pinned settings, CPU taken by others) "
                                    "is here, in the CSV of the History and in the report.")
        st.dataframe(frame, hide_index=True, key="exp_table",
                     column_order=sweep_table_columns(frame, everything),
                     column_config=number_columns(frame, SWEEP_TABLE_LABELS))
        report_button(run, None, "exp_report")
        if rec.max_batch_size is not None:
            # one row that wraps, each button as wide as its words (three columns cut
            # "MLServer model-settin..." at 1024 px; a newcomer)
            e1 = e2 = e3 = e4 = e5 = e6 = st.container(horizontal=True)
            where = provenance(frame, rec.max_batch_size, rec.max_wait_ms, float(slo), rec.load,
                               run_id=result[1])
            measured_policy = str(frame["policy"].iloc[0]) if "policy" in frame else None
            if e1.button("Apply to the engine", key="exp_apply",
                         help="Sets the chosen max batch size and max wait, and the policy "
                              "they were measured under."):
                try:
                    engine.configure(model, max_batch_size=rec.max_batch_size,
                                     max_wait_ms=rec.max_wait_ms,
                                     **({"policy": measured_policy} if measured_policy
                                        and remote is None else {}))
                except BatchlabError as err:
                    st.error(f"Could not apply it: {err}")
                else:
                    st.toast(f"{model}: max_batch_size={rec.max_batch_size}, "
                             f"max_wait_ms={rec.max_wait_ms:g}"
                             + (f", policy={measured_policy}" if measured_policy else ""))
            if not info.batchable:   # (a server given batch settings would pack it)
                st.caption(f"No server configurations: {model} runs each request alone, so a "
                           "server must not batch it either (Triton: max_batch_size: 0, no "
                           "dynamic_batching).")
            else:
                threads = (frame["session_threads"].dropna().unique()
                           if "session_threads" in frame else [])
                e2.download_button("Triton config.pbtxt",
                                   triton_config(rec.max_batch_size, rec.max_wait_ms,
                                                 intra_op_threads=int(threads[0])
                                                 if len(threads) == 1 else None, comment=where),
                                   file_name="config.pbtxt", key="export_triton",
                                   help="With the ONNX Runtime thread count it was measured "
                                        "with, and a comment naming everything pinned.")
                e3.download_button("TF Serving batching file",
                                   tf_serving_batching(rec.max_batch_size, rec.max_wait_ms,
                                                       comment=where),
                                   file_name="batching_parameters.txt", key="export_tf")
                if measured_policy not in (None, "deadline"):   # (the JSON file cannot
                    st.warning(                                  # say it; an adversary)
                        f"Measured under Batchlab's {measured_policy} policy: Triton, TF "
                        "Serving, MLServer and KServe batch by the deadline rule (the "
                        "files with comments say so); the Ray Serve file runs "
                        f"{measured_policy} on Batchlab's replicas. Sweep under deadline "
                        "before relying on these numbers on the others.")
                e4.download_button("MLServer model-settings.json",
                                   mlserver_settings(model, rec.max_batch_size, rec.max_wait_ms),
                                   file_name="model-settings.json", key="export_mlserver",
                                   help="Names Batchlab's ONNX runtime for MLServer "
                                        "(core/peers/mlserver_runtime.py); edit `implementation` "
                                        "to use your own.")
                e5.download_button("KServe InferenceService",
                                   kserve_inference_service(kserve_name(model), rec.max_batch_size,
                                                            rec.max_wait_ms, comment=where),
                                   file_name="inference-service.yaml", key="export_kserve",
                                   help="Set storageUri. KServe's batcher batches v1 requests "
                                        "only: ship the Triton or MLServer file with the model.")
                e6.download_button("Ray Serve config",
                                   ray_serve_config(
                                       model, rec.max_batch_size, rec.max_wait_ms,
                                       policy=measured_policy or "deadline",
                                       latency_slo_ms=_slo_of(frame),
                                       comment=provenance(
                                           frame, rec.max_batch_size, rec.max_wait_ms,
                                           float(slo), rec.load, run_id=result[1],
                                           runs_policy=True)),
                                   file_name="serve-config.yaml", key="export_ray",
                                   help="Batchlab engine replicas on Ray Serve (serve deploy); "
                                        "the batch settings are the deployment's user_config, "
                                        "max_ongoing_requests twice max_batch_size.")
                # (JSON has no comments: the runtime it names is said here, not only in a
                # tooltip; a newcomer)
                st.caption("MLServer's file names Batchlab's ONNX runtime: copy "
                           "core/peers/mlserver_runtime.py as batchlab_onnx_runtime.py next "
                           "to it (or put your own runtime in `implementation`). Every "
                           "other file says in its first lines which run chose the "
                           "settings.")

# -- what-if ---------------------------------------------------------------------------------------
WHAT_IF_BATCH_SIZES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
with st.container(border=True):
    st.subheader("What-if", anchor=False)
    st.caption("Profile the model's compute per batch size, fit t(n) = a + b·n, measure the "
               "engine's capacity with bursts of requests, calibrate the per-request "
               "overhead with traffic at two loads, and predict a configuration's latency "
               "and throughput across load before applying it (batching wait, queueing, run, "
               "overhead, and the engine's own work per request past capacity).")
    prof_job = job_progress(engine, "profile_cost", model, key="exp_profile_job")
    if st.button("Profile the model", key="exp_profile",
                 disabled=prof_job is not None and not prof_job.finished,
                 help="Times batch sizes 1..64, fits t(n), measures the capacity with "
                      "bursts of requests at the model's max batch size and a quarter of "
                      "it (telling the engine's work per batch from its work per request), "
                      "then runs traffic at 10 % and 35 % of it to calibrate the overhead "
                      "(about 12 s, in the engine), under what the "
                      "what-if models: the deadline policy, no latency SLO, one instance "
                      "(the model's own settings come back after)."):
        start_job(engine, "profile_cost", model, "Could not profile")
    if prof_job is not None and prof_job.state == "done" and prof_job.result:
        st.session_state["exp_cost"] = (model, prof_job.result["cost"],
                                        prof_job.result["profile"],
                                        prof_job.result.get("disturbed") or [])
    cost_entry = st.session_state.get("exp_cost")
    if cost_entry and cost_entry[0] == model and cost_entry[1] is not None:
        cost = cost_entry[1]
        work = (whatif_work_words(cost) if cost.work_ms(cost.capacity_batch or 1) else
                "engine work per request not measured (the capacity bursts were refused or "
                "failed: see the model's errors on the Monitor page; the ceiling below is "
                "the runs' alone)")
        line = (f"t(n) = {cost.a_ms:.3f} + {cost.b_ms:.4f}·n ms" if cost.a_ms > 0 else
                # (a newcomer read "0.000" as a measured fixed cost of nothing)
                f"t(n) = {cost.b_ms:.4f}·n ms (a run's fixed cost not told apart from zero: "
                "the best line through the runs crossed below zero, so this one starts there)")
        st.caption(f"{line} (R² = {cost.r2:.3f}); "
                   f"{work}; "
                   f"overhead per request {cost.overhead_ms:.3f} ms + "
                   f"{cost.overhead_per_krps_ms:.3f} ms per 1,000 req/s ("
                   + ("not calibrated" if getattr(cost, "overhead_note", "") else
                      "calibrated with traffic; it includes the load generator, as sweeps "
                      "measure") + ")")
        if getattr(cost, "overhead_note", ""):
            st.warning(f"The overhead is not calibrated: {cost.overhead_note}.",
                       icon=":material/warning:")
        if len(cost_entry) > 3 and cost_entry[3]:
            st.warning(f"At batch size(s) {', '.join(map(str, cost_entry[3]))} the profile's "
                       "warm runs took clearly longer than the first: something else had the "
                       "cores (another program, traffic, or a page redrawing its charts), so "
                       "the line is likely too steep. Profile again on a quieter machine, "
                       "with no other page of the dashboard open.", icon=":material/warning:")
        if cost.r2 < 0.9:
            st.warning(f"The line explains {cost.r2:.0%} of how run time varies with batch "
                       "size (R² below 0.9): runs this short are mostly timer noise, or the "
                       "model's cost is not linear in the rows. Read the predictions as rough, "
                       "and check them against a sweep.", icon=":material/warning:")
        w1, w2, w3 = st.columns(3)
        # Starting from the model's own settings; batch sizes on a scale a pointer can hit
        now_cfg = own_settings(engine, model)
        own_bs = int(min(256, max(1, now_cfg.max_batch_size)))
        bs = w1.select_slider("Max batch size", sorted({*WHAT_IF_BATCH_SIZES, own_bs}),
                              own_bs, key="whatif_bs")
        wait = w2.slider("Max wait (ms)", 0.0, 50.0,
                         min(50.0, round(float(now_cfg.max_wait_ms) * 2) / 2), 0.5,
                         key="whatif_wait")
        # (no bounds on the box: a value past one is not taken, and the prediction went on
        # showing the rate before; said below instead)
        rate = w3.number_input("Rate (req/s)", value=2000.0, key="whatif_rate",
                               format="%g")   # (was "20000.00"; a newcomer)
        wi_policy = st.segmented_control(
            "Policy", POLICIES, default="deadline", key="whatif_policy", required=True,
            format_func=policy_short_label,
            help="The what-if models the deadline policy; for the others it says why not "
                 "instead of predicting them as if they were deadline.")
        if wi_policy in WHAT_IF_REFUSED:
            st.warning(f"No prediction for {wi_policy}: {WHAT_IF_REFUSED[wi_policy]}.",
                       icon=":material/block:")
        elif not 1.0 <= rate <= 1_000_000.0:
            st.error(f"No prediction at {rate:g} req/s: give a rate of 1 to 1,000,000.",
                     icon=":material/error:")
        else:
            pred = simulate(cost, bs, wait, float(rate), n_requests=5000)
            capacity = cost.capacity_rps(bs)
            past = float(rate) > capacity
            # two by two: four in a row cut "126 ms +" to "126 …" at 1024 px (a newcomer)
            m = [c for _ in range(2) for c in st.columns(2)]
            m[0].metric("Predicted p50", fmt_ms(pred["p50_ms"]) + (" +" if past else ""))
            m[1].metric("Predicted p99", fmt_ms(pred["p99_ms"]) + (" +" if past else ""))
            m[2].metric("Throughput", f"{pred['throughput_rps']:,.0f}/s")
            # (past capacity it is saturated, whatever the simulation's start and end
            # leave idle: 96 % at 117 times the capacity read as room to spare; a newcomer)
            m[3].metric("Engine busy", "100% +" if past else f"{pred['utilisation']:.0%}",
                        help="The share of time the engine is busy: running batches, or "
                             "its work per request (the µs above), whichever is more. At "
                             "100 % the queue grows: the rate is past this setting's "
                             f"capacity ({capacity:,.0f} req/s at max batch "
                             f"size {bs}).")
            instances = int(getattr(engine.batch_config(model), "instances", 1) or 1)
            if instances > 1:
                st.caption(f"{model} runs {instances} batches at once (instances); the "
                           "what-if models one at a time, as measured by the profile: "
                           "compare a sweep at each instance count before relying on it.")
            if rough := whatif_ceiling_caveat(cost, bs):
                st.caption(rough)
            if past:
                st.warning(f"{float(rate):,.0f} req/s is past this setting's capacity "
                           f"({capacity:,.0f} req/s): the queue grows for as long as the load "
                           "lasts, so the latency has no steady value (the figures above are "
                           "those of the 5,000 requests simulated, and grow with more). The "
                           "engine then refuses what max_queue cannot hold and times out what "
                           "waits past timeout_ms. Lower the rate, or raise the max batch "
                           "size if the runs, not the engine's work per request, set the "
                           "capacity.", icon=":material/warning:")
            measured = None
            if result and result[0] == model:
                try:
                    f = store.get(result[1])["results"]
                    measured = f[(f["max_batch_size"] == bs) & (f["max_wait_ms"] == wait)
                                 & (f["load_kind"] == "rate")]
                    if "policy" in measured:  # only points measured under what is predicted
                        measured = measured[measured["policy"].fillna("deadline") == "deadline"]
                except KeyError:
                    measured = None
            # (out to the measured points too: a curve to 200 req/s beside points at 400
            # left them alone past its end; a newcomer)
            top = max(float(rate) * 2, 100.0, 1.1 * float(measured["load"].max())
                      if measured is not None and not measured.empty else 0.0)
            curve = what_if_curve(cost, bs, wait, [top * k / 10 for k in range(1, 11)])
            st.plotly_chart(charts.what_if_figure(curve, measured, capacity_rps=capacity),
                            key="exp_whatif_chart")
            if measured is not None and not measured.empty:
                errs = []
                for _, r in measured.iterrows():
                    p = simulate(cost, bs, wait, float(r["load"]), n_requests=5000)
                    lo, hi = r.get("p99_ci_low_ms"), r.get("p99_ci_high_ms")
                    errs.append({"rate (req/s)": r["load"],
                                 "p50 measured": r["p50_ms"], "p50 predicted": p["p50_ms"],
                                 "p50 error": p["p50_ms"] / r["p50_ms"] - 1,
                                 "p99 measured": r["p99_ms"],
                                 "p99 95% interval": f"{lo:.2f}-{hi:.2f}" if pd.notna(lo) else "-",
                                 "p99 predicted": p["p99_ms"],
                                 "runs": int(r.get("measurements", 1))})
                st.dataframe(pd.DataFrame(errs), hide_index=True, key="exp_pred_error",
                             column_config={
                                 "p50 error": st.column_config.NumberColumn(format="percent"),
                                 **{c: st.column_config.NumberColumn(format="%.2f ms") for c in
                                    ("p50 measured", "p50 predicted", "p99 measured",
                                     "p99 predicted")}})
                holds, words = whatif_accuracy(cost, [e["p50 error"] for e in errs])
                (st.caption if holds else st.warning)(words)

# -- history ----------------------------------------------------------------------------------------
with st.container(border=True):
    st.subheader("History", anchor=False)
    runs = store.list()
    st.caption(history_caption(store.usage(), store.path))
    if not runs.empty:
        words = [run_config_words(c, n) for c, n in zip(runs["config"], runs["name"])]
        shown = runs.drop(columns="config").assign(settings=[w[0] for w in words],
                                                   state=[w[1] for w in words])
        st.dataframe(shown[["id", "name", "created", "state", "points", "settings"]],
                     hide_index=True, key="hist_table",
                     column_config={"created": st.column_config.DatetimeColumn(
                         format="YYYY-MM-DD HH:mm:ss"),
                         "settings": st.column_config.TextColumn(
                             "settings", width="large",
                             help="What the run measured (every field: "
                                  "engine.store.get(id)['config'] in a notebook)"),
                         "state": st.column_config.TextColumn(
                             help="complete; partial: still running, or cut off with the "
                                  "points it had; stopped: cancelled, its points kept")})
        ids = runs["id"].tolist()
        label = {r.id: f"run {r.id}: {r.name} · {r.created:%H:%M:%S}" for r in runs.itertuples()}
        # The selection starts again from the two newest whenever a run is added, so the
        # newest is never left out of the comparison.
        chosen = st.multiselect("Compare runs", ids, ids[:2], key=f"hist_compare_{ids[0]}",
                                format_func=label.get)
        if chosen:
            both = store.compare(chosen)
            if left := charts.drawable_runs(both)[1]:   # (a notebook's own run)
                st.caption(f"Not drawn: run(s) {', '.join(map(str, left))}, whose points lack "
                           f"a sweep's {', '.join(charts.RUN_POINT_COLUMNS)} (export them "
                           "as CSV below).")
            st.plotly_chart(charts.runs_figure(both), key="hist_chart")
        h1, h2, h3 = st.columns([2, 1, 1])   # (the run's name was cut at 1024 px)
        # Like the comparison, the pick starts again from the newest whenever a run is
        # added: export and delete act on the run named on their buttons, never on one
        # picked before the newest arrived.
        pick = h1.selectbox("Run", ids, key=f"hist_pick_{ids[0]}", format_func=label.get)
        h2.download_button(f"Export run {pick} as CSV", store.export_csv(pick),
                           file_name=f"run-{pick}.csv", key="hist_csv")
        pick_cfg = runs.loc[runs["id"] == pick, "config"].iloc[0]
        # (the table's settings column is cut at 1024 px: the picked run's whole, values
        # too: "inputs=generated: random values of each inpu..."; newcomers)
        st.caption(f"Run {pick}'s settings: " + run_config_words(
            pick_cfg, label[pick], cut=400)[0])
        pick_cfg = pick_cfg if isinstance(pick_cfg, dict) else {}
        sweep_of = pick_cfg.get("model") if "max_batch_sizes" in pick_cfg \
            and "search" not in pick_cfg else None
        # (after a restart, a past sweep's answer, Apply and exports were gone; a newcomer)
        if h1.button(f"Show run {pick} above", key="hist_open",
                     disabled=sweep_of != model,
                     help="Its answer, chart, table, Apply and exports, in the sweep's place "
                          "above." if sweep_of == model else
                          f"A sweep of {sweep_of}: choose {sweep_of} at the top of the page."
                          if sweep_of else "Only a grid sweep's run opens there."):
            st.session_state["exp_open_run"] = (
                pick, model, job.result.get("run_id") if job is not None and job.finished
                and job.result else None)
            st.rerun()
        with h3.popover(f"Delete run {pick}"):   # (asked once more: it cannot be undone)
            st.caption(f"{label[pick][0].upper()}{label[pick][1:]} leaves the history for good.")
            if st.button(f"Delete run {pick}", key="hist_delete", type="primary"):
                store.delete(pick)
                st.rerun()
