"""Models: upload, inspect, try, and the session cache."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core import BatchConfig, BatchlabError, SessionConfig, available_providers
from core.ui import charts
from core.config import OPTIMIZATION_LEVELS, machine_cores
from core.models import INPUT_SUFFIXES, generated_values, swap_differences
from core.models.images import IMAGE_SUFFIXES, PRESETS, looks_like_images, zip_files
from core.ui.answers import preview_answer
from core.ui.fmt import fmt_opset, try_caption
from core.lab import experiments_with_arm, generated_refused
from core.models.probe import TRIAL_REFUSED, probe_note
from core.models import format_bytes
from pages._ray import ray_section
from pages._common import (UPLOAD_LIMIT_MB, fmt_ms, fmt_s, get_engine, job_progress,
                           choose_model, pick_model, start_job)



class _Zipped:
    """A browser's folder upload as one .zip, like a file from the uploader."""

    def __init__(self, files: list) -> None:
        tops = {f.name.split("/")[0] for f in files if "/" in f.name}
        self.name = f"{tops.pop()}.zip" if len(tops) == 1 else "images.zip"
        self._data = zip_files([(f.name, f.getvalue()) for f in files])

    def getvalue(self) -> bytes:
        return self._data


engine = get_engine()

st.title("Models", anchor=False)
st.caption("Upload ONNX models, see how they can be batched, and try them. Built-in demo "
           "models are always here, made at start-up without any download.")

# -- upload -----------------------------------------------------------------------------
with st.container(border=True):
    st.subheader("Upload a model", anchor=False)
    up_col, opt_col = st.columns([3, 2])
    with up_col:
        uploaded = st.file_uploader(
            # No type filter: a wrong file is refused by the loader in words (the browser's
            # filter marked it with a red "!" seen only on hover, and no reason)
            f"ONNX model file (.onnx, up to {UPLOAD_LIMIT_MB} MB)",
            key="upload_file", max_upload_size=UPLOAD_LIMIT_MB,
            # a new file: the last file's result (an error in red, say) is not this one's
            on_change=lambda: st.session_state.pop("upload_result", None),
            help="Models that reference external data files are refused: an uploaded model "
                 "must carry all its weights.")
    with opt_col:
        # A newly chosen file proposes its own name (the field stays editable).
        if uploaded is not None and st.session_state.get("_upload_seen") != uploaded.file_id:
            st.session_state["_upload_seen"] = uploaded.file_id
            st.session_state["upload_name"] = Path(uploaded.name).stem
        name = st.text_input("Register as", key="upload_name",
                             placeholder="name, e.g. resnet50",
                             help="Letters, digits, '.', '_' or '-'. Defaults to the file name.")
        replace = st.checkbox("Hot-swap a model of this name", key="upload_replace",
                              help="Replace the model of this name while it serves: requests "
                                   "already queued finish on the old version, new ones go to "
                                   "this one.")
        with st.expander("Session options"):
            threads = st.number_input(
                "Intra-op threads (empty: all cores but one; 0: ONNX Runtime decides)", None,
                None, None, 1, key="upload_threads",
                help=f"At most this machine's {machine_cores()} cores: more threads than "
                     "cores take turns and slow every model.")
            optimization = st.selectbox("Graph optimisation", OPTIMIZATION_LEVELS, index=3,
                                        key="upload_opt")
            provider = st.selectbox("Execution provider", available_providers(),
                                    key="upload_provider",
                                    help="CUDA is offered when onnxruntime-gpu is installed.")
            trust_rows = st.checkbox(
                "Skip the row check (its rows never change each other's answers)",
                key="upload_trust_rows",
                help="At load, a model with a dynamic batch axis is run on 3 rows together "
                     "and each alone; if the answers differ (CumSum or Softmax over the "
                     "batch axis) its requests run alone. Tick this only for a model you "
                     "know keeps its rows apart and the check misjudged: it is then "
                     "batched on your word (the model says so in its warnings).")
    if st.button("Load model", key="upload_load", type="primary",
                 disabled=uploaded is None):
        loads = engine.status().get("loads") or {}
        ahead = loads.get("running", 0) + loads.get("waiting", 0)
        doing = ("validating the model, trying it in a separate process and creating an "
                 "ONNX Runtime session...")
        with st.spinner(f"Waiting for {ahead} other trial run(s) to finish (one at a time), "
                        f"then {doing}" if ahead else doing[0].upper() + doing[1:]):
            target = name.strip() or Path(uploaded.name).stem
            swapped = replace and target in engine.model_names()
            arms = [e for e, _ in experiments_with_arm(engine, target)] if swapped else []
            was = engine.model_info(target) if swapped else None
            try:
                info = engine.load_model(   # (a blank name: the file's, as the help says)
                    uploaded.getvalue(), name=target,
                    replace=replace,
                    session=SessionConfig(intra_op_threads=None if threads is None else int(threads),
                                          graph_optimization=optimization,
                                          provider=provider or "cpu"),
                    source_label=f"upload: {uploaded.name}", check_rows=not trust_rows)
            except BatchlabError as err:
                # the engine's words name its argument; here the checkbox is the way
                words = str(err).replace(
                    "pass replace=True to hot-swap it",
                    "tick 'Hot-swap a model of this name' to replace it").replace(
                    " (on the Models page: open it there)", "")   # (this is that page)
                st.session_state["upload_result"] = ("error", f"Could not load "
                                                     f"{uploaded.name}: {words}")
            else:
                # (a hot swap said only "Loaded 'x'", not what it replaced; a newcomer)
                what = (f"Replaced {info.name!r} (hot swap: requests queued before finished "
                        "on the old version)" if swapped else f"Loaded {info.name!r}")
                st.session_state["upload_result"] = (
                    "ok", f"{what}: {len(info.inputs)} input(s), "
                          f"{'batchable' if info.batchable else 'not batchable'}."
                    + (f" A/B experiment(s) {', '.join(arms)} began a new segment with it."
                       if arms else ""))
                # (an input of another shape swapped in said only "Replaced": every caller
                # sending the old shape then failed; a newcomer)
                if changed := (swap_differences(was, info) if was is not None else []):
                    st.session_state["upload_result"] = (
                        "warning", st.session_state["upload_result"][1] + " What callers "
                        f"send or read changed: {'; '.join(changed)}. Requests shaped for the "
                        "old version are refused now.")
                choose_model(info.name, "models_detail")   # inspected here, and on every page
    result = st.session_state.get("upload_result")
    if result:
        {"ok": st.success, "warning": st.warning}.get(result[0], st.error)(result[1])

