"""Change events: the one stream every capability writes what it did to a running system to.

Deploys and rollbacks, config changes, canary steps, chaos runs, backups and
restores, pipeline deploys all call ``ChangeSink.record``; the incident
timeline reads them back with ``ChangeLog.between``. Events are keys in the
revisioned state store (``/pitwall/changes/<ts_ns>-<id>``), so they need no
table of their own, survive restarts, and every pitwall sharing an etcd sees
the same stream.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

from pitwall.storage.revstore import Op, RevStore

__all__ = ["CHANGE_KINDS", "ChangeEvent", "ChangeKind", "ChangeLog", "ChangeSink"]

ChangeKind = Literal["deploy", "rollback", "scale", "config", "canary", "release", "chaos", "backup", "restore",
                     "pipeline", "other"]
CHANGE_KINDS: tuple[str, ...] = ("deploy", "rollback", "scale", "config", "canary", "release", "chaos", "backup",
                                 "restore", "pipeline", "other")
PREFIX = "/pitwall/changes/"
_TS_DIGITS = 20


@dataclass(frozen=True)
class ChangeEvent:
    """One change to a running system.

    ``service`` names the affected service as ``namespace/name`` (a Kubernetes
    Service or Deployment, or a PagerDuty-style service name for changes from
    outside); ``who`` is the principal (token name, user) or controller that
    made it; ``details`` is free JSON (revision numbers, old/new images, the
    weight of a canary step, ...).
    """

    kind: ChangeKind
    summary: str
    source: str
    service: str = ""
    who: str = ""
    ts_ns: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    links: tuple[str, ...] = ()
    id: str = ""

    def to_json(self) -> bytes:
        # orjson writes a dataclass's fields in order, tuples as arrays: the bytes of ``asdict`` with
        # ``links`` as a list, without its deep copy (~40 us of every KV write's ~1 ms)
        return orjson.dumps(self)

    @staticmethod
    def from_json(raw: bytes) -> ChangeEvent:
        d = orjson.loads(raw)
        return ChangeEvent(kind=d["kind"], summary=d["summary"], source=d["source"], service=d.get("service", ""),
                           who=d.get("who", ""), ts_ns=int(d["ts_ns"]), details=d.get("details") or {},
                           links=tuple(d.get("links") or ()), id=d.get("id", ""))


class ChangeSink(Protocol):
    """What a capability is given to report its changes."""

    async def record(self, event: ChangeEvent) -> ChangeEvent:
        """Store ``event`` (time and id filled in when empty); returns it as stored."""
        ...


class ChangeLog:
    """``ChangeSink`` over the revisioned state store, with reads for the timeline."""

    def __init__(self, store: RevStore, *, prefix: str = PREFIX) -> None:
        self.store = store
        self.prefix = prefix

    def _key(self, ts_ns: int, id_: str) -> str:
        return f"{self.prefix}{ts_ns:0{_TS_DIGITS}d}-{id_}"

    async def record(self, event: ChangeEvent) -> ChangeEvent:
        stored, op = self.stage(event)
        await self.store.put(op.key, op.value)
        return stored

    def stage(self, event: ChangeEvent) -> tuple[ChangeEvent, Op]:
        """``event`` as it will be stored and the put that stores it, for a writer of this log's store to add
        to its own transaction (the change and its event in one commit)."""
        stored = self._stamped(event, details=copy.deepcopy(event.details))
        return stored, Op.put(self._key(stored.ts_ns, stored.id), stored.to_json())

    def stage_op(self, event: ChangeEvent) -> Op:
        """Only the put of ``stage``, for a writer that keeps no stored event: its bytes are fixed when it is
        built, so ``details`` needs no copy (a KV write stages one per change)."""
        stored = self._stamped(event, details=event.details)
        return Op.put(self._key(stored.ts_ns, stored.id), stored.to_json())

    @staticmethod
    def _stamped(event: ChangeEvent, *, details: dict[str, Any]) -> ChangeEvent:
        """``event`` with its kind checked and its time and id filled in when empty."""
        if event.kind not in CHANGE_KINDS:
            raise ValueError(f"unknown change kind {event.kind!r}; one of {', '.join(CHANGE_KINDS)}")
        # A constructor, not ``replace``: a KV write stamps one per change.
        return ChangeEvent(kind=event.kind, summary=event.summary, source=event.source, service=event.service,
                           who=event.who, ts_ns=event.ts_ns or time.time_ns(), details=details, links=event.links,
                           id=event.id or secrets.token_hex(8))

    async def between(self, start_ns: int, end_ns: int, *, service: str = "", limit: int = 1000) -> list[ChangeEvent]:
        """Events with ``start_ns <= ts_ns < end_ns`` in time order (of ``service`` when given), at most ``limit``."""
        out: list[ChangeEvent] = []
        start = self._key(max(start_ns, 0), "")
        end = self._key(end_ns, "")
        while len(out) < limit:
            res = await self.store.range(self.prefix, start=start, limit=256)
            for kv in res.kvs:
                if kv.key >= end:
                    return out
                ev = ChangeEvent.from_json(kv.value)
                if not service or ev.service == service:
                    out.append(ev)
                    if len(out) >= limit:
                        return out
            if not res.more or not res.kvs:
                return out
            start = res.kvs[-1].key + "\0"
        return out

    async def follow(self) -> AsyncIterator[ChangeEvent]:
        """Every event recorded from now on, as it is stored (ends when the store stops)."""
        async for batch in self.store.watch(self.prefix):
            for ev in batch:
                if ev.type == "PUT":
                    yield ChangeEvent.from_json(ev.kv.value)

    async def prune(self, before_ns: int) -> int:
        """Delete events older than ``before_ns``; returns how many."""
        n = 0
        while True:
            res = await self.store.range(self.prefix, limit=512)
            old = [kv.key for kv in res.kvs if kv.key < self._key(before_ns, "")]
            for key in old:
                await self.store.delete(key)
            n += len(old)
            if len(old) < len(res.kvs) or not res.more:
                return n
