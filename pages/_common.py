"""Glue shared by the dashboard pages: the one engine, pickers, live-refresh, sidebar.

Only Streamlit glue lives here; every decision about batching, models or metrics is made
in ``core``. The engine lives in its own process, the engine server (``core/server.py``),
so drawing pages never perturbs what it measures; the pages hold a
:class:`~core.client.RemoteEngine`, which has the engine's contract:

* ``BATCHLAB_ENGINE_URL`` unset: the dashboard starts the server as its child
  (``core/serving/launcher.py``) on a free loopback port, and restarts it if it dies;
* ``BATCHLAB_ENGINE_URL=http://host:port``: attach to an engine server running elsewhere;
* ``BATCHLAB_ENGINE_URL=inprocess``: an in-process :class:`~core.Engine` (page tests).

Every browser tab sees the same engine: models, settings, traffic and jobs.
"""

from __future__ import annotations

import atexit
import functools
import hmac
import importlib.util
import os
import secrets
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitAPIException

from core import BatchlabError, Engine, EngineConfig, EngineUnavailableError, ModelNotFoundError
from core.lab import JOB_WORDS
from core.serving import RemoteEngine
from core.ui.fmt import fmt_ms, fmt_num, fmt_pct, fmt_rate, fmt_s  # noqa: F401 - the pages' formats
from core.ui.fmt import (COLUMN_HELP, clock_time, SWEEP_TABLE_LABELS, column_formats, restart_words,
                         sweep_table_columns)
from core.serving import ServerProcess, pin_process, split_cores
from core.serving.guard import is_loopback
from core.serving.state import STATE_ENV
from core.serving import tune_for_serving

__all__ = ["UPLOAD_LIMIT_MB", "get_engine", "reset_engine", "pick_model", "pick_target",
           "choose_model",
           "live_interval", "stop_when_idle", "sidebar_status", "sidebar_watch", "retry_until_answering", "running_traffic", "replaced_note", "fmt_ms", "fmt_num", "fmt_rate",
           "fmt_pct", "fmt_s",
           "require_engine", "live_fragment", "chart_refresh", "chart_refresh_control",
           "CHART_REFRESH_S", "box_refusal", "measuring_job", "settings_held_by", "rate_input", "last_settings_change", "settings_age_s", "traffic_line", "follow_traffic_rate", "paused_for_measurement", "job_progress", "link_to", "pending_traffic", "start_job", "agents_controls", "ENGINE_URL_ENV", "WINDOW_S",
           "require_password", "PASSWORD_ENV"]

#: Where the dashboard finds its engine (see the module docstring).
ENGINE_URL_ENV = "BATCHLAB_ENGINE_URL"

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

#: The live tiles and histograms cover this many recent seconds (totals are cumulative).
WINDOW_S = 30

#: Upload limit, the same as ``server.maxUploadSize`` in .streamlit/config.toml.
UPLOAD_LIMIT_MB = 200

# A page keeps refreshing this long after the last request, so the tail of a run shows.
_IDLE_GRACE_S = 5.0


@st.cache_resource(show_spinner="Starting the engine server and building the demo models...")
def _server_process() -> ServerProcess:
    """The engine server this dashboard started (when no ``BATCHLAB_ENGINE_URL`` is set)."""
    data = Path(os.environ.get("BATCHLAB_DATA_DIR", "data"))
    data.mkdir(parents=True, exist_ok=True)
    port = int(os.environ.get("BATCHLAB_ENGINE_PORT", "0") or 0)
    split = split_cores() if os.environ.get("BATCHLAB_PIN", "1") != "0" else None
    if split is not None:  # the engine and the pages on different cores (pin_process)
        pin_process(split[1])
    # Its models, settings, remote models and experiments are kept here and come back
    # when it is started again (core/serving/state.py).
    state = os.environ.get(STATE_ENV, "").strip() or str(data / "engine-state")
    proc = ServerProcess(port=port, args=["--max-model-mb", str(UPLOAD_LIMIT_MB),
                                          "--state-dir", state],
                         log_path=data / "engine-server.log",
                         cpus=split[0] if split else None).start()
    proc.keep_alive()  # a crash or a kill: reaped and started again within a second
    atexit.register(proc.stop)
    return proc


@st.cache_resource(show_spinner="Connecting to the engine...")
def get_engine() -> Engine | RemoteEngine:
    url = os.environ.get(ENGINE_URL_ENV, "").strip()
    if url == "inprocess":
        # Uploads come from anyone with the page open: each is first run once in a child
        # process under the memory budget and a time limit (core/models/probe.py).
        engine = Engine(EngineConfig(max_model_bytes=UPLOAD_LIMIT_MB * 2**20,
                                     probe_models=True))
        # See core/serving/tuning.py for why this keeps tail latency from following the pages.
        tune_for_serving()
        return engine
    if url:  # an engine server running elsewhere: its token from BATCHLAB_TOKEN
        return RemoteEngine(url)
    proc = _server_process()
    return RemoteEngine(proc.url, token=proc.token)


def reset_engine() -> Engine | RemoteEngine:
    """Close the shared engine (client) and start a fresh one (tests)."""
    try:
        get_engine().close()
    finally:
        get_engine.clear()
    return get_engine()


def _engine_answers(engine: Engine | RemoteEngine) -> bool:
    if not isinstance(engine, RemoteEngine):
        return not engine.closed
    if engine.reachable():
        return True
    if not os.environ.get(ENGINE_URL_ENV, "").strip():
        proc = _server_process()
        try:  # our own child died (a crash, a kill): start it again, on the same port
            with st.spinner("The engine server had stopped; starting it again..."):
                proc.ensure(wait_s=60)
        except EngineUnavailableError:
            return False
        return engine.reachable()
    return False