# -- remote -----------------------------------------------------------------------------
with st.container(border=True):
    st.subheader("Add a remote model", anchor=False)
    st.caption("A model served by any Open Inference Protocol (KServe v2) server: Triton, "
               "KServe, MLServer, Seldon, another Batchlab. It is measured, swept and A/B "
               "tested like a local model; latency is measured here, at the client.")
    r1, r2 = st.columns([3, 2])
    url = r1.text_input("Server URL", key="remote_url", placeholder="http://127.0.0.1:8080")
    remote_model = r2.text_input("Model on the server", key="remote_model",
                                 placeholder="e.g. mlp")
    r3, r4 = st.columns([3, 2])
    token = r3.text_input("Bearer token (optional)", key="remote_token", type="password")
    remote_name = r4.text_input("Name in Batchlab", key="remote_name",
                                placeholder=f"{remote_model.strip() or 'model'}-remote")
    with st.expander("When the server does not report everything"):
        s1, s2 = st.columns(2)
        given_mbs = s1.number_input(
            "Its max batch size", 1, 100_000, value=None, key="remote_mbs",
            help="MLServer does not report its batch settings over the protocol: give them "
                 "(from its model-settings.json) to have them shown and used by sweeps.")
        given_wait = s2.number_input("Its max wait (ms)", 0.0, 60_000.0, value=None,
                                     key="remote_wait")
        tensors = st.text_area(
            "Inputs (JSON)", key="remote_inputs", height=80,
            placeholder='[{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]',
            help="MLServer lists no tensors unless its model-settings.json declares them. "
                 "Leave empty to send a single array as 'input-0' and learn the tensors from "
                 "the first request that succeeds.")
    if st.button("Add remote model", key="remote_add",
                 disabled=not (url.strip() and remote_model.strip())):
        from core.remote import parse_tensor_list
        with st.spinner(f"Reading {remote_model.strip()!r} from {url.strip()}..."):
            try:
                inputs = parse_tensor_list(tensors)
                batch = None
                if given_mbs is not None or given_wait is not None:
                    batch = BatchConfig(max_batch_size=int(given_mbs or 1),
                                        max_wait_ms=float(given_wait or 0.0))
                info = engine.add_remote(
                    remote_name.strip() or f"{remote_model.strip()}-remote", url=url.strip(),
                    model=remote_model.strip(), inputs=inputs, batch=batch,
                    headers={"Authorization": f"Bearer {token.strip()}"} if token.strip()
                    else None)
            except BatchlabError as err:
                st.session_state["remote_result"] = ("error", str(err))
            else:
                declared = engine.remote_info(info.name).declared
                st.session_state["remote_result"] = (
                    "ok", f"Added {info.name!r}: {len(info.inputs)} input(s)"
                          + (" declared by the server." if declared else
                             " given by you." if info.inputs else
                             "; the server declares none: they are learned from the first "
                             "request that succeeds."))
                st.rerun()  # the sidebar and the table count it
    result = st.session_state.get("remote_result")
    if result:
        {"ok": st.success, "warning": st.warning}.get(result[0], st.error)(result[1])

