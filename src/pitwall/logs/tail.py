"""Live tail: Loki's ``GET /loki/api/v1/tail`` websocket.

A session first sends the entries since ``start`` (default one hour back,
at most ``limit``), then every entry committed to the store whose stream
matches the query's selector, in messages of Loki's shape
(``{"streams": [...], "dropped_entries": [...]}``). New entries are run
through the LogQL engine over an in-memory querier, so pipelines
(``|= "error" | json | level="error"``) apply exactly as in queries. Each
session buffers a bounded number of entries; beyond it the oldest are
dropped and reported in ``dropped_entries`` as Loki does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from pitwall.core.errors import BadData, PitwallError
from pitwall.core.params import tenant_of
from pitwall.logs.memory import MemoryLogQuerier
from pitwall.logs.model import LEVEL_LABEL, Direction, Labels, Matcher, decode_metadata, encode_metadata
from pitwall.logs.params import parse_limit, parse_timestamp_ns
from pitwall.logs.store import LogFeed

log = logging.getLogger(__name__)

NS = 1_000_000_000
MAX_DELAY_S = 5
SESSION_BUFFER = 10_000
# RFC 6455 close codes Loki's tailer uses.
CLOSE_INTERNAL = 1011
CLOSE_POLICY = 1008


class TailSession:
    """One websocket's subscription: matched entries waiting to be sent."""

    def __init__(self, hub: TailHub, tenant: str, matchers: Sequence[Matcher]) -> None:
        self.hub = hub
        self.tenant = tenant
        self.matchers = list(matchers)
        self.rows: list[tuple[Labels, int, str, str | None]] = []
        self.dropped: list[tuple[Labels, int]] = []
        self.wake = asyncio.Event()
        self._known = -1
        self._want = np.zeros(0, dtype=bool)

    def _refresh(self, n_streams: int) -> None:
        want = np.zeros(n_streams + 1, dtype=bool)
        want[self.hub.store.matching_sids(self.tenant, self.matchers)] = True
        self._want = want
        self._known = n_streams

    def offer(self, labels: list[Labels], batch: pa.RecordBatch) -> None:
        if len(labels) != self._known:
            self._refresh(len(labels))
        sid = batch.column(0).to_numpy()
        hit = np.flatnonzero(self._want[np.minimum(sid, len(self._want) - 1)])
        if not len(hit):
            return
        ts = batch.column(1).to_numpy()
        lines = batch.column(2).take(pa.array(hit)).to_pylist()
        mds = batch.column(3).take(pa.array(hit)).to_pylist()
        if batch.num_columns > 5:
            mds = _with_levels(mds, batch.column(5).take(pa.array(hit)).to_pylist())
        for j, i in enumerate(hit.tolist()):
            self.rows.append((labels[int(sid[i])], int(ts[i]), lines[j], mds[j]))
        over = len(self.rows) - SESSION_BUFFER
        if over > 0:
            self.dropped.extend((lbl, t) for lbl, t, _, _ in self.rows[:over])
            del self.rows[:over]
            del self.dropped[:-1000]
        self.wake.set()

    def take(self) -> tuple[list[tuple[Labels, int, str, str | None]], list[tuple[Labels, int]]]:
        rows, dropped = self.rows, self.dropped
        self.rows, self.dropped = [], []
        self.wake.clear()
        return rows, dropped


class TailHub:
    """Fans committed entries out to tail sessions; a ``Component`` so shutdown closes them."""

    name = "logs-tail"

    def __init__(self, store: LogFeed, engine: Any, parse_selector: Callable[[str], list[Matcher]], *,
                 max_connections: int = 32) -> None:
        self.store = store
        self.engine = engine
        self.parse_selector = parse_selector
        self.max_connections = max_connections
        self.sessions: set[TailSession] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._stopping.clear()
        self._unsubscribe = self.store.add_listener(self._on_commit)

    async def stop(self) -> None:
        self._stopping.set()
        for s in list(self.sessions):
            s.wake.set()
        if self._unsubscribe is not None:
            self._unsubscribe()

    def _on_commit(self, tenant: str, labels: list[Labels], batch: pa.RecordBatch) -> None:
        for s in self.sessions:
            if s.tenant == tenant:
                s.offer(labels, batch)

    def render(self, expr: str, rows: list[tuple[Labels, int, str, str | None]], limit: int) -> list[Any]:
        """Run ``expr``'s pipeline over ``rows``; Loki's ``streams`` result."""
        if not rows:
            return []
        mem = MemoryLogQuerier()
        for lbl, ts, line, md in rows:
            mem.add(lbl, ts, line, decode_metadata(md))
        lo = min(r[1] for r in rows)
        hi = max(r[1] for r in rows) + 1
        res = self.engine.query_range(mem, expr, lo, hi, NS, limit=limit, direction=Direction.FORWARD)
        return _streams_of(res.to_loki_data())


