"""Which endpoint the next connection to one Service port goes to.

A ``PortBalancer`` holds the endpoints of one Service port as the proxy last
read them from the EndpointSlices: the *ready* ones, and the *fallback*
ones (terminating but still serving), which are used only while no endpoint
is ready, as kube-proxy does since ProxyTerminatingEndpoints. Selection is
round-robin; with ``sessionAffinity: ClientIP`` a client keeps its endpoint
for ``timeoutSeconds`` after its last connection, as long as that endpoint
stays usable. ``candidates`` returns every usable endpoint in the order to
try them, so a refused connect moves on to the next one.

Invariants: no I/O; the order is deterministic for a given history, which
the tests rely on to assert balancing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Backend", "PortBalancer"]

_AFFINITY_PRUNE_AT = 10_000  # remembered clients before expired entries are swept


@dataclass(frozen=True, slots=True)
class Backend:
    """One endpoint address and the port (targetPort resolved) that serves a Service port."""

    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


class PortBalancer:
    """The endpoints of one Service port and the choice of the next one."""

    def __init__(self, affinity_timeout_s: float | None = None) -> None:
        self.affinity_timeout_s = affinity_timeout_s
        self.ready: list[Backend] = []
        self.fallback: list[Backend] = []
        self._next = 0
        self._affinity: dict[str, tuple[Backend, float]] = {}

    def set_endpoints(self, ready: Iterable[Backend], fallback: Iterable[Backend] = ()) -> None:
        """Replace the endpoints; the round-robin position and client affinities are kept."""
        self.ready = sorted(set(ready), key=_order)
        ready_set = set(self.ready)
        self.fallback = sorted({b for b in fallback if b not in ready_set}, key=_order)

    def usable(self) -> list[Backend]:
        """Endpoints new connections may go to: the ready ones, else the serving terminating ones."""
        return self.ready or self.fallback

    def active(self) -> set[Backend]:
        """Endpoints whose open connections are left alone (ready or still serving)."""
        return set(self.ready) | set(self.fallback)

    def candidates(self, client_ip: str, now: float) -> list[Backend]:
        """Every usable endpoint, in the order a new connection from ``client_ip`` should try them."""
        pool = self.usable()
        if not pool:
            return []
        start = self._next % len(pool)
        self._next = start + 1
        order = pool[start:] + pool[:start]
        if self.affinity_timeout_s is not None:
            hit = self._affinity.get(client_ip)
            if hit is not None and hit[1] > now and hit[0] in pool:
                order.remove(hit[0])
                order.insert(0, hit[0])
        return order

    def chosen(self, client_ip: str, backend: Backend, now: float) -> None:
        """Record the endpoint a connection from ``client_ip`` reached (for ClientIP affinity)."""
        if self.affinity_timeout_s is None:
            return
        if len(self._affinity) >= _AFFINITY_PRUNE_AT:
            self._affinity = {k: v for k, v in self._affinity.items() if v[1] > now}
        self._affinity[client_ip] = (backend, now + self.affinity_timeout_s)


def _order(b: Backend) -> tuple[tuple[int, ...], int]:
    try:
        return tuple(int(p) for p in b.ip.split(".")), b.port
    except ValueError:
        return (), b.port