# -- table ------------------------------------------------------------------------------
st.subheader("Loaded models", anchor=False)
rows = [i.to_dict() for i in engine.models()]
table = pd.DataFrame(rows)
if not table.empty:
    table["size_kb"] = table["size_bytes"] / 1024
    table["sha256"] = table["sha256"].str[:12]
    table["opset"] = [fmt_opset(i.opset) for i in engine.models()]
    # (what a person reads first, first: batchable and why were past the table's right
    # edge at 1024 px, why cut at 1280, behind source and the shapes; a newcomer)
    st.dataframe(
        table[["name", "batchable", "batch_reason", "inputs", "outputs", "size_kb",
               "source", "dynamic_dims", "opset", "sha256", "producer"]],
        key="models_table", hide_index=True,
        column_config={
            "name": st.column_config.TextColumn("name", pinned=True),
            "batchable": st.column_config.CheckboxColumn("batchable"),
            "batch_reason": st.column_config.TextColumn("why", width="medium"),
            "size_kb": st.column_config.NumberColumn("size", format="%.1f KB"),
            "sha256": st.column_config.TextColumn("sha256 (prefix)"),
        })
    # The table cuts a long reason; the ones that matter (not batchable) are written out
    for r in table[~table["batchable"].astype(bool)].itertuples():
        st.caption(f"**{r.name}** is served one request at a time: {r.batch_reason}")

