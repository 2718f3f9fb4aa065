"""The Models page's "Deploy to a Ray cluster": a loaded model as Batchlab engine replicas
on Ray Serve (``core.cluster``), added back as a remote model; its replicas changed live;
undeployed. The dashboard's own process talks to Ray (the engine's server sends it the
model's file)."""

from __future__ import annotations

import importlib.util
from typing import Any

import streamlit as st


__all__ = ["ray_section"]


def _deploy(engine: Any, model: str) -> None:
    from core.cluster import RAY_SUFFIX, deploy_model
    s = st.session_state
    try:
        with st.spinner(f"Deploying {model} to Ray ({int(s['ray_replicas'])} replica(s)): "
                        "starting Ray Serve and the replicas, which load the model..."):
            d = deploy_model(engine, model, address=s["ray_address"].strip() or None,
                             num_replicas=int(s["ray_replicas"]),
                             max_ongoing_requests=int(s["ray_ongoing"]),
                             replica_cpus=float(s["ray_cpus"]),
                             http_port=int(s["ray_port"]))
    except Exception as err:  # noqa: BLE001 - Ray's own errors too: said, not a traceback
        s["ray_result"] = ("error", f"Could not deploy {model}: {type(err).__name__}: {err}")
    else:
        s["ray_result"] = ("ok", f"{model} answers at {d.url} from {d.num_replicas} "
                                 f"replica(s); it is the remote model {model}{RAY_SUFFIX} "
                                 "here: pick it on any page.", d.warnings)


def ray_section(engine: Any, selected: str | None) -> None:
    """The section (nothing where Ray is not installed)."""
    if importlib.util.find_spec("ray") is None:
        return
    from core.cluster import RAY_SUFFIX, concurrency_warning, configure, deployments, undeploy
    # (folded: one click with the address empty starts Ray on this machine; a newcomer
    # found it a prominent button on every model, quoting settings it said were changed
    # "below" before anything was deployed)
    with st.expander("Deploy to a Ray cluster", expanded=bool(deployments())):
        st.caption("Runs the model as Batchlab engine replicas on Ray Serve (one engine, with "
                   "these batch settings, per replica) and adds it here as a remote model, so "
                   "sweeps, traffic and A/B tests measure the cluster. Each replica batches "
                   "only its share of the traffic: batches shrink as replicas are added.")
        local = selected is not None and engine.remote_info(selected) is None
        c1, c2 = st.columns([3, 1])
        c1.text_input("Ray cluster address", key="ray_address",
                      placeholder="HOST:PORT of its head; empty: a local Ray started here")
        c2.number_input("Serve's HTTP port", 1024, 65535, 8000, key="ray_port",
                        help="Where Ray Serve's proxy listens if this starts it (one already "
                             "running keeps its own).")
        c3, c4, c5 = st.columns(3)
        c3.number_input("Replicas", 1, 64, 2, key="ray_replicas")
        cfg = engine.batch_config(selected) if local else None
        c4.number_input("Max ongoing requests per replica", 1, 10_000,
                        2 * cfg.max_batch_size if cfg else 64, key="ray_ongoing",
                        help="Ray Serve sends a replica at most this many requests at once.")
        c5.number_input("CPUs per replica", 0.1, 64.0, 1.0, 0.25, key="ray_cpus")
        if cfg is not None:
            info = engine.model_info(selected)
            st.caption(f"Each replica batches with {selected}'s settings here: max batch "
                       f"{cfg.max_batch_size}, max wait {cfg.max_wait_ms:g} ms"
                       + ("" if info.batchable else
                          f" (its requests run alone: {info.batch_reason})")
                       + "; once it is deployed, its row under 'Deployed from this "
                       "dashboard' changes them on every replica.")
        if cfg is not None:
            why = concurrency_warning(int(st.session_state["ray_ongoing"]), cfg.max_batch_size)
            if why:
                st.warning(why, icon=":material/warning:")
        if st.button(f"Deploy {selected}" if local else "Deploy (pick a local model above)",
                     key="ray_deploy", disabled=not local,
                     help="With the address empty, starts Ray on this machine first."):
            _deploy(engine, selected)
        result = st.session_state.get("ray_result")
        if result:
            (st.success if result[0] == "ok" else st.error)(result[1])
            for w in result[2] if len(result) > 2 else []:
                st.warning(w, icon=":material/warning:")
        deployed = deployments()
        if deployed:
            st.markdown("**Deployed from this dashboard** (changes reach every replica live)")
        for d in deployed:
            r1, r2, r3, r4, r5, r6 = st.columns([3, 1, 1, 1, 1, 1], vertical_alignment="bottom")
            r1.markdown(f"**{d.name}** at `{d.url}` · max ongoing {d.max_ongoing_requests}")
            n = r2.number_input("Replicas", 1, 64, d.num_replicas or 1, key=f"ray_n_{d.name}")
            bs = r3.number_input("Max batch", 1, 4096, d.batch.max_batch_size,
                                 key=f"ray_bs_{d.name}")
            wait = r4.number_input("Max wait (ms)", 0.0, 10_000.0, float(d.batch.max_wait_ms),
                                   key=f"ray_wait_{d.name}")
            changes = {k: v for k, v, old in (
                ("num_replicas", int(n), d.num_replicas), ("max_batch_size", int(bs),
                 d.batch.max_batch_size), ("max_wait_ms", float(wait), d.batch.max_wait_ms))
                if v != old}
            if r5.button("Apply", key=f"ray_apply_{d.name}", disabled=not changes):
                try:
                    with st.spinner(f"Changing {d.name} on every replica..."):
                        configure(d.name, **changes)
                except Exception as err:  # noqa: BLE001 - Ray's own errors too
                    st.error(f"Could not change {d.name}: {type(err).__name__}: {err}")
                else:
                    st.rerun()
            if r6.button("Undeploy", key=f"ray_undeploy_{d.name}"):
                try:
                    with st.spinner(f"Ending {d.name}'s replicas..."):
                        # (unloaded first: a sweep measuring it refuses that, and the
                        # replicas were already gone; a reviewer)
                        if d.name + RAY_SUFFIX in engine.model_names():
                            engine.unload_model(d.name + RAY_SUFFIX)
                        undeploy(d.name)
                except Exception as err:  # noqa: BLE001 - Ray's own errors too
                    st.error(f"Could not undeploy {d.name}: {type(err).__name__}: {err}")
                else:
                    st.session_state.pop("ray_result", None)
                    st.rerun()
