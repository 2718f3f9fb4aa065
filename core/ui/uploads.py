"""A bound on what the dashboard's upload endpoint holds in memory.

Streamlit keeps every file PUT to ``/_stcore/upload_file/<session>/<file id>`` in memory
(``MemoryUploadedFileManager``) until its widget lets it go or its session ends; it caps
each file (``server.maxUploadSize``), not their sum. A program holding a session (and its
XSRF cookie: any local program; anyone on the network once ``make run ADDRESS=...``
listens there, before the password form) could PUT 200 MB files under new ids until the
dashboard ran out of memory. :func:`bound_uploads` makes the manager let go of a session's
oldest files once the session holds more than ``session_bytes``, and past ``total_bytes``
in all, of the oldest files of the session holding the most; the file just uploaded is kept,
so a person replacing a model by a larger one, or a folder of images within the limit,
never loses it. A page whose file was let go shows its uploader empty again.

Example:
    >>> from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
    >>> from streamlit.runtime.uploaded_file_manager import UploadedFileRec
    >>> m = bound_uploads(MemoryUploadedFileManager("/up"), session_bytes=10, total_bytes=100)
    >>> for i in range(3):
    ...     m.add_file("s", UploadedFileRec(f"f{i}", "x.bin", "application/octet-stream", b"12345"))
    >>> sorted(m.file_storage["s"])
    ['f1', 'f2']
"""

from __future__ import annotations

import logging
from typing import Any

from core.models import format_bytes

__all__ = ["bound_uploads"]

log = logging.getLogger(__name__)


def _to_let_go(storage: dict[str, dict[str, Any]], session_bytes: int, total_bytes: int,
               keep: tuple[str, str]) -> list[tuple[str, str]]:
    """The files (session, file id) to let go so that each session holds at most
    ``session_bytes`` and all at most ``total_bytes``: a session's oldest first, and past
    the total, from the session holding the most (a flood's, not the person's beside it);
    never ``keep``."""
    queues = {s: [(fid, len(rec.data)) for fid, rec in files.items() if (s, fid) != keep]
              for s, files in storage.items()}
    held = {s: sum(len(rec.data) for rec in files.values()) for s, files in storage.items()}
    out = []

    def let_go(s: str) -> bool:
        if not queues[s]:
            return False
        fid, n = queues[s].pop(0)
        out.append((s, fid))
        held[s] -= n
        return True

    for s in queues:
        while held[s] > session_bytes and let_go(s):
            pass
    while sum(held.values()) > total_bytes:
        sessions = [s for s in queues if queues[s]]
        if not sessions:   # only the file just uploaded is left
            break
        let_go(max(sessions, key=held.__getitem__))
    return out


def bound_uploads(manager: Any, session_bytes: int, total_bytes: int) -> Any:
    """Make ``manager`` (a ``MemoryUploadedFileManager``) let go of the oldest files past
    ``session_bytes`` a session and ``total_bytes`` in all (see the module); returns it.
    Applied once: a manager already bound keeps its first bounds."""
    if getattr(manager, "_batchlab_bounds", None):
        return manager
    add = manager.add_file

    def add_file(session_id: str, file: Any) -> None:
        add(session_id=session_id, file=file)
        with manager._lock:
            drop = _to_let_go(manager.file_storage, session_bytes, total_bytes,
                              (session_id, file.file_id))
        for s, fid in drop:
            manager.remove_file(s, fid)
        if drop:
            log.warning("uploads: let go of %d older file(s) to keep what sessions hold "
                        "within %s a session and %s in all", len(drop),
                        format_bytes(session_bytes), format_bytes(total_bytes))

    manager.add_file = add_file
    manager._batchlab_bounds = (session_bytes, total_bytes)
    return manager