# -- detail and try it ------------------------------------------------------------------
left, right = st.columns([1, 1])
with left:
    st.subheader("Inspect", anchor=False)
    if "unload_result" in st.session_state:   # (said here, where its button was)
        st.success(st.session_state.pop("unload_result"), icon=":material/check:")
    selected = pick_model("Model", "models_detail", engine)
    if selected:
        info = engine.model_info(selected)
        real = not engine.input_source(selected).startswith("generated")
        refused = None if real else generated_refused(engine, selected)
        specs = [{"kind": kind, "name": t.name, "type": str(t.dtype) if t.dtype else t.type,
                  "shape": t.shape_text(),
                  "generated load sends": "" if kind == "output" else
                  "your inputs" if real else generated_values(t) + (
                      ": refused by its trial run" if refused and t.dtype is not None
                      and t.dtype.kind in "iu" and t.index_bound is None else "")}
                 for kind, ts in (("input", info.inputs), ("output", info.outputs)) for t in ts]
        # (narrow columns for short values: the name took the width and the shape and
        # what load sends were cut at 1280 px, type and shape hidden at 1024; a newcomer)
        st.dataframe(pd.DataFrame(specs), hide_index=True, key="models_specs", column_config={
            "kind": st.column_config.TextColumn(width="small"),
            "name": st.column_config.TextColumn(width="small"),
            "type": st.column_config.TextColumn(width="small"),
            "shape": st.column_config.TextColumn(width="medium"),
            "generated load sends": st.column_config.TextColumn(width="medium")})
        (st.success if info.batchable else st.warning)(
            ("Batchable: " if info.batchable else "Not batchable: ") + info.batch_reason)
        remote = engine.remote_info(selected)
        if remote is None:
            st.caption(f"sha256 `{info.sha256}` · {info.size_bytes:,} bytes · opset "
                       f"{fmt_opset(info.opset)} · IR {info.ir_version} · "
                       f"{info.producer or 'unknown producer'}"
                       f" · {', '.join(info.providers)}")
        else:  # its file, opset and session are its server's: say whether it answers now
            stats = engine.server_stats(selected)
            st.caption(f"Its file, opset and session are {remote.server}'s. "
                       + ("The server answers now." if stats["reachable"] else
                          f"The server does not answer now: {stats['reason']}."))
        if info.description:
            st.caption(info.description)
        if remote is not None:
            st.info(f"Remote: {remote.server} {remote.server_version} at "
                    f"{remote.url}, model `{remote.model}`"
                    f"{' (tensors declared by you or learned)' if not remote.declared else ''}"
                    f" · {'binary' if remote.binary else 'JSON'} tensors · batch settings "
                    f"from {remote.source}"
                    f"{'' if remote.configurable else ' (read-only here)'}.",
                    icon=":material/cloud:")
        for warning in info.warnings:
            if warning.startswith(TRIAL_REFUSED) and real:   # (dealt with: said so)
                st.info(f"Loaded although {warning}. It has real inputs now, which traffic, "
                        "sweeps and warm-up send.", icon=":material/check:")
                continue
            st.warning(f"Loaded although {warning}" + (
                " (ONNX Runtime runs it; the checker's finding is shown for your "
                "information)." if warning.startswith("onnx.checker") else "."),
                icon=":material/info:")
        st.markdown("**Inputs for generated load**")
        source = engine.input_source(selected)
        st.caption(f"Traffic, sweeps, warm-up and A/B tests send this model {source}.")
        inputs_file = st.file_uploader(
            "Real inputs (.npy, .npz, .csv, .parquet, perf_analyzer .json, .zip of images)",
            type=[sfx[1:] for sfx in INPUT_SUFFIXES], key=f"inputs_file_{selected}",
            help="Samples of what the model really sees: rows first (a table's numeric "
                 "columns are the features), or perf_analyzer's --input-data JSON. Checked "
                 "against the model's inputs; kept with the model.")
        preprocess = None
        if looks_like_images(info):  # a folder of images, with the model's preprocessing
            images = st.file_uploader(
                "...or a folder of images", type=[s[1:] for s in IMAGE_SUFFIXES],
                accept_multiple_files="directory", key=f"inputs_images_{selected}",
                help="Every image in the folder, decoded and resized to the model's input.")
            p1, p2 = st.columns(2)
            preset = p1.selectbox(
                "Image preprocessing", list(PRESETS),
                key=f"inputs_preset_{selected}", help="As the model was trained: imagenet: /255, "
                "then torchvision's ImageNet mean and std; unit: 0 to 1; symmetric: -1 to 1; "
                "raw: 0 to 255.")
            crop = p2.toggle("Centre crop (else stretch)", key=f"inputs_crop_{selected}")
            if images and not (inputs_file and inputs_file.name.lower().endswith(".zip")):
                inputs_file = _Zipped(images)
            if inputs_file is not None and inputs_file.name.lower().endswith(".zip"):
                preprocess = {"preset": preset, "resize": "crop" if crop else "stretch"}
        i1 = i2 = st.container(horizontal=True)   # (wraps: "Back to rando…" at 1024 px)
        if i1.button("Use these inputs", key="inputs_set", disabled=inputs_file is None):
            try:
                said = engine.set_inputs(selected, inputs_file.getvalue(), inputs_file.name,
                                         preprocess=preprocess)
            except BatchlabError as err:
                st.session_state["inputs_result"] = ("error", f"Not used: {err}")
            else:
                st.session_state["inputs_result"] = ("ok", f"{selected} now gets {said}.")
            st.rerun()
        if i2.button("Back to random inputs", key="inputs_clear",
                     disabled=source.startswith("generated")):
            try:   # (refused while a sweep measures the model: said, not a traceback)
                engine.clear_inputs(selected)
            except BatchlabError as err:
                st.session_state["inputs_result"] = ("error", f"Not changed: {err}")
            st.rerun()
        result = st.session_state.pop("inputs_result", None)
        if result:
            (st.success if result[0] == "ok" else st.error)(result[1])
        st.markdown("**Memory per batch size**")
        if remote is not None:
            st.caption("A remote model's memory is its server's: measure it there.")
        profile = engine.memory_profile(selected)
        job = job_progress(engine, "measure_memory", selected, key="models_memory_job")
        if st.button("Measure memory", key="models_measure_memory",
                     disabled=(job is not None and not job.finished) or remote is not None,
                     help="Runs the model once per batch size (powers of two up to max batch "
                          "size) in a separate process, under the engine's memory budget, and "
                          "records the resident memory each run adds."):
            start_job(engine, "measure_memory", selected, "Could not measure")
        if profile is not None and len(profile):
            failed = profile["error"].dropna()
            if len(failed):
                st.error(f"Batch size {int(profile.loc[failed.index[0], 'batch_size'])}: "
                         f"{failed.iloc[0]}")
            if noted := probe_note(profile):
                st.caption(f"Generated inputs: {noted} (the figures are for those).")
            if profile["error"].isna().any():
                st.plotly_chart(charts.memory_figure(profile), key="models_memory_chart")
            st.caption("Resident memory a single run adds (to page granularity), measured "
                       "in a child process without ONNX Runtime's arena; the engine's budget "
                       f"is {format_bytes(engine.memory_budget_bytes)}.")
        else:
            st.caption("Not measured yet.")
        arm_of = experiments_with_arm(engine, selected)
        # (every experiment it is an arm of: it named the first of two; a newcomer)
        arms_said = "; ".join(f"arm {arm} of A/B experiment {name!r}" for name, arm in arm_of)
        why_not = (f"{selected} is {arms_said}: delete "
                   f"{'the experiment' if len(arm_of) == 1 else 'those experiments'} on the "
                   "A/B test page first (or give them another arm)") if arm_of else None
        # (asked once more: it acted at the first click, and what it took away was not said
        # where the click was; a newcomer)
        with st.popover("Unload this model", disabled=bool(arm_of), help=why_not):
            st.caption(f"Unloads {selected}: requests queued for it fail, traffic to it "
                       "stops, and its batch settings and metrics go. Its session stays in "
                       "the cache below until evicted.")
            if st.button(f"Unload {selected}", key="models_unload", type="primary",
                         disabled=bool(arm_of), help=why_not):
                try:
                    engine.unload_model(selected)
                except BatchlabError as err:   # (an experiment made meanwhile, elsewhere)
                    st.error(f"Could not unload {selected}: {err}")
                else:   # ("Loaded 'x'" no longer stays beside a list without it)
                    st.session_state.pop("upload_result", None)
                    st.session_state.pop("models_detail", None)   # (another, unsaid)
                    st.session_state["unload_result"] = f"Unloaded {selected!r}."
                    st.rerun()
        if arm_of:
            st.caption("; ".join(f"Arm {arm} of A/B experiment **{name}**"
                                 for name, arm in arm_of)
                       + f": delete {'the experiment' if len(arm_of) == 1 else 'them'} on the "
                       "A/B test page to unload it.")

