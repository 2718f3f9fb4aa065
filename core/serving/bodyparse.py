"""Large JSON inference bodies parsed in a child process, so that parsing one does not
stall every other request of the server.

Python's JSON parser holds the interpreter for the whole parse (~20 ms a MiB of numbers,
~50 ms for a 32 MiB string on this machine's VMs): while it runs, no other thread of the
serving process runs — not the event loop answering other connections, not the engine's
runners. A request whose JSON part is at least :data:`CHILD_MIN` bytes has that part sent
to a child process instead, in slices (the pipe's writes let go of the interpreter),
parsed there — with the same bound on what the parse may allocate, checked before it —
and only the arrays of its JSON-valued inputs come back; binary tensors stay views of the
body here. The child starts at the first such request (importing the package takes it a
few seconds) and is started again if it dies or does not answer within
:data:`CHILD_WAIT_S` plus a second per MiB (that request is answered 503, with the
reason); if no child can be started the body is parsed here, as before.

Example:
    >>> parser = BodyParser()
    >>> arrays, req = parser.parse(raw, None, 64 * 2**20)
    >>> parser.close()
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
from typing import Any

import numpy as np

from core.protocol import HTTPError, OIPError, oip

__all__ = ["BodyParser", "CHILD_MIN"]

log = logging.getLogger("batchlab.server")

#: A JSON part at least this long is parsed in the child. Parsed here (~40 us a KiB), one
#: client's flood of 244 KiB bodies held the interpreter from every other request: another
#: model's p50 6.5 -> 20-30 ms parsed on a thread, 6.1-6.6 ms in the child
#: (docs/benchmarks.md, "One client's big bodies"); the trip is ~0.1 ms at this size.
CHILD_MIN = 64 * 2**10
#: The child's niceness: parsing a large body is bulk work, the serving process's threads
#: (other models' requests) get the cores first.
CHILD_NICE = 10
#: Request parameters longer than this (as JSON) are not sent back from the child: the
#: server reads none that long.
_PARAM_MAX = 4096
#: The parameters the server reads (core/serving/routes.py, the answer's encoding): sent
#: back from the child whatever their length.
_READ_PARAMS = frozenset({"timeout_ms", "timeout", "key", "priority", "binary_data_output",
                          "binary_data", "binary_data_size"})
#: The request's keys the server reads, and those of each input (its data stays here).
_READ_KEYS = frozenset({"id", "inputs", "outputs", "parameters"})
_INPUT_KEYS = frozenset({"name", "shape", "datatype", "parameters"})
_OUTPUT_KEYS = frozenset({"name", "parameters"})
#: How long the server waits for the child's answer: this, plus a second per MiB.
CHILD_WAIT_S = 30.0
#: The body travels to the child in slices of this size.
_SLICE = 1 << 20


def _child_main(conn: Any) -> None:  # the child process: parse JSON parts until the pipe ends
    try:
        # Bulk work: on a busy machine the serving process's own threads (other models'
        # requests) come first.
        os.nice(CHILD_NICE)
    except OSError:
        pass
    while True:
        try:
            n, limit = conn.recv()
            buf = bytearray(n)
            view = memoryview(buf)
            got = 0
            while got < n:
                got += conn.recv_bytes_into(view[got:])
            view.release()
        except (EOFError, OSError):
            return
        try:
            converted, req = oip.parse_infer_json(buf, limit)
            # Only what the server reads travels back: a body's other keys (a long string
            # under any name) would be built again there, for nothing.
            req = {k: v for k, v in req.items() if k in _READ_KEYS}
            req["inputs"] = [_kept(t, _INPUT_KEYS) for t in req["inputs"]]
            if isinstance(req.get("outputs"), list):
                req["outputs"] = [_kept(o, _OUTPUT_KEYS) for o in req["outputs"]]
            _short_parameters(req)
            reply: tuple = ("ok", converted, req)
        except OIPError as err:
            reply = ("error", err.status, str(err))
        except Exception as err:  # noqa: BLE001 - every failure is the request's answer
            reply = ("error", 400, f"the request body could not be read: "
                                   f"{type(err).__name__}: {err}")
        del buf
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
        except Exception as err:  # noqa: BLE001 - e.g. an array that cannot be pickled
            conn.send(("error", 400, f"the request body could not be read: "
                                     f"{type(err).__name__}: {err}"))
        del reply   # (not held until the next body arrives)


def _kept(entry: Any, keys: frozenset[str]) -> Any:
    """An input's or output's entry with only the keys the server reads, and its
    parameters short."""
    if not isinstance(entry, dict):
        return entry
    entry = {k: v for k, v in entry.items() if k in keys}
    _short_parameters(entry)
    return entry


def _short_parameters(obj: dict[str, Any]) -> None:
    # The server reads a few parameters (_READ_PARAMS); any other one that is long would
    # only travel back for nothing.
    params = obj.get("parameters")
    if isinstance(params, dict):
        obj["parameters"] = {k: v for k, v in params.items() if k in _READ_PARAMS
                             or len(json.dumps(v, default=str)) <= _PARAM_MAX}


class BodyParser:
    """Parses infer request bodies: short JSON here, long JSON in a child (see the module
    docstring). One body at a time in the child; others wait for it without holding the
    interpreter."""

    def __init__(self, child_min: int = CHILD_MIN) -> None:
        self.child_min = child_min
        self._lock = threading.Lock()
        self._proc: Any = None
        self._conn: Any = None
        self._closed = False
        #: Bodies parsed in the child, and children started (for tests and status).
        self.parsed_in_child = 0
        self.started = 0

    def parse(self, raw: bytes, header_length: int | None, max_parsed_bytes: int | None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        json_len = len(raw) if header_length is None else header_length
        if json_len < self.child_min or not 0 <= json_len <= len(raw):
            return oip.parse_infer_request(raw, header_length, max_parsed_bytes)
        mv = memoryview(raw)
        with self._lock:
            if self._closed:
                raise HTTPError(503, "the server is stopping; retry on another server")
            try:
                conn = self._ensure()
            except Exception as err:  # noqa: BLE001 - no child: parse here, as before
                log.warning("could not start the body parser process (%s: %s); parsing "
                            "here", type(err).__name__, err)
                conn = None
            if conn is not None:
                try:
                    # Only the JSON part travels: binary tensors stay views of this body.
                    conn.send((json_len, max_parsed_bytes))
                    for i in range(0, json_len, _SLICE):
                        conn.send_bytes(mv[i:min(i + _SLICE, json_len)])
                    wait_s = CHILD_WAIT_S + json_len / 2**20
                    if not conn.poll(wait_s):
                        raise TimeoutError(f"no answer within {wait_s:.0f} s")
                    reply = conn.recv()
                except BaseException as err:
                    self._stop()     # whatever the pipe holds now is out of step: a new child
                    if isinstance(err, (OSError, EOFError)):   # (TimeoutError is an OSError)
                        raise HTTPError(503, f"the process parsing large JSON bodies failed "
                                             f"on this one ({type(err).__name__}: {err}); "
                                             "retry, or send the tensors as binary data"
                                        ) from None
                    raise
                self.parsed_in_child += 1
        if conn is None:
            return oip.parse_infer_request(raw, header_length, max_parsed_bytes)
        if reply[0] == "error":
            raise OIPError(reply[1], reply[2])
        _, converted, req = reply
        binary = mv[json_len:] if header_length is not None else memoryview(b"")
        return oip.assemble_inputs(req, binary, converted), req

    def _ensure(self) -> Any:
        """(Lock held.) The child's end of the pipe, starting the child if needed."""
        if self._proc is not None and self._proc.is_alive():
            return self._conn
        self._stop()
        ctx = multiprocessing.get_context("spawn")   # no fork of a threaded server
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_child_main, args=(child,), daemon=True,
                           name="batchlab-body-parser")
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        self.started += 1
        return parent

    def _stop(self) -> None:
        """(Lock held.) End the child, if any."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is not None:
            proc.join(1.0)
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.is_alive() else None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._stop()