def _restart_unseen() -> bool:
    """Whether this dashboard restarted its engine server since this session last said so
    (the sidebar's fragment then redraws the page, which says what happened)."""
    if not _own_server():
        return False
    seen = st.session_state.get("_engine_restarts_seen")
    return seen is not None and _server_process().restarts > seen


def _say_if_restarted() -> None:
    """Tell each browser session once that the engine it knew was replaced."""
    if os.environ.get(ENGINE_URL_ENV, "").strip():
        return
    proc = _server_process()
    restarts = proc.restarts
    # A session that starts within a minute of a restart (a reload after the engine died)
    # is told too: it may have known the engine before.
    recent = proc.restarted_at is not None and time.monotonic() - proc.restarted_at < 60
    seen = st.session_state.setdefault("_engine_restarts_seen",
                                       restarts - 1 if recent else restarts)
    if restarts > seen:
        st.session_state["_engine_restarts_seen"] = restarts
        engine = get_engine()
        try:
            restored = engine.server_info(refresh=True).get("restored") \
                if isinstance(engine, RemoteEngine) else None
        except BatchlabError:
            restored = None
        st.session_state[_NOTICE] = restart_words(proc.last_exit, restored)
    # Kept until dismissed: the next whole-page run (traffic stopped by the restart redraws
    # it) took it away within a second, unread (a newcomer)
    if notice := st.session_state.get(_NOTICE):
        st.warning(notice, icon=":material/restart_alt:")
        st.button("Dismiss this notice", key="_restart_notice_ok",
                  on_click=lambda: st.session_state.pop(_NOTICE, None))


#: The last restart's notice of this browser session, shown on every page until dismissed.
_NOTICE = "_restart_notice"


#: The dashboard's password when it listens beyond loopback (else one is made up at start
#: and printed on the console, as Jupyter prints its token).
PASSWORD_ENV = "BATCHLAB_PASSWORD"


def _listens_beyond_loopback() -> bool:
    address = (st.get_option("server.address") or "").strip()
    # Unset: Streamlit listens on every interface; a host name other than localhost: it is
    # reachable from wherever that name resolves.
    return not address or not is_loopback(address)


@st.cache_resource(show_spinner=False)
def _dashboard_password() -> str:
    given = os.environ.get(PASSWORD_ENV, "").strip()
    if given:
        return given
    made = secrets.token_urlsafe(12)
    print(f"\n  Batchlab listens beyond loopback: its password is {made}\n  (set "
          f"{PASSWORD_ENV} to choose one)\n", file=sys.stderr, flush=True)
    return made


def require_password() -> bool:
    """On a dashboard listening beyond loopback, True once this browser session gave the
    password (else a password form is drawn and False returned: draw nothing else). On
    loopback, always True: only this machine's users reach it."""
    if not _listens_beyond_loopback() or st.session_state.get("_password_ok"):
        return True
    st.title("Batchlab", anchor=False)
    st.write("This dashboard listens beyond this machine, so it asks for its password: "
             f"the one in `{PASSWORD_ENV}`, or the one printed on the console that started "
             "it.")
    with st.form("batchlab_login"):
        given = st.text_input("Password", type="password")
        sent = st.form_submit_button("Open the dashboard")
    if sent:
        if hmac.compare_digest(given.encode(), _dashboard_password().encode()):
            st.session_state["_password_ok"] = True
            st.rerun()
        st.error("That is not the password: use the one in "
                 f"`{PASSWORD_ENV}` or printed on the console that started the dashboard.")
    return False


def _own_server() -> bool:
    """Whether the engine is the server this dashboard started (and restarts)."""
    return not os.environ.get(ENGINE_URL_ENV, "").strip()


def _away_words(err: Exception) -> str:
    if _own_server():
        return ("The engine server this dashboard started is not answering; it is being "
                "started again (its models and settings come back from its state folder). "
                "This part of the page comes back by itself.")
    return f"{err}. Retrying every few seconds."


def require_engine() -> bool:
    """True when the engine answers; else say so on the page and retry every 2 s (the
    page comes back by itself when the engine does)."""
    engine = get_engine()
    if _engine_answers(engine):
        _say_if_restarted()
        return True
    where = engine.url if isinstance(engine, RemoteEngine) else "in this process"
    if _own_server() and isinstance(engine, RemoteEngine):
        st.error(f"The engine server this dashboard started ({where}) is not answering and "
                 f"could not be started again yet; see {_server_process().log_path}. This "
                 "page retries every 2 seconds and comes back by itself.",
                 icon=":material/cloud_off:")
    else:
        st.error(f"The engine at {where} is not answering. Start it with `make serve` (or "
                 f"check {ENGINE_URL_ENV}); this page retries every 2 seconds and comes back "
                 "by itself.", icon=":material/cloud_off:")

    retry_until_answering()
    return False


def retry_until_answering() -> None:
    """Every 2 s, ask the engine; rerun the page when it answers (a page drawn while it was
    away, without the sidebar's live fragment, would otherwise wait for a reload)."""
    @st.fragment(run_every=2.0)
    def _retry() -> None:
        if _engine_answers(get_engine()):
            st.rerun(scope="app")

    _retry()


