"""Requests a web page could forge are refused: the server is driven by its clients (the
dashboard, notebooks, OIP clients), never by a page open in the user's browser.

A browser lets any page send simple requests to any address, loopback included: a form
post (``application/x-www-form-urlencoded``, ``multipart/form-data``, ``text/plain``) or a
``fetch`` with those types needs no permission, and DNS rebinding makes a foreign name
resolve to 127.0.0.1. So, on every request (checks that hold whatever HTTP stack serves the
routes, as Jupyter does for its server):

* **Origin**: a request that carries an ``Origin`` (browsers add it to cross-site requests)
  must come from the server's own origin; ``Origin: null`` (sandboxed frames, files) and
  ``Sec-Fetch-Site: cross-site`` are refused too (403);
* **Host**: a server bound to loopback answers only requests addressed to a loopback name
  (``127.0.0.1``, ``localhost``, ``[::1]``), not a rebound foreign name; one bound beyond
  loopback only requests addressed by IP or by a name it was given (``--allow-host``) (403);
* **state changes only by POST with a JSON body** on the control API and the repository
  extension: a form's or a page's simple types (``text/plain``, form encodings) are refused
  (415; ``application/json`` cannot be sent cross-site without the browser asking the server
  first, and OIP clients such as tritonclient send no type); a control method that changes
  anything is refused on GET (405);
* **a token** (when the server has one, as ``python -m core.server`` always does unless
  told ``--no-token`` on loopback): the control API and the repository extension answer
  only requests that carry it (``Authorization: Bearer TOKEN``, 401 otherwise); a server
  bound beyond loopback asks for it on the data plane and ``/metrics`` too. Health checks
  (``/v2/health/...``) stay open, for probes. The data plane also takes a credential of
  its own (:func:`data_plane_token`, derived from the token): whoever holds it (load
  generators, agents on a cluster) may infer and read models and ``/metrics``, never the
  control API, and cannot work the token out from it.

Example:
    >>> guard = RequestGuard(); guard.bind("127.0.0.1", 8000)
    >>> guard.check("POST", "/v1/engine/unload_model", req)   # raises HTTPError(403/415)
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import Any
from urllib.parse import urlsplit

from core.protocol import HTTPError

__all__ = ["RequestGuard", "TOKEN_ENV", "is_loopback", "data_plane_token", "access_words"]

#: The environment variable a token is read from (by the server, RemoteEngine and the
#: dashboard).
TOKEN_ENV = "BATCHLAB_TOKEN"

_LOOPBACK_NAMES = {"localhost", "localhost."}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, possibly in brackets, or a name) is this machine's
    loopback: 127.0.0.0/8, ::1, localhost."""
    host = host.strip().strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def _split_host(value: str) -> tuple[str, int | None]:
    try:
        parts = urlsplit("//" + value.strip())
        return (parts.hostname or ""), parts.port
    except ValueError:
        return "", None


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def data_plane_token(token: str) -> str:
    """The data plane's credential for a server whose token is ``token`` (an HMAC of it:
    it lets a client send inference requests, read models' metadata and ``/metrics``, and
    nothing of the control API)."""
    return hmac.new(token.encode(), b"batchlab data plane", hashlib.sha256).hexdigest()