with right:
    st.subheader("Try it", anchor=False)
    if selected:
        info = engine.model_info(selected)
        ss = st.session_state
        if info.batch_mode == "exact":  # the model's shape decides: show what it is
            if not ss.get("_try_rows_forced"):   # (the rows chosen, for the next model)
                ss["_try_rows_chosen"] = ss.get("try_rows", 2)
            ss["try_rows"], ss["_try_rows_forced"] = info.fixed_rows or 1, True
        elif ss.pop("_try_rows_forced", False):   # (a fixed model's 8 stayed for the next;
            ss["try_rows"] = ss.get("_try_rows_chosen", 2)   # a newcomer)
        # (unbounded: a value out of range reaches the engine, which says why it is refused;
        # a bounded box kept its last valid value in silence)
        rows_in = st.number_input("Rows", None, None, 2, key="try_rows",
                                  disabled=info.batch_mode == "exact",
                                  help="Input of the model's shape with this many rows: "
                                       "drawn from its real inputs when it has some, else "
                                       "random (the caption below says which)."
                                  if info.batch_mode != "exact" else
                                  "Fixed by the model: its input has exactly this shape.")
        seed = st.number_input("Seed", None, None, 0, key="try_seed")
        if st.button("Run one prediction", key="try_run", type="primary"):
            try:
                x = engine.sample_input(selected, rows=int(rows_in), seed=int(seed))
                pred = engine.predict(selected, x)
            except BatchlabError as err:
                st.error(f"Prediction failed: {err}")
                st.session_state.pop("try_result", None)   # (not shown as this one's)
            else:   # (kept as the page shows it: a 1-D answer of 20M floats was drawn
                # whole and kept in full, +400 MiB a tab that stayed; an adversary)
                st.session_state["try_result"] = (selected, preview_answer(pred),
                                                  engine.input_source(selected))
        res = st.session_state.get("try_result")
        if res and res[0] == selected:
            pred = res[1]
            # (a row that wraps: three columns cut "5.3 ms" to "5.3…" at 1024 px; a newcomer)
            c1 = c2 = c3 = st.container(horizontal=True)
            c1.metric("Total", fmt_ms(pred.total_ms))
            c2.metric("Queue", fmt_ms(pred.queue_ms))
            c3.metric("Compute", fmt_ms(pred.compute_ms))
            st.caption(try_caption(info.batch_mode, info.inputs[0].shape if info.inputs
                                   else None, pred) + (f" Input: {res[2]} (seed {int(seed)})." if len(res) > 2 else ""))
            for out_name, value in pred.outputs.items():
                st.markdown(f"**{out_name}**")
                if isinstance(value, tuple):   # (dtype, shape, words, the part shown)
                    dtype, shape, words, shown = value
                    st.caption(f"{dtype} {list(shape)}. {words}")
                    frame = pd.DataFrame(shown)
                    if frame.isna().any().any():  # the grid would show a NaN as "None"
                        frame = frame.map("{:.7g}".format)
                    st.dataframe(frame, key=f"try_out_{out_name}")
                else:
                    st.json(value, expanded=False)