def live_fragment(interval: float | None) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """``st.fragment(run_every=interval)`` whose body survives an engine that stops
    answering: it says so and tries again at the next tick."""
    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        @st.fragment(run_every=interval if interval is not None else None)
        @functools.wraps(fn)
        def run() -> None:
            try:
                fn()
            except EngineUnavailableError as err:
                st.session_state["_engine_was_away"] = True
                st.warning(_away_words(err), icon=":material/cloud_off:")
                return
            if st.session_state.pop("_engine_was_away", False):
                st.rerun(scope="app")  # back: the whole page redraws and says what happened
        return run
    return wrap


#: The model (or experiment) this user last chose on any page: the one every page opens on.
_CURRENT = "_current_model"


def choose_model(name: str, key: str | None = None) -> None:
    """Make ``name`` the model every page opens on (and ``key``'s selectbox's choice)."""
    st.session_state[_CURRENT] = name
    if key is not None:
        st.session_state[key] = name


def _first_choice(names: list[str], engine: Engine | RemoteEngine,
                  default: str | None) -> str:
    """What a page's picker shows first: the model last chosen on any page, else one that
    traffic is running to (then the one the other pages open on, as if chosen: a newcomer
    stopped its traffic and the next page opened on another model), else ``default``, else
    the first."""
    current = st.session_state.get(_CURRENT)
    if current in names:
        return current
    for t in engine.traffic():
        if t.running and t.target in names:
            if t.target in engine.model_names():     # (an experiment is not a model)
                st.session_state[_CURRENT] = t.target
            return t.target
    return default if default in names else names[0]


def _picked(key: str, experiments: tuple[str, ...] = ()) -> None:
    """A choice made: the model other pages open on (an experiment is not one)."""
    if st.session_state[key] not in experiments:
        st.session_state[_CURRENT] = st.session_state[key]


def pick_model(label: str, key: str, engine: Engine | RemoteEngine, default: str | None = None,
               help: str | None = None) -> str | None:
    """A model selectbox that opens on the model this user last chose on any page (or one
    receiving traffic); falls back when a model is gone."""
    names = engine.model_names()
    if not names:
        st.info("No models are loaded. Upload one on the Models page.")
        link_to("Models")
        return None
    _fall_back(key, names, engine, default)
    return st.selectbox(label, names, key=key, help=help, on_change=_picked, args=(key,))


def _fall_back(key: str, names: list[str], engine: Engine | RemoteEngine,
               default: str | None) -> None:
    """The choice of ``key`` when the one shown is gone: another, said (a Monitor tab on an
    experiment deleted in another tab switched to mlp and zeros without a word)."""
    gone = st.session_state.get(key)
    if gone not in names:
        st.session_state[key] = _first_choice(names, engine, default)
        if gone is not None:
            st.info(f"{gone!r} is no longer loaded (unloaded or deleted elsewhere): showing "
                    f"{st.session_state[key]!r}.", icon=":material/info:")


def pick_target(label: str, key: str, engine: Engine | RemoteEngine, default: str | None = None) -> str | None:
    """Like :func:`pick_model` but A/B experiments are offered too."""
    experiments = tuple(engine.ab_experiments())
    names = engine.model_names() + list(experiments)
    if not names:
        st.info("No models are loaded. Upload one on the Models page.")
        link_to("Models")
        return None
    ss = st.session_state
    kept = ss.get(f"_target_{key}")   # (this page's last choice, and the model chosen then)
    if key not in ss and kept and kept[0] not in engine.model_names() \
            and kept[1] == ss.get(_CURRENT):
        # an experiment picked here, and no model picked anywhere since: it again (the
        # page opened on the last model another page picked; a newcomer). Gone: said.
        ss[key] = kept[0]
    _fall_back(key, names, engine, default)
    choice = st.selectbox(label, names, key=key, on_change=_picked, args=(key, experiments),
                          format_func=lambda n: f"{n} (A/B experiment)"
                          if n in experiments else n)
    ss[f"_target_{key}"] = (choice, ss.get(_CURRENT))
    return choice


def start_job(engine: Engine | RemoteEngine, kind: str, target: str, failure: str,
              **params: Any) -> None:
    """Start a job in the engine (it goes on if the page is left, and every tab sees it)
    and redraw the page to show its progress; if it cannot start, say why after
    ``failure`` ("Could not measure: ...")."""
    try:
        engine.start_job(kind, target, **params)
    except BatchlabError as err:
        st.error(f"{failure}: {err}")
    else:
        st.rerun()


def agents_controls(key: str, narrow: bool = False, what: str = "Send") -> dict[str, Any]:
    """The job parameters sending a job's load from load agents on a Ray cluster
    (``core.lab.agents``): {} to send from the engine's own process (the default, and
    always where Ray is not installed). ``what`` names it ("Replay": two on one page)."""
    if importlib.util.find_spec("ray") is None:
        return {}
    with st.expander(f"{what} from load agents on a Ray cluster"):
        st.caption("For a rate one process can't offer: agents (Ray actors, spread over the "
                   "cluster's nodes) share one open-loop schedule and send at its times over "
                   "HTTP, to the engine's server or a remote model's; their results are "
                   "merged into one. The engine's server must be reachable from the nodes.")
        a1, a2 = (st, st) if narrow else st.columns([1, 2])
        n = a1.number_input("Load agents (0: none)", 0, 64, 0, key=f"{key}_agents",
                            help="Each takes up to one CPU of the cluster (less on a node with less "
                                 "free).")
        address = a2.text_input("Ray cluster address", key=f"{key}_ray_address",
                                placeholder="HOST:PORT of its head; empty: a local Ray",
                                help="Empty: the Ray the engine is connected to, else one "
                                     "it starts on its own machine.")
    return {"agents": int(n), "ray_address": address.strip() or None} if n else {}


