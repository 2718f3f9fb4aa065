"""Where an engine server may send requests: the outbound policy for remote models.

An engine server adds remote models on request (``add_remote`` over the control API), so
anyone who can call it could make the server fetch any address it can reach: an internal
service, a cloud metadata endpoint, itself. A server therefore sends requests only where
its policy allows, checked on the **addresses a name resolves to** (normalised: ``0x7f000001``,
``[::ffff:127.0.0.1]`` and ``localhost`` are all 127.0.0.1), at ``add_remote`` and again at
every connection (a name that resolves elsewhere later, DNS rebinding, is refused then):

* loopback and public addresses are allowed (the lab's own machine, and servers on the
  internet);
* private ranges (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16, where
  cloud metadata lives; fe80::/10), multicast, reserved and unspecified addresses are
  refused unless ``allow`` names the network (``"10.0.0.0/8"``) or the host;
* the server's own address and port are always refused (a remote model of itself).

In-process engines (notebooks) have no policy unless given one: the caller is the owner.

Example:
    >>> policy = OutboundPolicy(allow=("10.1.2.0/24",))
    >>> policy.check("http://10.1.2.3:8000")          # allowed by the rule
    >>> policy.check("http://169.254.169.254/")        # raises ConfigError, saying why
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from core.errors import ConfigError

__all__ = ["OutboundPolicy", "resolve", "HOPS_HEADER"]

#: Sent with every request to a remote model's server; a Batchlab server refuses to pass a
#: request that already carries it on to a remote model of its own, so a cycle of servers
#: (A's remote model is on B, B's on A) ends at the second hop.
HOPS_HEADER = "Batchlab-Hops"

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _normal(ip: _Address) -> _Address:
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped if mapped is not None else ip


def resolve(host: str, port: int) -> list[_Address]:
    """Every address ``host`` names (numeric forms normalised), as the OS resolves it."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as err:
        raise ConfigError(f"the host {host!r} could not be resolved ({err}); check the "
                          "URL's host name") from None
    out: list[_Address] = []
    for info in infos:
        ip = _normal(ipaddress.ip_address(info[4][0].split("%", 1)[0]))
        if ip not in out:
            out.append(ip)
    return out


def _looks_numeric(rule: str) -> bool:
    return all(c.isdigit() or c in ".:" for c in rule.strip()) and any(c.isdigit() for c in rule)


def _local_addresses() -> set[_Address]:
    """This machine's own addresses (best effort: what its host name resolves to)."""
    out: set[_Address] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            out.add(_normal(ipaddress.ip_address(info[4][0].split("%", 1)[0])))
    except (OSError, ValueError):
        pass
    return out


def _kind(ip: _Address) -> str:
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "reserved"
    return "public"


@dataclass(frozen=True)
class OutboundPolicy:
    """Which addresses remote models may be on (see the module docstring).

    ``allow``: networks (``"10.0.0.0/8"``, ``"fd00::/8"``) or host names also allowed;
    ``loopback``/``public``: whether those kinds are allowed (default yes); ``served``: the
    server's own (host, port) pairs, always refused."""

    allow: tuple[str, ...] = ()
    loopback: bool = True
    public: bool = True
    served: tuple[tuple[str, int], ...] = ()
    _networks: tuple[Any, ...] = field(default=(), init=False, repr=False, compare=False)
    _hosts: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nets, hosts = [], set()
        for rule in self.allow:
            if not isinstance(rule, str) or not rule.strip():
                raise ConfigError(f"allow rules must be networks or host names, got {rule!r}")
            try:
                nets.append(ipaddress.ip_network(rule.strip(), strict=False))
            except ValueError as err:
                if "/" in rule or _looks_numeric(rule):
                    raise ConfigError(f"allow rule {rule!r} is not a valid network ({err}); "
                                      "e.g. 10.0.0.0/8 or fd00::/8") from None
                hosts.add(rule.strip().lower().rstrip("."))
        object.__setattr__(self, "_networks", tuple(nets))
        object.__setattr__(self, "_hosts", frozenset(hosts))

    def with_served(self, host: str, port: int) -> OutboundPolicy:
        """The same policy, also refusing the server's own ``host:port``."""
        return OutboundPolicy(self.allow, self.loopback, self.public,
                              self.served + ((host, int(port)),))

    def _own(self, ip: _Address, port: int) -> bool:
        for host, p in self.served:
            if p != port:
                continue
            try:
                bound = _normal(ipaddress.ip_address(host))
            except ValueError:
                bound = None
            if ip.is_loopback or ip.is_unspecified or ip == bound:
                return True
            if bound is not None and bound.is_unspecified and ip in _local_addresses():
                return True  # bound to every interface: any of this machine's addresses
        return False

    def why_not(self, host: str, ip: _Address, port: int) -> str | None:
        """None when ``ip`` (what ``host`` resolved to) may be sent to, else the reason."""
        if self._own(ip, port):
            return (f"{host}:{port} is this engine server itself ({ip}): a remote model of "
                    "itself would send every request back to itself; use the model directly")
        if host.lower().rstrip(".") in self._hosts or any(ip in n for n in self._networks):
            return None
        kind = _kind(ip)
        if (kind == "loopback" and self.loopback) or (kind == "public" and self.public):
            return None
        return (f"{host} resolves to {ip}, a {kind} address, and this engine server sends "
                f"requests only to {self.allowed_words()}. To allow it, start the server "
                f"with --allow-remote {ip if kind != 'unspecified' else host} (or its "
                "network, e.g. 10.0.0.0/8; for make run, set BATCHLAB_ALLOW_REMOTE)")

    def allowed_words(self) -> str:
        """What this policy allows, in words (for messages and the server's log)."""
        kinds = [k for k, on in (("loopback", self.loopback), ("public", self.public)) if on]
        extra = [str(n) for n in self._networks] + sorted(self._hosts)
        return (" and ".join(kinds) + " addresses" if kinds else "no addresses") + (
            f" and {', '.join(extra)}" if extra else "")

    def check(self, url: str) -> list[_Address]:
        """The addresses of ``url``'s host, all allowed; else :class:`ConfigError` saying
        which is not and how to allow it."""
        try:
            parts = urlsplit(str(url).strip())
            host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as err:
            raise ConfigError(f"url is not a valid URL ({err})") from None
        if not host:
            raise ConfigError(f"url names no host: {url!r}")
        addresses = resolve(host, port)
        for ip in addresses:
            why = self.why_not(host, ip, port)
            if why is not None:
                raise ConfigError(f"refused to add a remote model at {host}: {why}")
        return addresses

    def resolver(self) -> Any:
        """An aiohttp resolver that checks every connection's addresses against this
        policy (a name that resolves elsewhere than when it was added is refused)."""
        from aiohttp.resolver import DefaultResolver

        policy = self

        class _Checked(DefaultResolver):  # type: ignore[misc]
            async def resolve(self, host: str, port: int = 0,
                              family: int = socket.AF_INET) -> list[dict[str, Any]]:
                results = await super().resolve(host, port, family)
                kept = []
                for r in results:
                    ip = _normal(ipaddress.ip_address(r["host"].split("%", 1)[0]))
                    if policy.why_not(host, ip, port or r.get("port", 0)) is None:
                        kept.append(r)
                if not kept:
                    raise OSError(f"{host} now resolves only to addresses the outbound "
                                  "policy refuses")
                return kept

        return _Checked()
