"""The dashboard's upload store bounded (core/ui/uploads.py), installed by app.py before
anything else it imports: light, so a script run stopped early still installs it."""

from __future__ import annotations

__all__ = ["bound_dashboard_uploads", "uploads_let_go"]


def _manager():
    from streamlit.runtime import Runtime
    from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
    if not Runtime.exists():
        return None
    manager = Runtime.instance().uploaded_file_mgr
    return manager if isinstance(manager, MemoryUploadedFileManager) else None


def bound_dashboard_uploads() -> tuple[int, int] | None:
    """Bound the running dashboard's upload store: twice ``server.maxUploadSize`` a session,
    four times in all (a model and the inputs of another; two such sessions). Returns the
    bounds, or None where no Streamlit server runs (a notebook, AppTest) or its store is
    not the in-memory one this knows."""
    from streamlit import config

    from core.ui.uploads import bound_uploads
    manager = _manager()
    if manager is None:
        return None
    one = int(config.get_option("server.maxUploadSize")) * 2**20
    return getattr(bound_uploads(manager, 2 * one, 4 * one), "_batchlab_bounds", None)


def uploads_let_go() -> str | None:
    """Words for this browser session when the bound let go of files it uploaded since it
    was last told (the uploader goes on showing a file's name the page no longer gets)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    from core.ui.uploads import let_go
    manager, ctx = _manager(), get_script_run_ctx()
    n = let_go(manager, ctx.session_id, clear=True) if manager and ctx else 0
    bounds = getattr(manager, "_batchlab_bounds", None)
    if not n or not bounds:
        return None
    return (f"{n} file(s) uploaded in this tab were let go: the dashboard keeps at most "
            f"{bounds[0] / 2**20:,.0f} MiB of uploads a tab ({bounds[1] / 2**20:,.0f} MiB in "
            "all), the oldest going first. Upload again what you still need (remove older "
            "files from their uploaders first), or fewer or smaller files.")