def _cancel_job(engine: Engine | RemoteEngine, job_id: int, key: str) -> None:
    """Cancel, from a button: a job another tab's engine restart took away is no longer
    there to cancel, not a traceback in place of the page; any other refusal (the engine
    server gone) is said above the job's line (``key``), not passed over."""
    try:
        engine.cancel_job(job_id)
    except ModelNotFoundError:   # (gone: nothing left to stop)
        pass
    except BatchlabError as err:
        st.session_state[f"{key}_cancel_error"] = f"Job {job_id} not cancelled: {err}"


def job_progress(engine: Engine | RemoteEngine, kind: str, target: str,
                 key: str) -> Any:
    """The latest ``kind`` job on ``target`` (a :class:`~core.JobStatus`, or None), drawn:
    live progress with a Cancel button while it runs (in every tab: jobs belong to the
    engine, not to the page that started them), its error if it failed."""
    jobs = engine.jobs(kind=kind, target=target)
    if not jobs:
        return None
    latest = jobs[0]
    words = JOB_WORDS.get(kind, kind.replace("_", " "))   # ("Warmup of cnn"; a newcomer)
    if refused := st.session_state.pop(f"{key}_cancel_error", None):
        st.error(refused)
    if latest.state == "failed":
        st.error(f"The {words} of {target} failed: {latest.error}")
    elif latest.state == "cancelled":
        st.warning(f"The {words} of {target} was cancelled after {latest.duration_s:.1f} s.")
    if latest.finished:
        full = engine.job(latest.job_id)  # with its result
        result = full.result if isinstance(full.result, dict) else {}   # (a warm-up's
        if note := result.get("history_note"):   # report, a frame: not a sweep's)
            # (nothing lost: said, and its points to download)
            st.warning(f"The {words} of {target}: {note}.")
            if (frame := result.get("frame")) is not None:
                st.download_button("Download its points (CSV)",
                                   pd.DataFrame(frame).to_csv(index=False),
                                   file_name=f"{kind}-{latest.job_id}.csv",
                                   key=f"{key}_points")
        return full

    @live_fragment(1.0)
    def _watch() -> None:
        # (a Cancel click reruns this fragment only: its refusal said here, at once, and
        # at each redraw until the page's next whole run, which says it a last time)
        if refused := st.session_state.get(f"{key}_cancel_error"):
            st.error(refused)
        job = engine.job(latest.job_id)
        if job.finished:
            st.rerun(scope="app")
        c1, c2 = st.columns([5, 1])
        c1.progress(job.progress, text=f"{words[:1].upper() + words[1:]} of {target}: "
                    f"{job.message} ({job.duration_s:.0f} s)")
        c2.button("Cancel", key=f"{key}_cancel", on_click=_cancel_job,
                  args=(engine, job.job_id, key), help="Stop at the next step; finished steps are "
                                                  "kept.")
        if job.partial:   # (a sweep's points as its finished table shows them)
            partial = pd.DataFrame(job.partial)
            sweep = kind == "sweep"
            st.dataframe(partial, hide_index=True, key=f"{key}_partial",
                         column_order=sweep_table_columns(partial) if sweep else None,
                         column_config=number_columns(partial,
                                                      SWEEP_TABLE_LABELS if sweep else None))

    _watch()
    return latest


def number_columns(frame: pd.DataFrame, labels: dict[str, str] | None = None
                   ) -> dict[str, Any]:
    """``column_config`` for a table of measurements: ms to 0.01, rates whole, shares as
    percents (:func:`core.ui.fmt.column_formats`), not 1499.2345678; ``labels``: headers
    in words for some columns."""
    labels = labels or {}
    config: dict[str, Any] = {c: st.column_config.Column(   # (a disturbance's words were
        label, help=COLUMN_HELP.get(c), width="large" if c == "disturbed" else None)  # cut)
        for c, label in labels.items() if c in frame.columns}
    config.update({c: st.column_config.NumberColumn(labels.get(c), format=f,
                                                    help=COLUMN_HELP.get(c))
                   for c, f in column_formats(frame.columns).items()
                   if pd.api.types.is_numeric_dtype(frame[c])})
    return config


def measuring_job(engine: Engine | RemoteEngine) -> Any:
    """The lab job measuring now (a sweep, replay, warm-up, profile...), or None."""
    for j in engine.jobs():
        if not j.finished:
            return j
    return None


#: The page that shows each kind of job's progress (a replay's was said to be on the
#: Experiments page, which shows no replays; a newcomer).
_JOB_PAGE = {"sweep": "Experiments", "search": "Experiments", "profile_cost": "Experiments",
             "replay": "Batching", "warmup": "Warm-up", "measure_memory": "Models"}


#: The dashboard's pages by title (app.py's navigation), for links where a page says
#: "on the ... page".
_PAGE_FILES = {"Models": "pages/models.py", "Batching": "pages/batching.py",
               "Warm-up": "pages/warmup.py", "A/B test": "pages/ab_test.py",
               "Experiments": "pages/experiments.py", "Monitor": "pages/monitor.py"}


def link_to(title: str) -> None:
    """A link to the ``title`` page below a line that sends the reader there (it was named
    only, and found in the menu; a newcomer). Nothing for a page run outside app.py's
    navigation (``streamlit run pages/x.py``), where no such page is known."""
    try:
        st.page_link(_PAGE_FILES[title], label=f"Open the {title} page",
                     icon=":material/arrow_forward:")
    except StreamlitAPIException:
        pass


