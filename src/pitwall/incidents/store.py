"""Incident records as keys in the revisioned store (``/pitwall/incidents/...``).

Layout (values are the JSON of ``model``):

- ``services/<id>``, ``users/<id>``, ``escalation_policies/<id>``, ``schedules/<id>``
- ``routing/<integration key>`` -> service id (kept with its service in one transaction)
- ``overrides/<schedule id>/<id>``
- ``incidents/<id>`` (ids sort by incident number), ``counter`` (the last number)
- ``dedup/<service id>/<dedup key>`` -> incident id (the incident's key and each open alert's), only
  while the incident is open: a resolved incident never absorbs a new alert with the same key
- ``open/<id>`` -> service id: the open incidents, the escalation loop's work list
- ``alerts/<incident>/<id>``, ``notes/<incident>/<ts>-<id>``, ``log/<incident>/<ts>-<id>``
- ``notified/<incident>/<key>``: the notification log; a notification is sent only by the writer that
  created its key, so a restart never sends one twice
- ``itsm/<incident>``: incidents whose ITSM tickets are not yet in step (written with the incident when
  ITSM sync is configured, deleted once its tickets are resolved): the sync worker's work list
- ``link_key``: the HMAC-SHA256 key signing the acknowledge/resolve links in pages (``links``), 32 random
  bytes written once by whichever server needs it first, so every server on the store accepts every link

Incident updates are compare-and-swap on the key's mod revision, retried, so
several pitwall servers on one etcd agree.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import orjson
from pydantic import BaseModel

from pitwall.incidents.errors import Conflict, IncidentNotFound
from pitwall.incidents.model import (
    Alert,
    EscalationPolicy,
    Incident,
    LogEntry,
    Note,
    Override,
    Schedule,
    Service,
    User,
)
from pitwall.storage.revstore import Compare, Op, RevStore

__all__ = ["PREFIX", "IncidentStore", "new_id"]

PREFIX = "/pitwall/incidents/"
_KINDS: dict[type[BaseModel], str] = {Service: "services", User: "users", EscalationPolicy: "escalation_policies",
                                      Schedule: "schedules"}
_CAS_TRIES = 50
_STRIPES = 64
_SEQ = itertools.count()
M = TypeVar("M", bound=BaseModel)


def new_id(prefix: str = "Q") -> str:
    """A fresh opaque id in PagerDuty's style (upper-case letters and digits)."""
    return prefix + secrets.token_hex(6).upper()


def _dump(m: BaseModel) -> bytes:
    return orjson.dumps(m.model_dump(mode="json", by_alias=True))


