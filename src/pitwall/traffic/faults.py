"""The fault-injection hook of the data plane: a table of faults the proxy consults per request and connection.

The proxy owns one ``FaultTable`` (``ServiceProxy.faults``); the chaos pillar
fills it (HTTPChaos, NetworkChaos) and empties it. The proxy only asks:

* ``link(src_ip, dst_ip)``: the network faults on a connection from a client
  (the caller's pod IP, as the proxy sees it) to an endpoint (the pod IP the
  proxy connects to), split by direction: ``up`` acts on what the client
  sends, ``down`` on what the endpoint answers. ``None`` when none applies.
* ``http_for(dst_ip, dst_port)``: the HTTP faults on requests to an endpoint.

What a fault does is the fault's business (``NetFault``, ``HttpFault``); the
table holds them and answers fast when it is empty (the common case: one
attribute test per request). Only traffic through the proxy (clients calling
a Service's cluster IP) passes here; pod-to-pod traffic by pod IP does not.
The table is in memory only: a restart of pitwall empties it, so no fault
outlives the process that injected it (the chaos controller re-applies the
faults of experiments still running).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["FaultTable", "HttpFault", "HttpMessage", "Link", "NetFault"]


@dataclass
class HttpMessage:
    """A request (``status`` 0) or response as an HTTP fault sees and may change it."""

    method: str
    target: str  # path and query, as on the request line
    headers: list[tuple[str, str]]
    body: bytes
    status: int = 0


class HttpFault(Protocol):
    """An HTTP fault on one endpoint: may change a request or response, or abort the exchange (False)."""

    async def on_request(self, req: HttpMessage) -> bool: ...

    async def on_response(self, req: HttpMessage, resp: HttpMessage) -> bool: ...


class NetFault(Protocol):
    """A network fault between two sets of pods, acting on the bytes of one direction of a connection."""

    def sides(self, src_ip: str, dst_ip: str) -> tuple[bool, bool]:
        """Whether the client's bytes (``up``) and the endpoint's bytes (``down``) are affected."""
        ...

    def refuses(self) -> bool:
        """No connection gets through (partition)."""
        ...

    def lost(self) -> bool:
        """This message (HTTP) or connection (TCP) is lost."""
        ...

    def duplicated(self) -> bool:
        """This message is sent twice."""
        ...

    async def shape(self, sender_ip: str, data: bytes) -> bytes:
        """``data`` as it arrives: after its delay and bandwidth wait, possibly corrupted."""
        ...


@dataclass
class Link:
    """The network faults on one client -> endpoint connection, by direction."""

    up: list[NetFault] = field(default_factory=list)
    down: list[NetFault] = field(default_factory=list)

    def refused(self) -> bool:
        # a TCP connection needs both directions: a partition either way stops it
        return any(f.refuses() for f in (*self.up, *self.down))

    def lost_up(self) -> bool:
        return any(f.lost() for f in self.up)

    def lost_down(self) -> bool:
        return any(f.lost() for f in self.down)

    def duplicated_up(self) -> bool:
        return any(f.duplicated() for f in self.up)

    async def send_up(self, src_ip: str, data: bytes) -> bytes:
        for f in self.up:
            data = await f.shape(src_ip, data)
        return data

    async def send_down(self, dst_ip: str, data: bytes) -> bytes:
        for f in self.down:
            data = await f.shape(dst_ip, data)
        return data


class FaultTable:
    """The faults in force, keyed by whoever put them (an experiment's record); consulted by the proxy."""

    def __init__(self) -> None:
        self._http: dict[str, dict[str, tuple[int, HttpFault]]] = {}  # endpoint IP -> key -> (port or 0, fault)
        self._http_keys: dict[str, str] = {}  # key -> endpoint IP
        self._net: dict[str, NetFault] = {}
        self.active = False  # any fault at all: the proxy's fast path tests only this

    def _update(self) -> None:
        self.active = bool(self._http_keys or self._net)

    def put_http(self, key: str, ip: str, port: int, fault: HttpFault) -> None:
        """Apply ``fault`` to requests to ``ip`` (on ``port``, any when 0); replaces ``key``'s previous one."""
        self.remove(key)
        self._http.setdefault(ip, {})[key] = (port, fault)
        self._http_keys[key] = ip
        self._update()

    def put_net(self, key: str, fault: NetFault) -> None:
        self.remove(key)
        self._net[key] = fault
        self._update()

    def remove(self, key: str) -> bool:
        """Take ``key``'s fault out; True when there was one."""
        found = self._net.pop(key, None) is not None
        ip = self._http_keys.pop(key, None)
        if ip is not None:
            found = True
            per_ip = self._http.get(ip) or {}
            per_ip.pop(key, None)
            if not per_ip:
                self._http.pop(ip, None)
        self._update()
        return found

    def get(self, key: str) -> HttpFault | NetFault | None:
        if key in self._net:
            return self._net[key]
        ip = self._http_keys.get(key)
        return self._http[ip][key][1] if ip is not None else None

    def http_ip(self, key: str) -> str | None:
        """The endpoint IP ``key``'s HTTP fault is on."""
        return self._http_keys.get(key)

    def keys(self) -> set[str]:
        return set(self._http_keys) | set(self._net)

    def http_for(self, ip: str, port: int) -> list[HttpFault]:
        """The HTTP faults on requests to ``ip:port``, in the order they were put."""
        per_ip = self._http.get(ip)
        if not per_ip:
            return []
        return [f for p, f in per_ip.values() if p in (0, port)]

    def link(self, src_ip: str, dst_ip: str) -> Link | None:
        if not self._net:
            return None
        link = Link()
        for f in self._net.values():
            up, down = f.sides(src_ip, dst_ip)
            if up:
                link.up.append(f)
            if down:
                link.down.append(f)
        return link if link.up or link.down else None