def paused_for_measurement(engine: Engine | RemoteEngine, interval: float | None,
                           here: str | None = None) -> bool:
    """(At the top of a live fragment.) While a lab job measures, live charts are not
    drawn: drawing them takes CPU from the engine being measured (a chart redraw costs the
    browser and Streamlit most of a core). Says so, keeps watching for the end, and
    returns True; False when nothing measures. ``here``: the calling page's title (no
    link to the page the reader is on: a replay's pause on the Batching page linked to
    the Batching page)."""
    job = measuring_job(engine)
    if job is None:
        return False
    page = _JOB_PAGE.get(job.kind, "Experiments")
    st.info(f"Live charts are paused while the {JOB_WORDS.get(job.kind, job.kind)} of "
            f"{job.target} measures ({job.progress:.0%}, {job.duration_s:.0f} s), so that "
            "drawing them does not disturb what it measures. They come back when it ends; "
            + ("its progress is further down this page." if page == here else
               f"its progress is on the {page} page."),
            icon=":material/pause_circle:")
    if page != here:
        link_to(page)
    stop_when_idle(engine, interval)
    return True


def _recently_active(engine: Engine | RemoteEngine) -> bool:
    """Traffic running (or its answers still coming), a job running, or requests still
    queued (a model draining after traffic stopped)."""
    for status in engine.traffic():
        if status.running or status.in_flight > 0:
            return True
    if measuring_job(engine) is not None:
        return True
    return engine.status()["queue_depth"] > 0


#: While nothing runs, live parts still look this often whether something started (from
#: another tab, a notebook, the API), and speed up when it has.
IDLE_WATCH_S = 5.0


#: How often live numbers (tiles, tables) refresh while something runs (seconds). Each
#: refresh reruns a fragment: the browser and the dashboard pay for it even when nothing
#: but digits change (docs/benchmarks.md, "Looking").
NUMBERS_REFRESH_S = 2.0


def live_interval(engine: Engine | RemoteEngine,
                  seconds: float = NUMBERS_REFRESH_S) -> float | None:
    """How often live charts refresh: every ``seconds`` while something runs, else every
    :data:`IDLE_WATCH_S` to notice when something starts; None (not at all) while this
    browser tab is hidden (:func:`watch_visibility`)."""
    if st.session_state.get(_HIDDEN_KEY, False):
        return None
    active = _recently_active(engine)
    st.session_state[_DRAWN_ACTIVE_KEY] = active  # what stop_when_idle compares with
    return seconds if active else IDLE_WATCH_S


# A hidden tab (another tab in front, the window minimised) draws nothing: the browser
# tells the page through this component and the page reruns with live parts stopped; when
# the tab shows again it reruns with them back. No HTML: it is not seen.
_VISIBILITY_JS = """
export default function(component) {
  const { setStateValue } = component;
  const send = () => setStateValue("hidden", document.visibilityState === "hidden");
  document.addEventListener("visibilitychange", send);
  if (document.visibilityState === "hidden") send();
  return () => document.removeEventListener("visibilitychange", send);
}
"""
_HIDDEN_KEY = "_tab_hidden"
_DRAWN_ACTIVE_KEY = "_live_drawn_active"
_visibility = None


def watch_visibility() -> bool:
    """Mount the tab-visibility watcher (once per page run, before live intervals are
    chosen); True while the tab is hidden."""
    global _visibility
    if _visibility is None:
        _visibility = st.components.v2.component("batchlab_visibility", js=_VISIBILITY_JS)
    result = _visibility(key="batchlab_visibility", default={"hidden": False},
                         on_hidden_change=lambda: None, height=0)
    hidden = bool(getattr(result, "hidden", False))
    st.session_state[_HIDDEN_KEY] = hidden
    return hidden


#: How often live charts redraw while something runs, by default (seconds): a redraw costs
#: the browser ~60 ms of CPU per chart and the dashboard a figure each, so drawing eight
#: charts every second keeps most of a core busy (docs/benchmarks.md, "Looking").
CHART_REFRESH_S = float(os.environ.get("BATCHLAB_CHART_REFRESH_S", "5"))
CHART_REFRESH_CHOICES = (1.0, 2.0, 5.0, 10.0)


def chart_refresh(interval: float | None) -> float | None:
    """The charts' refresh period for a page whose numbers refresh every ``interval``: the
    user's choice (``chart_refresh_s`` in the session, the control from
    :func:`chart_refresh_control`), never faster than the numbers."""
    if interval is None:
        return None
    # (None, seen once from the control on a run that had not drawn it yet: the default)
    chosen = float(st.session_state.get("chart_refresh_s") or CHART_REFRESH_S)
    return max(interval, chosen)


def chart_refresh_control() -> None:
    """A control for how often live charts redraw (kept for this browser session)."""
    if st.session_state.get("chart_refresh_s") is None:
        st.session_state["chart_refresh_s"] = CHART_REFRESH_S
    st.segmented_control(
        "Charts redraw every", CHART_REFRESH_CHOICES, key="chart_refresh_s", required=True,
        format_func=lambda s: f"{s:g} s",
        help="Each redraw costs your browser and the dashboard CPU; on a machine shared with "
             "the engine that shows up in its tail latency. The numbers above the charts "
             f"refresh every {NUMBERS_REFRESH_S:g} s; a hidden tab draws nothing.")