class IncidentStore:
    """Typed reads and writes of the incident records over a ``RevStore``."""

    def __init__(self, store: RevStore, prefix: str = PREFIX) -> None:
        self.store = store
        self.p = prefix
        self.track_itsm = False  # set when ITSM sync is configured: new incidents join its work list
        # Writers of one incident in this process take turns (striped locks), so compare-and-swap
        # retries are only spent on other servers' writes: with grouping, many events hit one incident.
        self._locks = [asyncio.Lock() for _ in range(_STRIPES)]

    def _lock(self, incident_id: str) -> asyncio.Lock:
        return self._locks[zlib.crc32(incident_id.encode()) % _STRIPES]

    # --- configuration objects -------------------------------------------------------------------

    def _key(self, cls: type[BaseModel], id_: str) -> str:
        return f"{self.p}{_KINDS[cls]}/{id_}"

    async def get(self, cls: type[M], id_: str) -> M | None:
        kv = await self.store.get(self._key(cls, id_))
        return None if kv is None else cls.model_validate_json(kv.value)

    async def list_all(self, cls: type[M]) -> list[M]:
        res = await self.store.range(f"{self.p}{_KINDS[cls]}/")
        return [cls.model_validate_json(kv.value) for kv in res.kvs]

    async def put(self, obj: BaseModel) -> None:
        """Create or replace; a service's routing keys are re-indexed in the same transaction."""
        ops = [Op.put(self._key(type(obj), obj.id), _dump(obj))]  # type: ignore[attr-defined]
        cmp: list[Compare] = []
        if isinstance(obj, Service):
            old = await self.get(Service, obj.id)
            for k in (old.integration_keys if old else []):
                if k not in obj.integration_keys:
                    ops.append(Op.delete(f"{self.p}routing/{k}"))
            for k in obj.integration_keys:
                owner = await self.store.get(f"{self.p}routing/{k}")
                if owner is not None and owner.value.decode() != obj.id:
                    raise Conflict(f"integration key {k[:6]}... already belongs to service {owner.value.decode()}")
                ops.append(Op.put(f"{self.p}routing/{k}", obj.id.encode()))
                cmp.append(Compare(f"{self.p}routing/{k}", "mod", "=", owner.mod_revision if owner else 0))
        res = await self.store.txn(cmp, ops)
        if not res.succeeded:
            raise Conflict("a routing key changed owner meanwhile; retry")

    async def delete(self, cls: type[BaseModel], id_: str) -> bool:
        obj = await self.get(cls, id_)
        if obj is None:
            return False
        ops = [Op.delete(self._key(cls, id_))]
        if isinstance(obj, Service):
            ops += [Op.delete(f"{self.p}routing/{k}") for k in obj.integration_keys]
        if isinstance(obj, Schedule):
            ops.append(Op.delete(f"{self.p}overrides/{id_}/", prefix=True))
        await self.store.txn([], ops)
        return True

    async def service_for_key(self, routing_key: str) -> Service | None:
        kv = await self.store.get(f"{self.p}routing/{routing_key}")
        return None if kv is None else await self.get(Service, kv.value.decode())

    async def overrides(self, schedule_id: str) -> list[Override]:
        res = await self.store.range(f"{self.p}overrides/{schedule_id}/")
        return [Override.model_validate_json(kv.value) for kv in res.kvs]

    async def put_override(self, schedule_id: str, o: Override) -> None:
        await self.store.put(f"{self.p}overrides/{schedule_id}/{o.id}", _dump(o))

    async def delete_override(self, schedule_id: str, override_id: str) -> bool:
        return bool(await self.store.delete(f"{self.p}overrides/{schedule_id}/{override_id}"))

    # --- incidents -------------------------------------------------------------------------------

    def _ikey(self, id_: str) -> str:
        return f"{self.p}incidents/{id_}"

    async def next_number(self) -> tuple[int, int]:
        """The next incident number and the counter's mod revision, to pass to ``create_incident``."""
        kv = await self.store.get(f"{self.p}counter")
        return (int(kv.value) + 1, kv.mod_revision) if kv else (1, 0)

    async def create_incident(self, inc: Incident, alert: Alert | None, entries: Sequence[LogEntry],
                              counter_rev: int) -> str:
        """Store a new incident (with its first alert and log entries) in one write, taking its number.

        Returns ``"created"``, ``"deduplicated"`` (an open incident holds the dedup key, or the alert's when
        it differs from the incident's) or ``"renumber"`` (another incident took the number first: ask
        ``next_number`` again). Numbers are never skipped.
        """
        keys = sorted({inc.incident_key, *([alert.dedup_key] if alert is not None else [])})
        dedups = [f"{self.p}dedup/{inc.service_id}/{k}" for k in keys]
        counter = f"{self.p}counter"
        ops = [Op.put(counter, str(inc.number).encode()), Op.put(self._ikey(inc.id), _dump(inc)),
               *(Op.put(d, inc.id.encode()) for d in dedups),
               Op.put(f"{self.p}open/{inc.id}", inc.service_id.encode())]
        if alert is not None:
            ops.append(Op.put(f"{self.p}alerts/{inc.id}/{alert.id}", _dump(alert)))
        ops += [self._log_op(inc.id, e) for e in entries]
        if self.track_itsm:
            ops.append(Op.put(f"{self.p}itsm/{inc.id}", b""))
        res = await self.store.txn([*(Compare(d, "version", "=", 0) for d in dedups),
                                    Compare(counter, "mod", "=", counter_rev)], ops, [Op.get(d) for d in dedups])
        if res.succeeded:
            return "created"
        return "deduplicated" if any(res.results) else "renumber"

    async def open_by_dedup(self, service_id: str, dedup_key: str) -> Incident | None:
        kv = await self.store.get(f"{self.p}dedup/{service_id}/{dedup_key}")
        return None if kv is None else await self.get_incident(kv.value.decode())

    async def get_incident(self, id_: str) -> Incident | None:
        kv = await self.store.get(self._ikey(id_))
        return None if kv is None else Incident.model_validate_json(kv.value)

    async def require_incident(self, id_: str) -> Incident:
        inc = await self.get_incident(id_)
        if inc is None:
            raise IncidentNotFound(f"incident {id_} not found")
        return inc

    async def incidents(self) -> list[Incident]:
        """Every incident, oldest (lowest number) first."""
        out: list[Incident] = []
        start: str | None = None
        while True:
            res = await self.store.range(f"{self.p}incidents/", start=start, limit=500)
            out += [Incident.model_validate_json(kv.value) for kv in res.kvs]
            if not res.more or not res.kvs:
                out.sort(key=lambda i: i.number)
                return out
            start = res.kvs[-1].key + "\0"

    async def open_ids(self) -> list[str]:
        res = await self.store.range(f"{self.p}open/")
        return [kv.key.rsplit("/", 1)[1] for kv in res.kvs]

    async def update_incident(
        self, id_: str, change: Callable[[Incident], Awaitable[tuple[list[LogEntry], list[Alert]] | None]],
    ) -> Incident:
        """Apply ``change`` (mutating the incident; returning log entries and alerts to write, or None for
        no change) with compare-and-swap, retrying on a concurrent write."""
        async with self._lock(id_):
            return await self._update_incident(id_, change)

    async def _update_incident(
        self, id_: str, change: Callable[[Incident], Awaitable[tuple[list[LogEntry], list[Alert]] | None]],
    ) -> Incident:
        for _ in range(_CAS_TRIES):
            kv = await self.store.get(self._ikey(id_))
            if kv is None:
                raise IncidentNotFound(f"incident {id_} not found")
            inc = Incident.model_validate_json(kv.value)
            was_open = inc.status != "resolved"
            out = await change(inc)
            if out is None:
                return inc
            entries, alerts = out
            ops = [Op.put(self._ikey(id_), _dump(inc))]
            ops += [self._log_op(id_, e) for e in entries]
            ops += [Op.put(f"{self.p}alerts/{id_}/{a.id}", _dump(a)) for a in alerts]
            if was_open and inc.status == "resolved":
                keys = {inc.incident_key} | {a.dedup_key for a in await self.alerts(id_)}
                ops += [Op.delete(f"{self.p}dedup/{inc.service_id}/{k}") for k in sorted(keys)]
                ops.append(Op.delete(f"{self.p}open/{id_}"))
            elif inc.status != "resolved":  # an alert resolved on its own frees its dedup key
                ops += [Op.delete(f"{self.p}dedup/{inc.service_id}/{a.dedup_key}") for a in alerts
                        if a.status == "resolved"]
            res = await self.store.txn([Compare(self._ikey(id_), "mod", "=", kv.mod_revision)], ops)
            if res.succeeded:
                return inc
        raise Conflict(f"incident {id_}: too many concurrent updates")

    async def add_alert(self, id_: str, alert: Alert,
                        change: Callable[[Incident], Awaitable[list[LogEntry] | None]]) -> str:
        """Group ``alert`` into open incident ``id_``: ``change`` updates the incident (None: it no longer
        takes the alert). One write stores the incident, the alert, its dedup key and the log entries.

        Returns ``"added"``, ``"deduplicated"`` (an open incident took the alert's dedup key meanwhile) or
        ``"refused"`` (the incident was resolved or no longer matches).
        """
        async with self._lock(id_):
            return await self._add_alert(id_, alert, change)

    async def _add_alert(self, id_: str, alert: Alert,
                         change: Callable[[Incident], Awaitable[list[LogEntry] | None]]) -> str:
        dedup = f"{self.p}dedup/{alert.service_id}/{alert.dedup_key}"
        for _ in range(_CAS_TRIES):
            kv = await self.store.get(self._ikey(id_))
            if kv is None:
                return "refused"
            inc = Incident.model_validate_json(kv.value)
            if inc.status == "resolved":
                return "refused"
            entries = await change(inc)
            if entries is None:
                return "refused"
            ops = [Op.put(self._ikey(id_), _dump(inc)), Op.put(f"{self.p}alerts/{id_}/{alert.id}", _dump(alert)),
                   Op.put(dedup, id_.encode()), *(self._log_op(id_, e) for e in entries)]
            res = await self.store.txn([Compare(self._ikey(id_), "mod", "=", kv.mod_revision),
                                        Compare(dedup, "version", "=", 0)], ops, [Op.get(dedup)])
            if res.succeeded:
                return "added"
            if res.results and res.results[0]:
                return "deduplicated"
        raise Conflict(f"incident {id_}: too many concurrent updates")

    async def open_incidents(self, service_id: str) -> list[Incident]:
        """The service's open incidents, newest first (``open/<id>`` holds the service id; empty: older
        incidents, read to learn it)."""
        res = await self.store.range(f"{self.p}open/")
        ids = [kv.key.rsplit("/", 1)[1] for kv in res.kvs if kv.value in (b"", service_id.encode())]
        out = [i for i in [await self.get_incident(x) for x in ids]
               if i is not None and i.service_id == service_id and i.status != "resolved"]
        return sorted(out, key=lambda i: -i.number)

    def _log_op(self, incident_id: str, e: LogEntry) -> Op:
        # Entries of the same nanosecond (one write records several) keep the order they were made in.
        return Op.put(f"{self.p}log/{incident_id}/{e.created_ns:020d}-{next(_SEQ):012d}-{e.id}", _dump(e))

    async def alerts(self, incident_id: str) -> list[Alert]:
        res = await self.store.range(f"{self.p}alerts/{incident_id}/")
        return sorted((Alert.model_validate_json(kv.value) for kv in res.kvs), key=lambda a: a.created_ns)

    async def log_entries(self, incident_id: str) -> list[LogEntry]:
        res = await self.store.range(f"{self.p}log/{incident_id}/")
        return [LogEntry.model_validate_json(kv.value) for kv in res.kvs]

    async def add_note(self, incident_id: str, note: Note) -> None:
        await self.store.put(f"{self.p}notes/{incident_id}/{note.created_ns:020d}-{note.id}", _dump(note))

    async def notes(self, incident_id: str) -> list[Note]:
        res = await self.store.range(f"{self.p}notes/{incident_id}/")
        return [Note.model_validate_json(kv.value) for kv in res.kvs]

    async def add_log(self, incident_id: str, entry: LogEntry) -> None:
        await self.store.txn([], [self._log_op(incident_id, entry)])

    # --- the ITSM work list --------------------------------------------------------------------------

    async def itsm_work(self) -> list[str]:
        """Incident ids whose tickets still need a create, comment or resolve (oldest first)."""
        out: list[str] = []
        start: str | None = None
        while True:  # every open incident stays listed until resolved: read them all, a page at a time
            res = await self.store.range(f"{self.p}itsm/", start=start, limit=1000)
            out += [kv.key.rsplit("/", 1)[1] for kv in res.kvs]
            if not res.more or not res.kvs:
                return out
            start = res.kvs[-1].key + "\0"

    async def itsm_tracked(self, incident_id: str) -> bool:
        """Whether the incident is still on the ITSM work list."""
        return await self.store.get(f"{self.p}itsm/{incident_id}") is not None

    async def itsm_done(self, incident_id: str) -> None:
        await self.store.delete(f"{self.p}itsm/{incident_id}")

    # --- the action-link key -------------------------------------------------------------------------

    async def link_key(self) -> bytes:
        """The key signing action links; the first caller on the store creates it (compare-and-swap on its
        absence), later ones, on any server, read that one."""
        k = f"{self.p}link_key"
        kv = await self.store.get(k)
        if kv is not None:
            return kv.value
        new = secrets.token_bytes(32)
        res = await self.store.txn([Compare(k, "version", "=", 0)], [Op.put(k, new)], [Op.get(k)])
        return new if res.succeeded else res.results[0][0].value

    # --- the notification log --------------------------------------------------------------------

    async def claim_notification(self, incident_id: str, key: str, record: dict[str, object]) -> bool:
        """True for the one caller that records ``key`` first (and so sends it)."""
        k = f"{self.p}notified/{incident_id}/{key}"
        res = await self.store.txn([Compare(k, "version", "=", 0)], [Op.put(k, orjson.dumps(record))])
        return res.succeeded

    async def finish_notification(self, incident_id: str, key: str, record: dict[str, object],
                                  entry: LogEntry) -> None:
        """Record how a claimed notification went, with its log entry, in one write."""
        await self.store.txn([], [Op.put(f"{self.p}notified/{incident_id}/{key}", orjson.dumps(record)),
                                  self._log_op(incident_id, entry)])

    async def notifications(self, incident_id: str) -> list[dict[str, object]]:
        res = await self.store.range(f"{self.p}notified/{incident_id}/")
        return [orjson.loads(kv.value) for kv in res.kvs]
