"""Batchlab dashboard: `streamlit run app.py`. Navigation and the shared sidebar only."""

from __future__ import annotations

from pathlib import Path

import streamlit as st


# The page icon is a file here, not a Material icon (which the browser would fetch from
# the internet, and which fails offline).
ICON = str(Path(__file__).resolve().parent / ".streamlit" / "icon.png")


def main() -> None:
    # What the upload endpoint holds, bounded from the first script run on, before anything
    # slow (Streamlit caps each file, not their sum: a session could PUT 200 MB files
    # until memory ran out)
    from pages._uploads import bound_dashboard_uploads, uploads_let_go
    bound_dashboard_uploads()
    from core import EngineUnavailableError
    from pages._common import require_engine, require_password, sidebar_status, sidebar_watch
    st.set_page_config(page_title="Batchlab", page_icon=ICON, layout="wide")

    PAGES = [
        st.Page("pages/models.py", title="Models", icon=":material/deployed_code:",
                default=True, url_path="home"),
        st.Page("pages/batching.py", title="Batching", icon=":material/stacks:"),
        st.Page("pages/warmup.py", title="Warm-up", icon=":material/local_fire_department:"),
        st.Page("pages/ab_test.py", title="A/B test", icon=":material/call_split:"),
        st.Page("pages/experiments.py", title="Experiments", icon=":material/science:"),
        st.Page("pages/monitor.py", title="Monitor", icon=":material/monitoring:"),
    ]
    # The Models page is served at "/"; "/models", as every other page is named, read
    # "Page not found" (a newcomer): the same page there too, out of the menu.
    MODELS_AT_ITS_NAME = st.Page("pages/models.py", title="Models", url_path="models",
                                 icon=":material/deployed_code:", visibility="hidden")

    # The navigation is drawn here as page links, not by st.navigation's own menu: with
    # client.showSidebarNavigation off, a fresh server never flashes Streamlit's raw list of
    # the files in pages/ before this script has run.
    page = st.navigation([*PAGES, MODELS_AT_ITS_NAME], position="hidden")
    # The tab says which page it is (every tab read "Batchlab"; a newcomer with several open)
    st.set_page_config(page_title=f"{page.title} · Batchlab")
    if not require_password():  # only beyond loopback: a stranger who reaches the port sees it
        st.stop()
    with st.sidebar:
        for p in PAGES:
            st.page_link(p)
        st.divider()
    if require_engine():
        # The sidebar before the page (drawn after it, the figures followed the page's own
        # actions at once, but in two of three clean-clone CI runs an open page then missed
        # its engine's restart: tests/test_browser.py, the engine dying; see the session note).
        sidebar_status(sidebar_watch())
        if said := uploads_let_go():
            st.warning(said, icon=":material/upload_file:")
        try:
            page.run()
        except EngineUnavailableError as err:  # the engine went away while the page was drawn
            st.error(f"{err}. Reload the page once it is back.", icon=":material/cloud_off:")


# A child process started with multiprocessing's "spawn" (the body parser, a model's trial
# run) imports the main module of its parent: in a process where Streamlit ran this script
# (AppTest), that is this file, which must then draw nothing (it made the child fail).
if __name__ != "__mp_main__":
    main()
