"""Warm-up: run a model at every batch size it will see before real traffic does."""

from __future__ import annotations

import streamlit as st

from core import warmup_batch_sizes
from core.lab import JOB_WORDS
from core.ui import charts
from core.ui.fmt import fmt_ranges
from core.ui.traffic import sends_caption
from pages._common import (fmt_ms, get_engine, job_progress, keep_values, link_to, pick_model,
                           settings_held_by, start_job)

engine = get_engine()

st.title("Warm-up", anchor=False)
st.caption("The first run at a new batch size pays for memory planning and cold caches. "
           "Warm-up runs the powers of two up to max batch size, and the max, before real "
           "requests do: a size between them then costs on its first run what any size does "
           "after another (measured on the demo models: tenths of a millisecond at most; "
           "docs/benchmarks.md). "
           "Warm-up runs are not counted as traffic.")

model = pick_model("Model", "warmup_model", engine, default="mlp")
if model is None:
    st.stop()
info = engine.model_info(model)
cfg = engine.batch_config(model)
sizes = warmup_batch_sizes(cfg.max_batch_size, info.runs_any_rows)

c1, c2 = st.columns([2, 1])
ran = engine.warm_sizes(model)
missing = [s for s in sizes if s not in ran]
with c1:
    keep_values({"warmup_iters": 10})   # (100 came back as 10 after another page; a newcomer)
    iterations = st.slider("Iterations per batch size", 2, 100, key="warmup_iters",
                           help="The first run is the cold one; the median of the rest is warm.")
    if info.batchable:
        st.caption(f"Batch sizes to warm: {', '.join(map(str, sizes))} "
                   f"(max_batch_size={cfg.max_batch_size}; change it on the Batching page).")
        link_to("Batching")
    elif info.runs_any_rows:   # (each request alone, whole: its rows are the run's)
        st.caption(f"{model} runs each request alone ({info.batch_reason}). Request sizes to "
                   f"warm: {', '.join(map(str, sizes))} rows (max_batch_size="
                   f"{cfg.max_batch_size} is the most a request may carry).")
    else:
        st.caption(f"{model} cannot batch: {info.batch_reason}. Batch size 1 is the only "
                   "one to warm.")
    st.caption("Batch sizes this model has run since it was loaded (traffic and warm-up): "
               + (fmt_ranges(ran) if ran else "none yet") + ". " + sends_caption(
                   engine, model, "Runs"))
with c2:
    warm = not missing
    # (words, not "max_batch_size=4": at 1024 px the box broke it before the 4; a newcomer)
    what = f"max batch size {cfg.max_batch_size}" if info.batchable else "batch size 1"
    (st.success if warm else st.warning)(
        f"{model} is warm for {what}" if warm else
        f"{model} is not warm for {what}: "
        + (f"batch size {missing[0]} has" if len(missing) == 1 else
           f"batch sizes {', '.join(map(str, missing))} have") + " not run yet",
        icon=":material/local_fire_department:" if warm else ":material/ac_unit:")

job = job_progress(engine, "warmup", model, key="warmup_job")
held = settings_held_by(engine, model)
if held is not None:   # (its warm-up would run beside the points measured: refused)
    st.info(f"{model} is being measured by a {JOB_WORDS.get(held.kind, held.kind)} (job "
            f"{held.job_id}, {held.progress:.0%}), at the settings of the point under way "
            "(the sizes above are those). Warm it up when the job ends, or cancel the job "
            "where it shows.", icon=":material/lock:")
if st.button("Warm up", key="warmup_run", type="primary",
             disabled=(job is not None and not job.finished) or held is not None):
    start_job(engine, "warmup", model, "Warm-up could not start", iterations=int(iterations))

report = engine.last_warmup(model)
if report is None:
    if job is None or job.finished:   # (not under a running one's progress bar)
        st.info("No warm-up has run for this model yet.")
else:
    if report.purpose != "warm-up":   # (a newcomer took a profile's sizes, up to 64 above a
        # max batch size of 40, for this page's warm-up)
        st.info(f"These figures are from a cost profile (the Experiments page's, or "
                f"profile_cost() from a notebook), the last to time {model}'s batch sizes: "
                f"{fmt_ranges(report.batch_sizes)}, not the sizes above. Warm up to see this "
                "model at its own sizes.", icon=":material/info:")
    elif sorted(report.batch_sizes) != sorted(sizes):   # (a newcomer took a warm-up made
        # during a search, at its sizes up to 32, for this model's 1, 2, 4)
        st.info(f"This warm-up ran at other settings (batch sizes "
                f"{fmt_ranges(report.batch_sizes)}), not the sizes above "
                f"({fmt_ranges(sizes)}). Warm up again to see this model at its own sizes.",
                icon=":material/info:")
    st.plotly_chart(charts.warmup_figure(report.frame), key="warmup_chart")
    # (labelled: the raw names read as code, and the last was cut at 1024 px; newcomers:
    # the unit in each cell, the headers short enough for every column to fit)
    st.dataframe(report.frame, hide_index=True, key="warmup_table",
                 column_config={"batch_size": st.column_config.NumberColumn("batch"),
                                "iterations": st.column_config.NumberColumn("runs")} |
                 {c: st.column_config.NumberColumn(label, format="%.3f ms")
                  for c, label in (("cold_ms", "cold"), ("warm_p50_ms", "warm p50"),
                                   ("warm_p95_ms", "warm p95"),
                                   ("warm_min_ms", "warm min"))} |
                 {"cold_over_warm": st.column_config.NumberColumn("cold / warm",
                                                                  format="%.1fx")})
    if slow := report.disturbed_sizes:
        st.warning(f"At batch size{'s' if len(slow) > 1 else ''} {', '.join(map(str, slow))} "
                   "the warm runs took clearly longer than the first (by a fifth or more): "
                   "something else had the cores meanwhile (traffic, a job, another program), "
                   "so these figures are disturbed (the sizes did run). Warm up again on a "
                   "quieter machine for figures to compare.", icon=":material/speed:")
    if spiky := report.spiky_sizes:
        st.warning(f"At batch size{'s' if len(spiky) > 1 else ''} "
                   f"{', '.join(map(str, spiky))} some warm runs took over five times the "
                   "warm median (see warm p95): they were interrupted (another program, "
                   "the garbage collector, the machine). Real requests meet such spells too; "
                   "warm up again to see whether they repeat.", icon=":material/bolt:")
    st.caption(f"Took {fmt_ms(report.duration_s * 1000.0)}. The first run at a batch size "
               "is cold only if that size had not run before; on a model already serving "
               "it shows what an idle spell costs (caches gone cold), not memory planning.")
