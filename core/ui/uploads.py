"""A bound on what the dashboard's upload endpoint holds in memory.

Streamlit keeps every file PUT to ``/_stcore/upload_file/<session>/<file id>`` in memory
(``MemoryUploadedFileManager``) until its widget lets it go or its session ends; it caps
each file (``server.maxUploadSize``), not their sum. A program holding a session (and its
XSRF cookie: any local program; anyone on the network once ``make run ADDRESS=...``
listens there, before the password form) could PUT 200 MB files under new ids until the
dashboard ran out of memory. :func:`bound_uploads` makes the manager let go of a session's
oldest files once the session holds more than ``session_bytes``, and past ``total_bytes``
in all, of the oldest files of the session holding the most (one session's flood goes
before a person's file beside it; floods from many sessions, each smaller than the
person's, would take the person's first: memory stays bounded, not every file). The file
just uploaded is kept, so a person replacing a model by a larger one never loses it. What
was let go is counted by session (:func:`let_go`): a page says so, since the widget goes
on showing the file's name while the script no longer gets the file.

Example:
    >>> from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
    >>> from streamlit.runtime.uploaded_file_manager import UploadedFileRec
    >>> m = bound_uploads(MemoryUploadedFileManager("/up"), session_bytes=10, total_bytes=100)
    >>> for i in range(3):
    ...     m.add_file("s", UploadedFileRec(f"f{i}", "x.bin", "application/octet-stream", b"12345"))
    >>> sorted(m.file_storage["s"]), let_go(m, "s")
    (['f1', 'f2'], 1)
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

__all__ = ["bound_uploads", "let_go"]

log = logging.getLogger(__name__)


def _to_let_go(storage: dict[str, dict[str, Any]], session_bytes: int, total_bytes: int,
               older: Any) -> list[tuple[str, str]]:
    """The files (session, file id) to let go so that each session holds at most
    ``session_bytes`` and all at most ``total_bytes``: a session's oldest first, and past
    the total, from the session holding the most; only files ``older(session, id)`` says
    came before the one just added (never it, nor one another thread added meanwhile)."""
    queues = {s: [(fid, len(rec.data)) for fid, rec in files.items() if older(s, fid)]
              for s, files in storage.items()}
    held = {s: sum(len(rec.data) for rec in files.values()) for s, files in storage.items()}
    out = []

    def drop(s: str) -> None:
        fid, n = queues[s].pop(0)
        out.append((s, fid))
        held[s] -= n

    for s in queues:
        while held[s] > session_bytes and queues[s]:
            drop(s)
    while sum(held.values()) > total_bytes:
        sessions = [s for s in queues if queues[s]]
        if not sessions:   # only files as new as the one just added are left
            break
        drop(max(sessions, key=held.__getitem__))
    return out


def let_go(manager: Any, session_id: str, clear: bool = False) -> int:
    """How many of ``session_id``'s files the bound let go (``clear``: and forget them)."""
    counts = getattr(manager, "_batchlab_let_go", {})
    return counts.pop(session_id, 0) if clear else counts.get(session_id, 0)


def bound_uploads(manager: Any, session_bytes: int, total_bytes: int) -> Any:
    """Make ``manager`` (a ``MemoryUploadedFileManager``) let go of the oldest files past
    ``session_bytes`` a session and ``total_bytes`` in all (see the module), at once for
    what it holds already; returns it. Applied once: a manager already bound keeps its
    first bounds. A manager without the store this reads is left as it is."""
    if getattr(manager, "_batchlab_bounds", None) or not isinstance(
            getattr(manager, "file_storage", None), dict):
        return manager
    add, counter = manager.add_file, itertools.count(1)
    added: dict[tuple[str, str], int] = {}   # (session, id) -> when (files before: 0)
    manager._batchlab_let_go = counts = {}

    def trim(newest: int) -> None:
        try:
            with manager._lock:
                storage = manager.file_storage
                drop = _to_let_go(storage, session_bytes, total_bytes,
                                  lambda s, fid: added.get((s, fid), 0) < newest)
                for k in [k for k in added if k[1] not in storage.get(k[0], ())]:
                    if added[k] < newest:   # (gone with its widget or session)
                        del added[k]
                for s in [s for s in counts if s not in storage] if len(counts) > 1000 else ():
                    del counts[s]
            for s, fid in drop:
                manager.remove_file(s, fid)
            with manager._lock:
                for s, fid in drop:
                    added.pop((s, fid), None)
                    counts[s] = counts.get(s, 0) + 1
        except Exception:  # noqa: BLE001 - an upload is never failed by its bound
            log.exception("uploads: could not apply the bound")
            return
        if drop:
            log.warning("uploads: let go of %d older file(s) to keep what sessions hold "
                        "within %.0f MiB a session and %.0f MiB in all", len(drop),
                        session_bytes / 2**20, total_bytes / 2**20)

    def add_file(session_id: str, file: Any) -> None:
        # (its place in line before it is stored: another thread's trim then never takes it)
        with manager._lock:
            added[(session_id, file.file_id)] = now = next(counter)
        try:
            add(session_id=session_id, file=file)
        except BaseException:
            with manager._lock:
                added.pop((session_id, file.file_id), None)
            raise
        trim(now)

    manager.add_file = add_file
    manager._batchlab_bounds = (session_bytes, total_bytes)
    trim(1)   # what it held before
    return manager