# -- Ray --------------------------------------------------------------------------------
ray_section(engine, selected)

# -- cache -------------------------------------------------------------------------------
st.subheader("Session cache", anchor=False)
st.caption("Sessions are shared by content hash: loading the same bytes twice creates one "
           "ONNX Runtime session. 'loads' counts every load that found it (a replay's private "
           "copy too); 'last loaded' is the last of them, not the last run. "
           "Evicting only means the next load builds a new session; loaded models keep "
           "working.")
entries = engine.cache_entries()
cap = engine.config.cache_size
if len(entries) < len(engine.model_names()) or len(entries) >= cap:
    # (8 rows beside 14 models read as models gone missing; a newcomer)
    st.caption(f"It keeps at most {cap} sessions "
               "(EngineConfig.cache_size), the least recently loaded leaving first: a model "
               "loaded earlier keeps serving with its own session, unlisted here, and a "
               "remote model has none.")
if entries:
    names: dict[str, list[str]] = {}   # the models loaded from each file, by its sha256
    for m in engine.models():
        names.setdefault(m.sha256, []).append(m.name)
    st.dataframe(pd.DataFrame([{
        "models": ", ".join(names.get(e.sha256, [])) or "none loaded now",
        "sha256": e.sha256[:12], "size_kb": e.size_bytes / 1024, "loads": e.loads,
        "last loaded": f"{fmt_s(e.last_used_s_ago)} ago",   # (a load, not a run)
        # one type per column (text): a number beside "auto" breaks the table's Arrow form
        "threads": str(e.session_config.intra_op_threads)
        if e.session_config.intra_op_threads is not None else "auto",
        "optimisation": e.session_config.graph_optimization,
        "provider": e.session_config.provider} for e in entries]),
        hide_index=True, key="cache_table",
        column_config={"size_kb": st.column_config.NumberColumn("size", format="%.1f KB")})
    c1, c2, c3 = st.columns([2, 1, 1])
    loaded = {e.sha256[:12]: ", ".join(names.get(e.sha256, [])) for e in entries}
    victim = c1.selectbox("Entry", list(loaded), key="cache_pick", label_visibility="collapsed",
                          format_func=lambda h: f"{h} ({loaded[h]})" if loaded[h] else h)
    if c2.button("Evict", key="cache_evict_one"):
        st.toast(f"Evicted {engine.evict_cache(victim)} session(s)")
        st.rerun()
    if c3.button("Evict all", key="cache_evict_all"):
        st.toast(f"Evicted {engine.evict_cache()} session(s)")
        st.rerun()
else:
    st.info("The cache is empty.")
