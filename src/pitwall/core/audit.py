"""The audit log: who changed what, and who was refused, fed by the edge layer into a bounded queue.

``AuditLog.record`` (called by ``core.edge`` for every answered request) keeps one ``AuditEntry`` for every HTTP request that is
not a read (a method other than GET, HEAD and OPTIONS, outside
``core.auth``'s read-only POSTs) and for every refused one (401, 403),
reads included: when, the token's name (never the token), the tenant,
method, path (the query string's keys only: values may hold secrets),
status, remote address, user agent and duration.

Entries go to a bounded queue that ``AuditLog`` drains into an ``AuditSink``
in batches; a full queue drops the entry and counts it
(``pitwall_audit_dropped_total``), so a slow sink never holds up a request.
The composition root connects the sink to the log store, under the reserved
tenant ``core.tenancy.AUDIT_TENANT``: core names no pillar.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.types import Scope

from pitwall.core.auth import SAFE_METHODS, is_read_only_post
from pitwall.core.errors import PitwallError
from pitwall.core.settings import AuditSettings
from pitwall.core.tasks import Supervisor
from pitwall.core.tenancy import AUDIT_TENANT, TENANT_HEADER, principal_of, resolve_tenant

if TYPE_CHECKING:
    from pitwall.core.lifecycle import Component, Mount
    from pitwall.core.selfmetrics import SelfMetrics

__all__ = ["AUDIT_TENANT", "AuditEntry", "AuditLog", "AuditSettings", "AuditSink",
           "is_audited"]

log = logging.getLogger(__name__)

REFUSED = frozenset({401, 403})
_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})
LINGER_S = 0.25  # how long the first entry of a batch waits for others
_BATCH = 512
_TENANT_HEADER = TENANT_HEADER.lower().encode()


# Sign-in and sign-out (core.oidc): recorded whatever the method and status.
ALWAYS_AUDITED = frozenset({"/auth/callback", "/auth/logout"})


@dataclass(frozen=True)
class AuditEntry:
    ts_ns: int
    who: str  # the token's name ("" when unnamed, refused or without tokens)
    tenant: str
    method: str
    path: str
    query_keys: tuple[str, ...]
    status: int
    remote: str
    user_agent: str
    duration_s: float

    @property
    def status_class(self) -> str:
        return f"{self.status // 100}xx"

    def stream_labels(self) -> dict[str, str]:
        """Labels of the log stream this entry goes to."""
        method = self.method if self.method in _METHODS else "other"  # a client picks the method: bounded
        return {"job": AUDIT_TENANT, "method": method, "status_class": self.status_class}

    def logfmt(self) -> str:
        # One f-string (the drain formats every entry on the event loop); status and duration need no quoting.
        q = _logfmt_value
        return (f"who={q(self.who)} tenant={q(self.tenant)} method={q(self.method)} path={q(self.path)} "
                f"query={q(','.join(self.query_keys))} status={self.status} remote={q(self.remote)} "
                f"user_agent={q(self.user_agent)} duration={self.duration_s:.6f}s")


_BARE = re.compile(r'[^ "=\\]+')  # a value written unquoted (if printable too)


def _logfmt_value(v: str) -> str:
    if not v:
        return '""'
    if _BARE.fullmatch(v) and v.isprintable():
        return v
    escaped = v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{"".join(c if c.isprintable() else "?" for c in escaped)}"'


class AuditSink(Protocol):
    """Where batches of entries go (the log store, in the server)."""

    async def record(self, entries: Sequence[AuditEntry]) -> None: ...


def is_audited(method: str, path: str, status: int) -> bool:
    """Whether a request is recorded: it is not a read, or it was refused."""
    if status in REFUSED or path in ALWAYS_AUDITED:
        return True
    return not (method in SAFE_METHODS or (method == "POST" and is_read_only_post(path)))


class AuditLog:
    """The queue between requests and the sink, and the task draining it: a ``Component`` and a
    ``core.lifecycle.Part`` (no routes)."""

    name = "audit"

    def __init__(self, sink: AuditSink, settings: AuditSettings) -> None:
        self.sink = sink
        self.enabled = settings.enabled
        self.queue: asyncio.Queue[AuditEntry] = asyncio.Queue(settings.queue_size)
        self.tasks = Supervisor("audit")
        self.dropped = 0
        self.failed = 0  # entries the sink refused
        self._writing = False
        self._pending: list[AuditEntry] = []  # taken from the queue, waiting out the linger

    def offer(self, entry: AuditEntry) -> None:
        """Queue an entry, or drop and count it when the queue is full; never waits."""
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.dropped += 1

    def record(self, scope: Scope, status: int, duration_s: float) -> None:
        """An answered HTTP request (its principal, if any, in ``scope``): queued when it is audited."""
        method = scope.get("method", "GET")
        if is_audited(method, scope["path"], status):
            self.offer(_entry(scope, method, status, duration_s))

    async def start(self) -> None:
        self.tasks.spawn(self._drain(), name="drain")

    async def stop(self) -> None:
        for _ in range(500):  # let a batch being written finish (at most 5 s), then stop waiting for more
            if not self._writing:
                break
            await asyncio.sleep(0.01)
        await self.tasks.stop()
        rest, self._pending = self._pending, []
        while not self.queue.empty():
            rest.append(self.queue.get_nowait())
        for i in range(0, len(rest), _BATCH):
            await self._write(rest[i:i + _BATCH])

    async def _drain(self) -> None:
        while True:
            self._pending = [await self.queue.get()]
            # Entries arriving meanwhile join the batch: one sink write (a log-store commit and its fsync,
            # beside the state store's) per linger rather than per request. What was queued when the linger
            # ended goes, ``_BATCH`` at a time, so the linger never caps the rate entries are stored at.
            await asyncio.sleep(LINGER_S)
            left = self.queue.qsize()
            while self._pending:
                while len(self._pending) < _BATCH and left > 0:
                    self._pending.append(self.queue.get_nowait())
                    left -= 1
                batch, self._pending = self._pending, []
                self._writing = True
                try:
                    await self._write(batch)
                finally:
                    self._writing = False
                if left > 0:
                    self._pending = [self.queue.get_nowait()]
                    left -= 1

    async def _write(self, batch: Sequence[AuditEntry]) -> None:
        try:
            await self.sink.record(batch)
        except Exception as e:
            self.failed += len(batch)
            log.warning("audit entries not stored", extra={"entries": len(batch), "error": str(e)})

    # core.lifecycle.Part
    def components(self) -> Sequence[Component]:
        return [self]

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        return []

    async def reload(self, settings: Any) -> None:
        self.enabled = settings.audit.enabled

    def register_metrics(self, metrics: SelfMetrics) -> None:
        audit = self

        class _Dropped(Collector):
            def collect(self):  # type: ignore[no-untyped-def]
                yield CounterMetricFamily("pitwall_audit_dropped", "Audit entries dropped on a full queue.",
                                          value=audit.dropped)
                yield CounterMetricFamily("pitwall_audit_failed", "Audit entries the log store refused.",
                                          value=audit.failed)

        metrics.registry.register(_Dropped())


def _entry(scope: Scope, method: str, status: int, duration_s: float) -> AuditEntry:
    named = b""
    agent = b""
    for k, v in scope["headers"]:
        if k == _TENANT_HEADER and not named:
            named = v
        elif k == b"user-agent" and not agent:
            agent = v
    principal = principal_of(scope)
    tenant = named.decode("latin-1").strip()
    with contextlib.suppress(PitwallError):  # refused: the tenant as named
        tenant = resolve_tenant(principal, tenant)
    query = scope.get("query_string", b"").decode("latin-1")
    keys = tuple(dict.fromkeys(k[:64] for k, _ in parse_qsl(query, keep_blank_values=True)))
    client = scope.get("client")
    return AuditEntry(
        ts_ns=time.time_ns(), who=principal.name if principal else "", tenant=tenant[:150], method=method[:32],
        path=scope["path"][:2048], query_keys=keys[:32], status=status, remote=client[0] if client else "",
        user_agent=agent.decode("latin-1")[:256], duration_s=duration_s,
    )
