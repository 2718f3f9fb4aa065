"""Batchlab dashboard: `streamlit run app.py`. Navigation and the shared sidebar only."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import EngineUnavailableError
from pages._common import (require_engine, require_password, retry_until_answering,
                           sidebar_status, sidebar_watch)

# The page icon is a file here, not a Material icon (which the browser would fetch from
# the internet, and which fails offline).
ICON = str(Path(__file__).resolve().parent / ".streamlit" / "icon.png")
st.set_page_config(page_title="Batchlab", page_icon=ICON, layout="wide")

PAGES = [
    st.Page("pages/models.py", title="Models", icon=":material/deployed_code:", default=True),
    st.Page("pages/batching.py", title="Batching", icon=":material/stacks:"),
    st.Page("pages/warmup.py", title="Warm-up", icon=":material/local_fire_department:"),
    st.Page("pages/ab_test.py", title="A/B test", icon=":material/call_split:"),
    st.Page("pages/experiments.py", title="Experiments", icon=":material/science:"),
    st.Page("pages/monitor.py", title="Monitor", icon=":material/monitoring:"),
]

# The navigation is drawn here as page links, not by st.navigation's own menu: with
# client.showSidebarNavigation off, a fresh server never flashes Streamlit's raw list of
# the files in pages/ before this script has run.
page = st.navigation(PAGES, position="hidden")
if not require_password():  # only beyond loopback: a stranger who reaches the port sees this
    st.stop()
with st.sidebar:
    for p in PAGES:
        st.page_link(p)
    st.divider()
if require_engine():
    drawn = None
    try:
        drawn = sidebar_watch()
        page.run()
    except EngineUnavailableError as err:  # the engine went away while the page was drawn
        st.error(f"{err}. Reload the page once it is back.", icon=":material/cloud_off:")
    finally:
        # The sidebar's figures after the page (also when it stopped early): a job or a
        # model the page just started or loaded is in them now, not one refresh later.
        try:
            sidebar_status(drawn)
        except EngineUnavailableError as err:   # (its live fragment never started: this
            st.sidebar.error(f"{err}. The page comes back by itself once it is back.",
                             icon=":material/cloud_off:")
            retry_until_answering()              # one brings the page back instead)
