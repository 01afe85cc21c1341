"""An Envoy "cluster": the endpoints of one Service port (and subset), their health and connections.

A ``Cluster`` keeps what outlives a request: the load balancer's position,
each host's active requests and outlier state, the idle keep-alive
connections, and the counters the DestinationRule's ``connectionPool``
limits. The policy (``mesh.Policy``) comes from the config snapshot the
request took, so a DestinationRule change applies to the next request.

Semantics (Envoy's, as Istio configures it):

- load balancing: ROUND_ROBIN; LEAST_REQUEST picks among the hosts with the
  fewest active requests, in round-robin order among equals (Envoy samples
  two at random; ours is deterministic under equal load); RANDOM;
  consistent hash (header, cookie, query parameter, source IP) by
  rendezvous hashing, so a host leaving moves only its own keys.
- outlier detection: a host's consecutive 5xx (and, when configured,
  gateway errors: 502/503/504 and connect failures) eject it for
  ``baseEjectionTime × times ejected``, unless that would put more than
  ``maxEjectionPercent`` of the hosts out (this one included, as Envoy
  counts: with the default 10 % a cluster of fewer than 10 hosts ejects
  none). An ejected host comes back when
  its time is up (Envoy checks on its ``interval`` timer; we check at
  selection). With every host ejected there is no panic mode (Istio sets
  the panic threshold to 0): ``no healthy upstream``.
- connection pool: ``http2MaxRequests`` caps requests in flight;
  ``tcp.maxConnections`` caps connections in use (HTTP/1.1: one request per
  connection) and the requests waiting for one are capped by
  ``http1MaxPendingRequests``; beyond either, ``Overflow`` (503 with
  ``x-envoy-overloaded``). ``maxRetries`` caps retries in flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pitwall.traffic.balancer import Backend
from pitwall.traffic.mesh import UNLIMITED, ConnPool, LbPolicy, Outlier

__all__ = ["Cluster", "HostState", "Overflow", "RetryBudget", "UpConn"]

log = logging.getLogger(__name__)
_IDLE_PER_HOST = 64  # keep-alive connections kept per host


class Overflow(Exception):
    """A connection pool limit refused the request (Envoy's UO)."""


@dataclass(eq=False)
class UpConn:
    """A keep-alive connection to one host."""

    backend: Backend
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: int = 0
    opened: float = field(default_factory=time.monotonic)
    ident: str = ""  # the caller identity a mutual-TLS connection presents ("" for a direct one)

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.transport.abort()


@dataclass
class HostState:
    active: int = 0
    consecutive_5xx: int = 0
    consecutive_gateway: int = 0
    ejected_until: float = 0.0
    times_ejected: int = 0


class RetryBudget:
    """Linkerd's retry budget: retries may add at most ``ratio`` of the requests seen in the last ``ttl_s``,
    plus ``min_per_s`` retries a second, so retries can never multiply an outage's load.

    Counted in ten buckets of ``ttl_s / 10`` (a sliding window, O(1) a request).
    """

    BUCKETS = 10

    def __init__(self, ratio: float = 0.2, min_per_s: float = 10.0, ttl_s: float = 10.0) -> None:
        self.ratio, self.min_per_s, self.ttl_s = ratio, min_per_s, ttl_s
        self._width = ttl_s / self.BUCKETS
        self._epoch = [-1] * self.BUCKETS  # which bucket period each slot holds
        self._requests = [0] * self.BUCKETS
        self._retries = [0] * self.BUCKETS
        self.exhausted = 0  # retries refused

    def _slot(self, now: float) -> int:
        period = int(now / self._width)
        i = period % self.BUCKETS
        if self._epoch[i] != period:
            self._epoch[i], self._requests[i], self._retries[i] = period, 0, 0
        return i

    def _window(self, now: float) -> tuple[int, int]:
        oldest = int(now / self._width) - self.BUCKETS + 1
        live = [i for i in range(self.BUCKETS) if self._epoch[i] >= oldest]
        return sum(self._requests[i] for i in live), sum(self._retries[i] for i in live)

    def request(self, now: float) -> None:
        """A first try: it adds ``ratio`` of a retry to the budget."""
        self._requests[self._slot(now)] += 1

    def withdraw(self, now: float) -> bool:
        """Whether a retry may go now (and count it if so)."""
        i = self._slot(now)
        requests, retries = self._window(now)
        if retries + 1 > self.ratio * requests + self.min_per_s * self.ttl_s:
            self.exhausted += 1
            return False
        self._retries[i] += 1
        return True


class Cluster:
    """Runtime state of one (service FQDN, subset, port)."""

    def __init__(self, name: str, on_eject: Callable[[str, Backend, float], None] | None = None,
                 budget: RetryBudget | None = None) -> None:
        self.name = name
        self.budget = budget  # None: retries are limited by the route's attempts and maxRetries only
        self.hosts: dict[Backend, HostState] = {}
        self.idle: dict[Backend, list[UpConn]] = {}
        self.active_requests = 0
        self.in_use = 0  # connections carrying a request now
        self.pending = 0
        self.active_retries = 0
        self.ejections_total = 0
        self._rr = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._on_eject = on_eject

    # -- choosing a host ------------------------------------------------------------------------

    def host(self, b: Backend) -> HostState:
        h = self.hosts.get(b)
        if h is None:
            h = self.hosts[b] = HostState()
        return h

    def healthy(self, endpoints: list[Backend], now: float) -> list[Backend]:
        return [b for b in endpoints if self.host(b).ejected_until <= now]

    def pick(self, endpoints: list[Backend], lb: LbPolicy, hash_key: str | None, exclude: set[Backend],
             now: float) -> Backend | None:
        """The host for the next try: healthy, not tried before when another is left (previous_hosts)."""
        pool = self.healthy(endpoints, now)
        if not pool:
            return None
        if exclude and not lb.consistent:
            fresh = [b for b in pool if b not in exclude]
            pool = fresh or pool
        if lb.consistent and hash_key is not None:
            return max(pool, key=lambda b: _score(hash_key, b))
        if lb.simple == "RANDOM":
            return random.choice(pool)
        start = self._rr % len(pool)
        self._rr = start + 1
        if lb.simple == "LEAST_REQUEST":
            least = min(self.host(b).active for b in pool)
            order = pool[start:] + pool[:start]
            return next(b for b in order if self.host(b).active == least)
        return pool[start]

    # -- results (outlier detection) ------------------------------------------------------------

    def result(self, b: Backend, status: int, od: Outlier | None, total_hosts: int, now: float) -> None:
        """Account one try's outcome (``status`` 0: connect failure or reset) for outlier detection."""
        h = self.host(b)
        five = status >= 500 or status == 0
        gateway = status in (0, 502, 503, 504)
        h.consecutive_5xx = h.consecutive_5xx + 1 if five else 0
        h.consecutive_gateway = h.consecutive_gateway + 1 if gateway else 0
        if od is None or h.ejected_until > now:
            return
        tripped = (od.consecutive_5xx > 0 and h.consecutive_5xx >= od.consecutive_5xx) or \
                  (od.consecutive_gateway > 0 and h.consecutive_gateway >= od.consecutive_gateway)
        if not tripped:
            return
        ejected = sum(1 for s in self.hosts.values() if s.ejected_until > now)
        # Envoy counts this host in: with maxEjectionPercent 10 a cluster of fewer than 10 hosts ejects none
        if total_hosts <= 0 or 100.0 * (ejected + 1) / total_hosts > od.max_ejection_percent:
            return
        h.times_ejected += 1
        h.ejected_until = now + od.base_ejection_s * h.times_ejected
        h.consecutive_5xx = h.consecutive_gateway = 0
        self.ejections_total += 1
        log.info("mesh: %s: ejected %s for %.1fs (ejection %d)", self.name, b, h.ejected_until - now,
                 h.times_ejected)
        if self._on_eject is not None:
            self._on_eject(self.name, b, h.ejected_until - now)

    def ejected(self, now: float) -> int:
        return sum(1 for s in self.hosts.values() if s.ejected_until > now)

    def forget(self, keep: set[Backend]) -> None:
        """Drop the state of hosts that left the Service (their idle connections closed)."""
        for b in [b for b in self.hosts if b not in keep]:
            if self.hosts[b].active == 0:
                del self.hosts[b]
        for b in [b for b in self.idle if b not in keep]:
            for c in self.idle.pop(b):
                c.close()

    # -- connection pool ------------------------------------------------------------------------

    def admit(self, pool: ConnPool) -> None:
        """Count a request in (``Overflow`` past ``http2MaxRequests``); pair with ``release_request``."""
        if pool.max_requests != UNLIMITED and self.active_requests >= pool.max_requests:
            raise Overflow("max requests")
        self.active_requests += 1

    def release_request(self) -> None:
        self.active_requests -= 1

    async def acquire_slot(self, pool: ConnPool) -> None:
        """A connection slot (``tcp.maxConnections``), waiting as a pending request when all are in use."""
        if pool.max_connections == UNLIMITED or self.in_use < pool.max_connections:
            self.in_use += 1
            return
        if self.pending >= pool.max_pending:
            raise Overflow("pending requests")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self.pending += 1
        try:
            await fut  # the releaser hands its slot over: in_use stays counted
        except BaseException:
            if fut in self._waiters:
                self._waiters.remove(fut)
            elif fut.done() and not fut.cancelled():
                self.release_slot()  # handed over but we are leaving: pass it on
            raise
        finally:
            self.pending -= 1

    def release_slot(self) -> None:
        while self._waiters:
            fut = self._waiters.pop(0)
            if not fut.done():
                fut.set_result(None)
                return
        self.in_use -= 1

    def make_room(self, pool: ConnPool) -> None:
        """Before opening a connection: close idle ones (of other hosts) so that connections in use plus
        idle ones stay within ``tcp.maxConnections``, which caps a cluster's connections as in Envoy."""
        if pool.max_connections == UNLIMITED:
            return
        excess = self.in_use + sum(len(v) for v in self.idle.values()) - pool.max_connections
        for conns in self.idle.values():
            while excess > 0 and conns:
                conns.pop().close()
                excess -= 1

    def take_idle(self, b: Backend, ident: str = "") -> UpConn | None:
        """An idle connection to ``b`` opened for the caller identity ``ident`` (mTLS connections present
        their caller's certificate, so they are not shared across callers)."""
        conns = self.idle.get(b)
        if not conns:
            return None
        for i in range(len(conns) - 1, -1, -1):
            c = conns[i]
            if c.ident != ident:
                continue
            del conns[i]
            if c.usable():
                return c
            c.close()
        return None

    def give_back(self, c: UpConn, pool: ConnPool) -> None:
        if (pool.max_requests_per_connection and c.requests >= pool.max_requests_per_connection) \
                or not c.usable():
            c.close()
            return
        conns = self.idle.setdefault(c.backend, [])
        if len(conns) >= _IDLE_PER_HOST:
            c.close()
            return
        conns.append(c)

    def close_idle(self) -> None:
        for conns in self.idle.values():
            for c in conns:
                c.close()
        self.idle.clear()


def _score(key: str, b: Backend) -> bytes:
    return hashlib.blake2b(f"{key}|{b.ip}:{b.port}".encode(), digest_size=8).digest()