def _streams_of(data: dict[str, Any]) -> list[Any]:
    if data.get("resultType") != "streams":
        raise BadData("tail is only supported for log queries, not metric queries")
    return list(data.get("result") or [])


def _message(streams: list[Any], dropped: list[tuple[Labels, int]]) -> str:
    body: dict[str, Any] = {"streams": streams}
    body["dropped_entries"] = [{"labels": dict(lbl), "timestamp": str(t)} for lbl, t in dropped] or None
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def tail_router(hub: TailHub) -> APIRouter:
    r = APIRouter(tags=["loki"])

    @r.websocket("/loki/api/v1/tail")
    async def tail(ws: WebSocket) -> None:
        # Bearer auth happened in core.auth.BearerAuth, which covers websocket handshakes.
        await ws.accept()
        if len(hub.sessions) >= hub.max_connections:
            await ws.close(CLOSE_POLICY, f"max concurrent tail requests limit exceeded ({hub.max_connections})")
            return
        try:
            await _run(hub, ws)
        except WebSocketDisconnect:
            pass
        except PitwallError as e:
            with contextlib.suppress(Exception):
                await ws.close(CLOSE_INTERNAL, e.message[:120])

    return r


async def _run(hub: TailHub, ws: WebSocket) -> None:
    p = ws.query_params
    expr = p.get("query") or ""
    if not expr.strip():
        raise BadData("missing query parameter")
    tenant = tenant_of(ws)
    limit = parse_limit(p.get("limit"))
    delay = min(max(int(p.get("delay_for") or 0), 0), MAX_DELAY_S)
    now = time.time_ns()
    start = parse_timestamp_ns(p["start"]) if p.get("start") else now - 3600 * NS
    matchers = hub.parse_selector(expr)
    session = TailSession(hub, tenant, matchers)
    hub.sessions.add(session)
    try:
        q = hub.store.querier(tenant)
        res = await asyncio.to_thread(hub.engine.query_range, q, expr, start, now, NS, limit=limit,
                                      direction=Direction.FORWARD)
        first = _streams_of(res.to_loki_data())
        if first:
            await ws.send_text(_message(first, []))
        # Entries committed while the backfill ran are in the session too: skip the ones it sent.
        seen = {(int(v[0]), v[1]) for s in first for v in s.get("values", [])}
        await _pump(hub, ws, session, expr, limit, delay, seen)
    finally:
        hub.sessions.discard(session)


async def _pump(hub: TailHub, ws: WebSocket, session: TailSession, expr: str, limit: int, delay: int,
                seen: set[tuple[int, str]]) -> None:
    closed = asyncio.ensure_future(_wait_closed(ws))
    try:
        while not hub._stopping.is_set() and not closed.done():
            waiter = asyncio.ensure_future(session.wake.wait())
            await asyncio.wait({waiter, closed}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if closed.done() or hub._stopping.is_set():
                break
            if delay:
                await asyncio.sleep(delay)
            rows, dropped = session.take()
            if seen:
                rows = [r for r in rows if (r[1], r[2]) not in seen]
                seen = set()
            if not rows and not dropped:
                continue
            streams = await asyncio.to_thread(hub.render, expr, rows, max(limit, len(rows)))
            if streams or dropped:
                await ws.send_text(_message(streams, dropped))
    finally:
        closed.cancel()
        with contextlib.suppress(Exception):
            await ws.close()


async def _wait_closed(ws: WebSocket) -> None:
    """Returns when the client goes away (tail clients send nothing else)."""
    with contextlib.suppress(Exception):
        while True:
            msg = await ws.receive()
            if msg.get("type") == "websocket.disconnect":
                return


def _with_levels(mds: list[str | None], levels: list[str | None]) -> list[str | None]:
    """Stored metadata with the entry's detected_level appended, as queries return it."""
    out: list[str | None] = []
    for md, lvl in zip(mds, levels, strict=True):
        if lvl is None:
            out.append(md)
        else:
            out.append(encode_metadata((*decode_metadata(md), (LEVEL_LABEL, lvl))))
    return out
