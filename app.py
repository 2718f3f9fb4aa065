"""Batchlab dashboard: `streamlit run app.py`. Navigation and the shared sidebar only."""

from __future__ import annotations

import streamlit as st

from core import EngineUnavailableError
from pages._common import require_engine, sidebar_status

st.set_page_config(page_title="Batchlab", page_icon=":material/stacks:", layout="wide")

PAGES = [
    st.Page("pages/models.py", title="Models", icon=":material/deployed_code:", default=True),
    st.Page("pages/batching.py", title="Batching", icon=":material/stacks:"),
    st.Page("pages/warmup.py", title="Warm-up", icon=":material/local_fire_department:"),
    st.Page("pages/ab_test.py", title="A/B test", icon=":material/call_split:"),
    st.Page("pages/experiments.py", title="Experiments", icon=":material/science:"),
    st.Page("pages/monitor.py", title="Monitor", icon=":material/monitoring:"),
]

page = st.navigation(PAGES)
if require_engine():
    sidebar_status()
    try:
        page.run()
    except EngineUnavailableError as err:  # the engine went away while the page was drawn
        st.error(f"{err}. Reload the page once it is back.", icon=":material/cloud_off:")