def stop_when_idle(engine: Engine | RemoteEngine, interval: float | None) -> None:
    """Called at the end of a live fragment built with ``run_every=interval``: when
    activity started or stopped since the page was drawn, rerun the page so the fragment
    gets the matching timer (fast while something runs, slow while idle)."""
    if interval is None:
        return
    drawn_active = st.session_state.get(_DRAWN_ACTIVE_KEY, interval < IDLE_WATCH_S)
    if drawn_active != _recently_active(engine):
        st.rerun(scope="app")


def sidebar_watch() -> dict | None:
    """Before the page: the tab's visibility watcher (the page's live refresh reads it) and
    the engine's settings the page's widgets are about to be drawn from (for
    :func:`sidebar_status`)."""
    with st.sidebar:
        watch_visibility()
    return get_engine().status().get("settings")


def sidebar_status(drawn: dict | None = None) -> None:
    """The engine at a glance, in a live fragment (it also notices the engine's restart).
    ``drawn``: the settings the page's widgets are drawn from (:func:`sidebar_watch`)."""
    engine = get_engine()
    interval = live_interval(engine, IDLE_WATCH_S)  # the sidebar: a glance, not a chart
    if drawn is None:
        drawn = engine.status().get("settings")

    @live_fragment(interval)
    def _status() -> None:
        if _restart_unseen():  # the engine was replaced since this page was drawn
            st.rerun(scope="app")
        status = engine.status()
        settings = status.get("settings")
        if settings != drawn:
            # Settings changed elsewhere (another tab, a notebook): redraw, so no widget
            # shows a value the engine no longer has. Only when two ticks in a row saw the
            # same new settings: this tab's own change is drawn by its own rerun, and a
            # redraw landing on that one could swallow the next key press. Not while a
            # sweep changes them point by point (redrawing would take CPU from it).
            if st.session_state.get("_settings_seen") == settings \
                    and measuring_job(engine) is None:
                st.rerun(scope="app")
            st.session_state["_settings_seen"] = settings
        st.caption("ENGINE")
        c1, c2 = st.columns(2)
        c1.metric("Models", status["models"])
        # (599/s beside shadow traffic of 300/s read as wrong; a newcomer)
        c2.metric("Requests/s", fmt_rate(status["throughput_rps"]).removesuffix("/s"),
                  help="Requests every model answered per second, together: the copies a "
                       "shadow A/B experiment sends its B count as B's model's requests.")
        c1.metric("Queued", status["queue_depth"])
        c2.metric("Errors", fmt_num(status["error_count"]),
                  help="Requests that did not get an answer, whatever the reason: failed runs "
                       "and requests refused or timed out (a traffic line counts those as "
                       "'failed' and 'refused'). A total, since each model was loaded or its "
                       "metrics reset (the Monitor's reset): it does not go down when the "
                       "errors stop; the Monitor charts them per second.")
        traffic = engine.traffic()
        running = list(dict.fromkeys(t.label for t in traffic if t.running))
        # (green while every request was refused read as all well; a newcomer)
        failing = list(dict.fromkeys(t.label for t in traffic if t.running and t.problem))
        jobs = [job for job in engine.jobs() if not job.finished]
        if failing:
            st.warning(f"Traffic running to {', '.join(running)}; requests to "
                       f"{', '.join(failing)} are failing or refused (below)",
                       icon=":material/bolt:")
        elif running:
            st.success(f"Traffic running to {', '.join(running)}", icon=":material/bolt:")
        elif jobs:
            st.caption("No traffic running. The job below sends its own load.")
        elif status["throughput_rps"] > 0:
            st.caption("No traffic running. Requests/s counts the last seconds (traffic "
                       "just stopped, or requests from elsewhere).")
        else:
            st.caption("No traffic running.")
        # Lines that come and go each sit in a container of their own, so that the job
        # lines below keep their place: while a rerun draws, the browser keeps showing the
        # previous run's elements past the ones already redrawn, and a job line that moved
        # up by one would show twice until the rerun ends.
        with st.container():
            for t in traffic:
                if t.running and t.problem:
                    st.error(t.problem, icon=":material/error:")
                if t.running and t.client_bound:   # (in a line: the page's traffic line
                    # says it all; both in full said it twice on one screen; a newcomer)
                    st.warning(t.client_bound_brief, icon=":material/speed:")
            if status["queue_depth"] > 0 and not running and not jobs:
                st.warning(f"Draining: {fmt_num(status['queue_depth'])} requests still "
                           "queued.", icon=":material/hourglass_top:")
        with st.container():
            for job in jobs:
                st.progress(job.progress, text=f"{JOB_WORDS.get(job.kind, job.kind)} of "
                                               f"{job.target}: {job.message}")
        stop_when_idle(engine, interval)

    with st.sidebar:
        _status()
        chart_refresh_control()


