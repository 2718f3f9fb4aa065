"""Glue shared by the dashboard pages: the one engine, pickers, live-refresh, sidebar.

Only Streamlit glue lives here; every decision about batching, models or metrics is made
in ``core``. The engine is created once per server process (``st.cache_resource``), so
every browser tab sees the same models, settings and traffic.
"""

from __future__ import annotations

import math
from typing import Any

import streamlit as st

from core import Engine, EngineConfig
from core.process import tune_for_serving

__all__ = ["UPLOAD_LIMIT_MB", "get_engine", "reset_engine", "pick_model", "pick_target",
           "live_interval", "stop_when_idle", "sidebar_status", "fmt_ms", "fmt_num", "fmt_rate"]

def _leave_pages_directory_mode() -> None:
    """Make a deep link (``/monitor``) on a fresh server go through ``app.py``.

    Streamlit starts in its old "pages/ directory" mode when a ``pages/`` folder exists and
    only leaves it once ``st.navigation`` has run. Until then a deep link would run the page
    file alone: no sidebar, no layout, the old file-list navigation. Leave that mode and
    rerun, so the request is served by ``app.py``'s navigation like every other.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
        from streamlit.runtime.scriptrunner import get_script_run_ctx
    except ImportError:  # a Streamlit without these has no such mode
        return
    if get_script_run_ctx() is None:  # imported by tests or tools, not by a page run
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


_leave_pages_directory_mode()

#: Upload limit, the same as ``server.maxUploadSize`` in .streamlit/config.toml.
UPLOAD_LIMIT_MB = 200

# A page keeps refreshing this long after the last request, so the tail of a run shows.
_IDLE_GRACE_S = 5.0


@st.cache_resource(show_spinner="Starting the engine and building the demo models...")
def get_engine() -> Engine:
    # Uploads come from anyone with the page open: each is first run once in a child
    # process under the memory budget and a time limit (core/probe.py).
    engine = Engine(EngineConfig(max_model_bytes=UPLOAD_LIMIT_MB * 2**20, probe_models=True))
    # The server's own work (charts, pandas) shares the GIL with the batchers: see
    # core/process.py for why this keeps tail latency from following the dashboard.
    tune_for_serving()
    return engine


def reset_engine() -> Engine:
    """Close the shared engine and start a fresh one (tests, and the sidebar's reset)."""
    try:
        get_engine().close()
    finally:
        get_engine.clear()
    return get_engine()


def pick_model(label: str, key: str, engine: Engine, default: str | None = None,
               help: str | None = None) -> str | None:
    """A model selectbox whose choice is kept per user; falls back when a model is gone."""
    names = engine.model_names()
    if not names:
        st.info("No models are loaded. Upload one on the Models page.")
        return None
    if st.session_state.get(key) not in names:
        st.session_state[key] = default if default in names else names[0]
    return st.selectbox(label, names, key=key, help=help)


def pick_target(label: str, key: str, engine: Engine, default: str | None = None) -> str | None:
    """Like :func:`pick_model` but A/B experiments are offered too."""
    names = engine.model_names() + engine.ab_experiments()
    if not names:
        st.info("No models are loaded. Upload one on the Models page.")
        return None
    if st.session_state.get(key) not in names:
        st.session_state[key] = default if default in names else names[0]
    return st.selectbox(label, names, key=key,
                        format_func=lambda n: f"{n} (A/B experiment)"
                        if n in engine.ab_experiments() else n)


def _recently_active(engine: Engine) -> bool:
    for status in engine.traffic():
        if status.running or status.in_flight > 0:
            return True
    return False


def live_interval(engine: Engine, seconds: float = 1.0) -> float | None:
    """How often live charts refresh: every ``seconds`` while traffic runs, else never."""
    return seconds if _recently_active(engine) else None


def stop_when_idle(engine: Engine, interval: float | None) -> None:
    """Called at the end of a live fragment built with ``run_every=interval``: once the
    traffic has ended, rerun the page once so the fragment is rebuilt without a timer
    (live charts stop updating when nothing runs)."""
    if interval is not None and not _recently_active(engine):
        st.rerun(scope="app")


def sidebar_status() -> None:
    engine = get_engine()
    interval = live_interval(engine, 2.0)

    @st.fragment(run_every=interval)
    def _status() -> None:
        status = engine.status()
        st.caption("ENGINE")
        c1, c2 = st.columns(2)
        c1.metric("Models", status["models"])
        c2.metric("Requests/s", fmt_rate(status["throughput_rps"]).removesuffix("/s"))
        c1.metric("Queued", status["queue_depth"])
        c2.metric("Errors", fmt_num(status["error_count"]))
        running = [t.target for t in engine.traffic() if t.running]
        if running:
            st.success(f"Traffic running to {', '.join(running)}", icon=":material/bolt:")
        else:
            st.caption("No traffic running.")
        stop_when_idle(engine, interval)

    with st.sidebar:
        _status()


def fmt_ms(v: float | None) -> str:
    """Compact milliseconds for metric tiles: '0.42 ms', '5.5 ms', '120 ms'."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if v < 1:
        return f"{v:.2f} ms"
    return f"{v:.1f} ms" if v < 100 else f"{v:.0f} ms"


def fmt_rate(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.0f}/s"


def fmt_num(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.1f}"
    return f"{int(v):,}"