class RequestGuard:
    """The checks of the module docstring, for a server bound to (host, port)."""

    def __init__(self, allowed_hosts: tuple[str, ...] = (), token: str | None = None) -> None:
        self.host: str | None = None
        self.port: int | None = None
        #: The secret a client proves it was given (None: none asked).
        self.token = token or None
        #: Host names a server bound beyond loopback answers to (besides IP addresses).
        self.allowed_hosts = frozenset(h.strip().lower().rstrip(".") for h in allowed_hosts)

    def bind(self, host: str, port: int) -> None:
        self.host, self.port = str(host), int(port)

    def check(self, method: str, path: str, req: Any, control: bool,
              writes: bool) -> None:
        """Raise :class:`HTTPError` for a request that must be refused. ``control``: the
        control API or repository extension; ``writes``: the call may change state."""
        origin = req.header("Origin")
        host_header = req.header("Host") or ""
        if req.header("Sec-Fetch-Site") == "cross-site":
            raise HTTPError(403, "a cross-site request (from a page on another site) cannot "
                                 "drive this server")
        if origin is not None:
            if origin.strip() == "null":
                raise HTTPError(403, "a request from an opaque origin (Origin: null: a "
                                     "sandboxed frame or a local file) cannot drive this server")
            o = urlsplit(origin.strip())
            o_host, o_port = o.hostname or "", o.port or (443 if o.scheme == "https" else 80)
            h_host, h_port = _split_host(host_header)
            same = (o_host == h_host and o_port == (h_port or 80)) or (
                is_loopback(o_host) and is_loopback(h_host) and o_port == (h_port or 80))
            if not same:
                raise HTTPError(403, f"a request from the page origin {origin!r} cannot drive "
                                     "this server (only its own clients; cross-origin "
                                     "requests are refused)")
        if self.host is not None and host_header:
            h_host, _ = _split_host(host_header)
            if is_loopback(self.host):
                # (any port: a client behind a port forward addresses the forward's port)
                if not is_loopback(h_host):
                    raise HTTPError(403, "this server listens on loopback and answers "
                                         f"requests addressed to a loopback name (Host: "
                                         f"127.0.0.1 or localhost), not Host: {host_header!r}"
                                         " (what a rebound DNS name sends)")
            elif not (is_loopback(h_host) or _is_ip(h_host)
                      or h_host.lower().rstrip(".") in self.allowed_hosts):
                # Beyond loopback a page on a rebound name is same-origin with itself:
                # only addresses, and names the server was told are its own, are answered.
                raise HTTPError(403, f"Host: {host_header!r} is not a name of this server; "
                                     "address it by IP, or start it with --allow-host "
                                     f"{h_host or 'NAME'} (names are refused so that a "
                                     "rebound DNS name cannot drive it)")
        if self.token is not None and (control or self._beyond_loopback()) \
                and not path.startswith("/v2/health"):
            self._check_token(req, control)
        if control and method == "POST":
            kind = _media_type(req.header("Content-Type"))
            # The types a page may send without asking the server first (CORS "simple"
            # requests) are refused; no type at all is what OIP clients such as
            # tritonclient send (a browser that sends none also sends its Origin).
            if kind and kind != "application/json":
                raise HTTPError(415, f"the control API takes JSON bodies (Content-Type: "
                                     f"application/json), got {kind!r}")
        if control and writes and method != "POST":
            raise HTTPError(405, f"{path} changes the engine's state: use POST with a JSON "
                                 "body")

    def _beyond_loopback(self) -> bool:
        return self.host is not None and not is_loopback(self.host)

    @property
    def data_token(self) -> str | None:
        """The data plane's credential (:func:`data_plane_token`; None without a token)."""
        return data_plane_token(self.token) if self.token is not None else None

    def _check_token(self, req: Any, control: bool = True) -> None:
        value = (req.header("Authorization") or "").strip()
        scheme, _, given = value.partition(" ")
        if scheme.lower() not in ("bearer", "token") or not given.strip():
            raise HTTPError(401, "this server needs its token: send the header "
                                 "'Authorization: Bearer TOKEN' (RemoteEngine(url, token=...) "
                                 "or BATCHLAB_TOKEN does). The token is in the server's log "
                                 "when it starts, or was set with --token / BATCHLAB_TOKEN")
        given_b = given.strip().encode()
        if hmac.compare_digest(given_b, self.token.encode()):
            return
        if hmac.compare_digest(given_b, data_plane_token(self.token).encode()):
            if not control:
                return
            raise HTTPError(401, "the token sent is the data plane's (inference, metadata, "
                                 "/metrics): the control API and the repository need the "
                                 "server's own token (--token / BATCHLAB_TOKEN)")
        raise HTTPError(401, "the token sent (Authorization header) is not this "
                             "server's; use the one in its log or the one it was "
                             "started with (--token / BATCHLAB_TOKEN)")


def access_words(token: str | None, token_from: str | None, data_token: str | None) -> list[str]:
    """What a server started from the command line says of who may drive it (its log)."""
    if token is None:
        return ["no token: any program on this machine may drive the engine (--no-token)"]
    first = (f"clients send the token from {token_from} (Authorization: Bearer TOKEN)"
             if token_from else
             f"token: {token} (clients send 'Authorization: Bearer {token}'; "
             "RemoteEngine(url, token=...) or BATCHLAB_TOKEN=... for notebooks and the "
             "dashboard)")
    return [first, "data-plane token (inference, metadata and /metrics only; for load "
                   f"generators): {data_token}"]