def traffic_line(engine: Engine | RemoteEngine, target: str) -> None:
    """The built-in traffic to ``target`` as it runs (wherever it was started): rate,
    pattern, counts, client CPU, and what goes wrong if anything does."""
    for t in engine.traffic():
        if t.target != target:
            continue
        cls = getattr(t, "priority", None)
        st.caption(f"{'Running' if t.running else 'Stopped'}"
                   + (f" ({'high' if cls == 1 else 'normal'} class)" if cls is not None else "")
                   + f": {plain_number(t.rate_rps)} req/s "
                   f"{t.pattern}, {t.rows_per_request} row(s)"
                   + (f", {t.high_share:.0%} high priority" if getattr(t, "high_share", None)
                      is not None else "") + f" · sent {fmt_num(t.sent)} · "
                   f"served {fmt_num(t.succeeded)} · failed {fmt_num(t.failed)} · refused "
                   f"{fmt_num(t.refused)} · "
                   + (f"from {t.agents} load agent(s) on Ray (counted as answers come "
                      f"back), busiest agent's CPU {t.client_cpu_pct:.0f} %"
                      if getattr(t, "agents", 0) else
                      f"client CPU {t.client_cpu_pct:.0f} %"))
        if getattr(t, "note", None):
            st.caption(f"{t.note[0].upper()}{t.note[1:]}...")
        if unsent := getattr(t, "unsent", 0):   # (only the events said it)
            st.warning(f"The sender fell behind its schedule and stopped with its duration: "
                       f"about {unsent:,} requests due were not sent, so the load "
                       "was lighter than asked (this process could not send "
                       f"{plain_number(t.rate_rps)} req/s).")
        if t.problem:
            st.error(t.problem)
        elif not t.running and t.last_error and getattr(t, "agents", 0) and not t.sent:
            st.error(f"The load agents sent nothing: {t.last_error}")
        elif not t.running and t.in_flight > 0:
            st.caption(f"Answering the last {fmt_num(t.in_flight)} requests...")
        if not t.problem and (t.failed or t.refused) and t.last_error:
            # (a few failures are not a problem to shout about, but never unexplained)
            by_type = dict(getattr(t, "refused_by_type", None) or {})
            for kind, n in (getattr(t, "failed_by_type", None) or {}).items():
                by_type[kind] = by_type.get(kind, 0) + n
            # (counts of this generator's whole run: SLOShedError from an adaptive spell
            # read as AIMD's, which sheds nothing; a newcomer)
            st.caption("Failed or refused since this traffic started: "
                       + (", ".join(f"{n:,} {k}" for k, n in by_type.items()) + "; "
                          if by_type else "") + f"the last: {t.last_error}")
        if t.client_bound:
            st.warning(t.client_bound)


def running_traffic(engine: Engine | RemoteEngine, target: str,
                    priority: int | None = None) -> list[Any]:
    """The built-in generators running to ``target`` (of the class ``priority``): what a
    Start would replace."""
    return [t for t in engine.traffic() if t.target == target and t.running
            and getattr(t, "priority", None) == priority]


def replaced_note(old: list[Any]) -> str | None:
    """What a page says after its Start replaced a running generator (``old``, from
    :func:`running_traffic` before the start): its counts leave the traffic line."""
    if not old:
        return None
    t = old[0]
    return (f"Replaced the generator that was running (it had sent {fmt_num(t.sent)}, "
            f"served {fmt_num(t.succeeded)}, refused {fmt_num(t.refused)}): the line below "
            "counts the new one; the metrics and the sidebar count both.")


def follow_traffic_rate(engine: Engine | RemoteEngine, target: str, key: str,
                        default: int, priority: int | None = None,
                        rows_key: str | None = None) -> None:
    """Before the rate box ``key`` is drawn (without a value of its own: ``default`` is set
    here): when traffic runs to ``target`` (in the class ``priority``: the generator the
    box starts) at a rate this box has not followed yet (started in another tab or a
    notebook), show that rate. A value typed here stays until the running traffic
    changes, and outlives a visit to another page (:func:`keep_values`). A new session (a
    reload) shows a target and class first at the last traffic's rate, stopped or not (it
    showed ``default``, not the 200/s just stopped). ``rows_key``: the form's rows box,
    set with the rate to the followed traffic's rows per request (after a reload it read
    1 beside "Running: ... 4 row(s)", and Start then changed the rows unsaid; a newcomer)."""
    seen = f"_{key}_seen_{target}_{priority}"   # (a key Streamlit never cleans up)
    fresh = seen not in st.session_state          # (this target and class, first time)
    st.session_state[seen] = True
    keep_values({key: float(default)})
    for t in engine.traffic():
        if t.target == target and getattr(t, "priority", None) == priority and (
                t.running or fresh):
            rate = float(round(t.rate_rps, 2))
            if fresh or st.session_state.get(f"_{key}_followed") != rate:
                st.session_state[f"_{key}_followed"] = rate
                st.session_state[key] = rate
                if rows_key is not None and getattr(t, "rows_per_request", None):
                    st.session_state[rows_key] = int(t.rows_per_request)


def last_settings_change(engine: Engine | RemoteEngine, model: str, within_s: float
                         ) -> tuple[float, str] | None:
    """Seconds since ``model``'s settings last changed, if that was within ``within_s``,
    and the clock time it was (``'18:23:05'``: the same in every fragment of a page, where
    ages drawn seconds apart read "15 s ago" and "11 s ago" of one change; a newcomer)."""
    events = engine.events(model, since_s=within_s)
    changes = events[(events["target"] == model) & (events["kind"] == "settings")]
    if changes.empty:
        return None
    when = pd.Timestamp(changes["time"].iloc[-1])
    when = when.tz_localize("UTC") if when.tzinfo is None else when   # (UTC, as the series)
    clock = clock_time(when.timestamp())   # (as the charts below it: UTC)
    return max(0.0, (pd.Timestamp.now(tz="UTC") - when).total_seconds()), clock


settings_age_s = last_settings_change   # (its name before session 38: kept for callers)


