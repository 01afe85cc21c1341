"""What every ``backends.*`` remote engine shares: health, request relay, the WAL forwarding queue.

A pillar configured with a backend keeps acknowledging writes from its own
WAL (a local copy) and forwards them from there; reads go to the engine.
``ForwardQueue`` is the queue: it reads a pillar's WAL from a position
persisted in ``<wal dir>/forward.pos``, hands whole records to the pillar's
encoder, retries with back-off while the engine is down and persists the
position only after the engine acknowledged; the store keeps the WAL
segments the queue has not passed (``keep_from``). A kill -9 re-sends at
most the batch in flight. A 4xx other than 429 drops the batch, as
Prometheus' remote write and Promtail do: a bad entry must not stall the
queue forever.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import Request, Response

from pitwall.core.errors import BadData, ExecutionError, Unavailable
from pitwall.core.tasks import Supervisor
from pitwall.core.tenancy import DEFAULT_TENANT
from pitwall.core.wal import Wal, WalRecord

__all__ = ["BackendHealth", "ForwardQueue", "RemoteHTTP", "tenant_headers"]

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 256 << 20  # an engine's answer pitwall parses or relays
MAX_RELAY_BODY = 4 << 20  # a relayed query's body (queries and selectors)


def tenant_headers(base: Mapping[str, str], tenant: str) -> dict[str, str]:
    """``base`` plus ``X-Scope-OrgID`` for a tenant other than ``default`` (Loki's, Tempo's, Mimir's header)."""
    out = dict(base)
    if tenant != DEFAULT_TENANT:
        out["X-Scope-OrgID"] = tenant
    return out


@dataclass
class BackendHealth:
    """An engine's last known state, for ``/-/ready``: None when fine, else why not."""

    name: str  # "<type> at <url>"
    kind: str = "metrics"  # the pillar: metrics, logs, traces
    problem: str | None = None

    def failed(self, why: str) -> None:
        self.problem = f"{self.kind} backend {self.name} is down: {why}"

    def ok(self) -> None:
        self.problem = None


class RemoteHTTP:
    """An engine's HTTP API: pass-through of client requests, probes, and the 503 naming it."""

    def __init__(self, kind: str, type_: str, url: str, headers: Mapping[str, str], timeout_s: float, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url
        self.headers = dict(headers)
        self.timeout = timeout_s
        self.health = BackendHealth(f"{type_} at {url}", kind)
        self.aclient = httpx.AsyncClient(timeout=timeout_s, transport=transport)

    def unreachable(self, why: object) -> Unavailable:
        self.health.failed(str(why) or type(why).__name__)
        return Unavailable(f"{self.health.problem}")

    def check_size(self, r: httpx.Response) -> None:
        if len(r.content) > MAX_RESPONSE_BYTES:
            raise ExecutionError(f"{self.health.name}: answer larger than {MAX_RESPONSE_BYTES} bytes")

    async def relay(self, request: Request, path: str) -> Response:
        """Pass one client request through to the engine (same method, query, body) and its answer back."""
        from pitwall.core.params import tenant_of

        headers = tenant_headers(self.headers, tenant_of(request))
        for h in ("content-type", "accept", "x-loki-response-encoding-flags"):  # what shapes the answer
            if v := request.headers.get(h):
                headers[h] = v
        body = await request.body()
        if len(body) > MAX_RELAY_BODY:
            raise BadData(f"request body larger than {MAX_RELAY_BODY} bytes")
        try:
            r = await self.aclient.request(request.method, self.url + path, params=request.query_params,
                                           content=body, headers=headers)
        except httpx.HTTPError as e:
            raise self.unreachable(e) from None
        if r.status_code in (502, 503, 504):
            raise self.unreachable(f"HTTP {r.status_code}")
        self.health.ok()
        self.check_size(r)
        return Response(r.content, status_code=r.status_code,
                        media_type=r.headers.get("content-type", "application/json"))

    async def probe(self, path: str, params: Mapping[str, str] | None = None) -> None:
        """GET ``path`` on the engine; a 5xx or no answer marks it down."""
        try:
            r = await self.aclient.get(self.url + path, params=params, headers=self.headers)
            if r.status_code >= 500:
                self.health.failed(f"HTTP {r.status_code}")
            else:
                self.health.ok()
        except httpx.HTTPError as e:
            self.health.failed(str(e) or type(e).__name__)

    async def aclose(self) -> None:
        await self.aclient.aclose()


@dataclass
class Batch:
    """Items decoded from whole WAL records and not yet acknowledged by the engine, per tenant."""

    by_tenant: dict[str, list[Any]] = field(default_factory=dict)
    items: int = 0
    end: tuple[int, int] | None = None  # WAL position after the last record read


class ForwardQueue(ABC):
    """A pillar's WAL, from a persisted position, to an engine's write endpoint (subclasses encode)."""

    POLL_S = 0.2
    MAX_BACKOFF_S = 10.0

    def __init__(self, wal: Wal, kind: str, type_: str, url: str, headers: Mapping[str, str], timeout_s: float,
                 batch_items: int, *, probe: Callable[[], Awaitable[None]] | None = None,
                 probe_health: BackendHealth | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.wal = wal
        self.kind = kind
        self.name = f"{kind}-forwarder"
        self.url = url
        self.headers = dict(headers)
        self.timeout = timeout_s
        self.batch_items = batch_items
        self.transport = transport
        self.probe = probe
        self.probe_health = probe_health
        self.pos_file = wal.dir / "forward.pos"
        self.pos = self._load()
        self.health = BackendHealth(f"{type_} at {url}", kind)
        self.tasks = Supervisor(self.name)
        self.sent = 0
        self.dropped = 0
        self.failures = 0
        self.client: httpx.AsyncClient | None = None

    # -- what a pillar supplies --------------------------------------------------

    @abstractmethod
    def decode(self, rec: WalRecord) -> tuple[str, Any, int] | None:
        """(tenant, chunk, item count) of one WAL record, None for records not forwarded (runs in a thread)."""

    @abstractmethod
    async def send(self, tenant: str, chunks: list[Any]) -> None:
        """Deliver chunks of one tenant (use ``post``); raise ``httpx.HTTPError`` to retry."""

    # -- position ----------------------------------------------------------------

    def _load(self) -> tuple[int, int]:
        try:
            seg, off = json.loads(self.pos_file.read_text())
            return int(seg), int(off)
        except FileNotFoundError:
            segs = self.wal.segments()
            return (segs[0] if segs else 1), 0

    def _save(self, pos: tuple[int, int]) -> None:
        tmp = self.pos_file.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(list(pos)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.pos_file)
        fd = os.open(self.pos_file.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def keep_from(self) -> int:
        """The oldest WAL segment the queue still needs (the store keeps it)."""
        return self.pos[0]

    def pending_segments(self) -> int:
        return sum(1 for s in self.wal.segments() if s >= self.pos[0])

    # -- reading -----------------------------------------------------------------

    def _read(self) -> Batch:
        """Whole WAL records from the position until ``batch_items`` items."""
        batch = Batch()
        seg, off = self.pos
        while batch.items < self.batch_items:
            got = False
            for end, rec in self.wal.read_from(seg, off, max_bytes=8 << 20):
                got = True
                off = end
                batch.end = (seg, off)
                d = self.decode(rec)
                if d is not None and d[2]:
                    batch.by_tenant.setdefault(d[0], []).append(d[1])
                    batch.items += d[2]
                if batch.items >= self.batch_items:
                    break
            if got:
                continue
            later = [s for s in self.wal.segments() if s > seg]
            if not later:
                break
            seg, off = later[0], 0  # the writer moved on: the rest of this segment is never written
            batch.end = (seg, off)
        return batch

    # -- sending -----------------------------------------------------------------

    async def post(self, body: bytes, headers: Mapping[str, str], items: int, url: str | None = None) -> None:
        """POST one request; 5xx/429 raise (retry), another 4xx drops the items (logged)."""
        assert self.client is not None
        r = await self.client.post(url or self.url, content=body, headers={**self.headers, **headers})
        if r.status_code >= 500 or r.status_code == 429:
            raise httpx.HTTPStatusError(f"HTTP {r.status_code}: {r.text[:200]}", request=r.request, response=r)
        if r.status_code >= 400:
            self.dropped += items
            log.error(f"{self.kind} backend refused a batch; dropped",
                      extra={"status": r.status_code, "items": items, "error": r.text[:500]})
            return
        self.sent += items

    async def step(self) -> bool:
        """Forward one batch; True when there was something to forward."""
        batch = await asyncio.to_thread(self._read)
        if batch.end is None:
            return False
        for tenant, chunks in batch.by_tenant.items():
            for i in range(0, len(chunks), 64):  # bounded request size: records hold <= batch_items
                await self.send(tenant, chunks[i : i + 64])
        await asyncio.to_thread(self._save, batch.end)
        self.pos = batch.end
        return True

    async def run(self) -> None:
        backoff = 0.25
        last_probe = 0.0
        while True:
            try:
                busy = await self.step()
                self.health.ok()
                backoff = 0.25
            except (httpx.HTTPError, OSError) as e:
                self.failures += 1
                self.health.failed(str(e) or type(e).__name__)
                log.warning(f"{self.kind} forwarding failed; retrying", extra={"error": str(e), "in_s": backoff})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.MAX_BACKOFF_S)
                continue
            if not busy:
                if self.probe is not None and time.monotonic() - last_probe > 5:
                    last_probe = time.monotonic()
                    await self.probe()
                await asyncio.sleep(self.POLL_S)

    # -- Component ---------------------------------------------------------------

    async def start(self) -> None:
        self.client = httpx.AsyncClient(timeout=self.timeout, transport=self.transport)
        self.tasks.spawn(self.run(), name="forward")

    async def stop(self) -> None:
        await self.tasks.stop()
        if self.client is not None:
            await self.client.aclose()

    def problems(self) -> list[str]:
        """Why ``/-/ready`` fails: the write side or the read side of the engine is down."""
        out = [h.problem for h in (self.health, self.probe_health) if h is not None and h.problem]
        return list(dict.fromkeys(out))