def pending_traffic(engine: Engine | RemoteEngine, target: str, key: str,
                    priority: int | None = None, rows_key: str | None = None) -> None:
    """Under a traffic form: when a generator runs to ``target`` (in class ``priority``)
    at another rate (or rows) than the boxes ``key`` / ``rows_key`` say, that those are
    sent only at Start (250 typed beside "Running: 100 req/s" changed nothing, unsaid,
    where the sliders beside it apply live; a newcomer)."""
    rate = st.session_state.get(key)
    rows = st.session_state.get(rows_key) if rows_key else None
    for t in engine.traffic():
        if t.target != target or not t.running or getattr(t, "priority", None) != priority:
            continue
        if (isinstance(rate, (int, float)) and abs(float(rate) - t.rate_rps) > 1e-6) or (
                isinstance(rows, (int, float)) and int(rows) != t.rows_per_request):
            st.caption(f"The traffic running sends {plain_number(t.rate_rps)} req/s"
                       + (f", {t.rows_per_request} row(s)" if rows_key else "")
                       + ": what the boxes say is sent once you press Start (it replaces "
                       "the running traffic).")


def rate_input(key: str) -> None:
    """The rate box of a traffic form (after :func:`follow_traffic_rate`): any rate the
    generators take, 0.1 to 1,000,000 req/s (it took whole numbers only: 0.5 became 0, and
    the refusal then said "got 0.0"; and -100 waited for Start to be refused). A
    :func:`number_box`: 0 typed there started the rate shown before (200 req/s; a
    newcomer); it is said at once here and refused at Start (:func:`box_refusal`)."""
    ss = st.session_state
    if ss.get(key) is None:
        ss[key] = 0.1
    number_box(st, "Rate (requests/s)", key, 0.1, 1_000_000.0, step=50.0, format="%g",
               help="Requests per second the generator sends, 0.1 to 1,000,000.",
               words=lambda rate: f"A rate of {plain_number(rate)} req/s cannot be sent",
               below=" (to send nothing, Stop traffic)")


def plain_number(v: float) -> str:
    """A number as people write it: 1,000,000,000 (not 1e+09 or 1000000000.0), 0.5."""
    try:
        whole = float(v).is_integer() and abs(v) < 1e18
    except (TypeError, ValueError, OverflowError):
        return str(v)
    return f"{v:,.0f}" if whole else f"{v:,g}"


def _box_ranges() -> dict[str, tuple[float, float]]:
    """The bounds each :func:`number_box` was last drawn with, in this browser session:
    a box's bounds may be a model's (rows per request up to its max batch size), and one
    dictionary for the process let another tab's model bound this tab's Start (a
    reviewer)."""
    return st.session_state.setdefault("_box_ranges", {})


def number_box(where: Any, label: str, key: str, low: float, high: float,
               words: Callable[[float], str] | None = None, below: str = "",
               **kw: Any) -> Any:
    """A number box with no bounds of its own that says at once, in words, when its value
    is past ``low``..``high``: a value past a box's bounds is not taken, and what acted on
    it used the one shown before, unsaid (0 rows started 4, a 150 % share started none;
    a newcomer). Whatever acts on the value refuses it too (:func:`box_refusal`, the
    engine's words). ``words`` says a value that cannot be used (``below`` is added when it
    is under ``low``). Returns the value (None: empty)."""
    _box_ranges()[key] = (low, high)
    value = where.number_input(label, None, None, key=key, **kw)
    if value is not None and not low <= value <= high:
        said = words(value) if words else f"{plain_number(value)} cannot be used"
        where.error(f"{said}: give {plain_number(low)} to {plain_number(high)}"
                    + (below if value < low else ""), icon=":material/error:")
    return value


def box_refusal(key: str, what: str, empty_ok: bool = False) -> str | None:
    """Why the value in :func:`number_box` ``key`` cannot be used, in words naming it
    ``what`` (None: it can). Its range is the one the box was drawn with, so what acts on
    the value (a button, a callback) does not keep a copy of the box's bounds."""
    ranges = _box_ranges()
    if key not in ranges:   # (not drawn in this session yet: the engine judges it)
        return None
    low, high = ranges[key]
    value = st.session_state.get(key)
    if value is None:
        return None if empty_ok else f"{what} is empty; give {plain_number(low)} to " \
                                     f"{plain_number(high)}"
    if not low <= value <= high:
        return (f"{what} is {plain_number(value)}; give {plain_number(low)} to "
                f"{plain_number(high)}")
    return None


def settings_held_by(engine: Engine | RemoteEngine, model: str) -> Any:
    """The sweep, search or cost profile measuring ``model`` now (it sets the model's
    settings point by point, and the engine refuses other changes until it ends), or None."""
    return next((j for j in engine.jobs(target=model)
                 if not j.finished and j.params.get("own_settings")), None)


def own_settings(engine: Engine | RemoteEngine, model: str) -> Any:
    """The model's own batch settings: while a sweep, search or profile of it runs (with
    its settings pinned), as that job recorded them; else the engine's."""
    held = settings_held_by(engine, model)
    if held is not None:
        return SimpleNamespace(**held.params["own_settings"])
    return engine.batch_config(model)


def keep_values(defaults: dict[str, Any]) -> None:
    """Form values that outlive a visit to another page. Streamlit forgets a widget's value
    when a run does not draw it (the user is on another page), so a sweep's grid or a
    traffic form came back at its defaults. Called before the widgets: each key gets its last
    value (kept under ``_kept_<key>``, which Streamlit does not clean up) or its default; the
    widgets are then drawn without a default of their own (else Streamlit warns that the
    value was set twice)."""
    ss = st.session_state
    for key, default in defaults.items():
        shadow = f"_kept_{key}"
        if key not in ss:
            ss[key] = ss.get(shadow, default)
        ss[shadow] = ss[key]
