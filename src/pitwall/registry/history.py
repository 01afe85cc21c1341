"""Config history: every change to a Consul key, who made it, when, old -> new, at which revision.

Records are keys in the revisioned store (``HISTORY_PREFIX<key>\\x01<ts_ns>``;
``\\x01`` cannot occur in a Consul key, so one key's records never mix with
another's) written in the same transaction as the change itself, so the
record's mod revision is the change's revision. Each change is also a
``config`` event on the one change-event stream (``incidents.ChangeLog``),
stamped with the change's time and written after the commit, batched: the
events of every change within ``EVENT_LINGER_S`` share one store commit, off
the path of the write that made them (a Consul write's answer waits for one
commit, not two; the event costs a write its key, index pages and watchers
otherwise). A server that dies inside that window loses those events, never
the changes or their history records. At most ``keep`` records are kept per
key.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pitwall.core.tasks import Supervisor
from pitwall.incidents import ChangeEvent, ChangeLog, ChangeSink
from pitwall.registry.model import ROOT
from pitwall.storage.revstore import KeyValue, Op, RevStore

__all__ = ["HISTORY_PREFIX", "ConfigHistory", "HistoryPlan", "HistoryRecord"]

HISTORY_PREFIX = ROOT + "history/"
_SEP = "\x01"
_PRUNE_AHEAD = 16  # oldest records noted per key at a pruning read: the next writes delete them in their commit
_TALLY_KEYS = 4096  # keys whose record counts are kept in memory
EVENT_LINGER_S = 0.05  # how long a change event waits for others to share its commit
_EVENT_BATCH = 256  # events per commit
_EVENTS_MAX = 100_000  # events waiting; past this, new ones are dropped (and logged) rather than held
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HistoryRecord:
    """One change of one key: ``old``/``new`` None when the key did not exist before/after."""

    key: str
    who: str
    ts_ns: int
    old: bytes | None
    new: bytes | None
    revision: int

    def to_api(self) -> dict[str, Any]:
        def b64(v: bytes | None) -> str | None:
            return None if v is None else base64.b64encode(v).decode()
        return {"Key": self.key, "Who": self.who, "Time": self.ts_ns, "Revision": self.revision,
                "Old": b64(self.old), "New": b64(self.new)}


def _records_of(key: str) -> str:
    return f"{HISTORY_PREFIX}{key}{_SEP}"


def _event(key: str, who: str, created: bool, deleted: bool, *, ts_ns: int = 0) -> ChangeEvent:
    verb = "created" if created else "deleted" if deleted else "changed"
    return ChangeEvent(kind="config", summary=f"Consul KV {key} {verb}", source="consul-kv", who=who,
                       ts_ns=ts_ns, details={"key": key, "change": verb})


@dataclass
class _Tally:
    """What this process knows of one key's records: how many there are, and the oldest few (their store
    keys, oldest first) so a write at the limit can delete the oldest in its own transaction."""

    count: int
    oldest: deque[str] = field(default_factory=deque)
    claimed: set[str] = field(default_factory=set)  # records a transaction in flight deletes


@dataclass
class HistoryPlan:
    """The history part of one change's transaction (``ConfigHistory.plan``): its ops, and what
    ``committed``/``abandoned`` need to keep the tallies true."""

    ops: list[Op]
    counted: dict[str, int]  # key -> index in ``ops`` of the get that reads its records
    claimed: dict[str, list[tuple[str, int]]]  # key -> the oldest records this transaction deletes, their ops' indexes
    keys: list[str]


class ConfigHistory:
    """Writes history records with each change and reads them back, newest last.

    The history record is in the change's own commit (the change event follows,
    batched: see the module's docstring), and so is the deletion of the key's
    oldest record once it has ``keep``.
    For that the history keeps, per key (the ``_TALLY_KEYS`` most recently
    written), a tally of its records and the store keys of the oldest few:
    the first write of a key since start reads its records in the same
    transaction (a get beside the put), and when a write leaves more than
    ``keep`` with none known to delete, a pruning read after the commit
    deletes the excess and notes the next ``_PRUNE_AHEAD``. So a KV write is
    one store commit and, at steady state, nothing after it. The tallies
    count this process's writes: with several servers writing one key on
    etcd, it can hold more than ``keep`` records (each server deletes as
    many as it wrote).
    """

    name = "consul-config-history"

    def __init__(self, store: RevStore, changes: ChangeSink | None, *, keep: int = 100) -> None:
        self.store = store
        self.changes = changes
        self.keep = keep
        self.tasks = Supervisor(self.name)
        self._prune_lock = asyncio.Lock()  # count-then-delete must not interleave, or it over-deletes
        self._tally: OrderedDict[str, _Tally] = OrderedDict()  # least recently written first
        self._events: list[ChangeEvent] = []  # announced, not yet written
        self._events_due = False  # a write of them is scheduled
        self._dropped = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        """Stop, writing the change events still waiting first."""
        await self.tasks.stop()
        await self._write_events()

    def ops(self, records: Sequence[HistoryRecord]) -> list[Op]:
        """The puts that record ``records`` (to add to the change's own transaction)."""
        out = []
        for r in records:
            body = orjson.dumps({"who": r.who, "ts": r.ts_ns,
                                 "old": None if r.old is None else base64.b64encode(r.old).decode(),
                                 "new": None if r.new is None else base64.b64encode(r.new).decode()})
            out.append(Op.put(f"{HISTORY_PREFIX}{r.key}{_SEP}{r.ts_ns:020d}", body))
        return out

    def plan(self, records: Sequence[HistoryRecord]) -> HistoryPlan:
        """``ops(records)`` with, per key, a get of its records when this process has no tally for it, or
        the deletion of its oldest record when it is at ``keep``. Call ``committed`` or ``abandoned`` after."""
        plan = HistoryPlan([], {}, {}, [])
        for r, put in zip(records, self.ops(records), strict=True):
            t = self._tally.get(r.key)
            if t is None:
                plan.counted[r.key] = len(plan.ops)
                plan.ops.append(Op.get(_records_of(r.key), prefix=True))
            else:
                self._tally.move_to_end(r.key)
                # Deletions already in flight (other writes', a pruning read's) count as done.
                for _ in range(min(t.count + 1 - self.keep - len(t.claimed), len(t.oldest))):
                    victim = t.oldest.popleft()  # claimed: no concurrent write deletes it too
                    t.claimed.add(victim)
                    plan.claimed.setdefault(r.key, []).append((victim, len(plan.ops)))
                    plan.ops.append(Op.delete(victim))
            plan.ops.append(put)
            plan.keys.append(r.key)
        return plan

    def committed(self, plan: HistoryPlan, results: Sequence[Sequence[KeyValue]]) -> list[str]:
        """Update the tallies after ``plan``'s transaction committed (``results``: its ops' results, in
        order); returns the keys that still hold more than ``keep`` records, for a pruning read."""
        over = []
        for key in plan.keys:
            t = self._tally.get(key)
            if key in plan.counted:
                found = results[plan.counted[key]]
                t = self._tally[key] = _Tally(len(found), deque(kv.key for kv in found[:_PRUNE_AHEAD]))
                self._bound()
            elif t is None:  # evicted meanwhile: the key's next write counts its records again
                continue
            else:
                for victim, i in plan.claimed.get(key, ()):
                    t.claimed.discard(victim)
                    t.count -= len(results[i])  # 0 if another server or a pruning read deleted it first
            t.count += 1
            if t.count > self.keep:  # too few oldest known (or a lower keep than the stored records)
                over.append(key)
        return over

    def abandoned(self, plan: HistoryPlan) -> None:
        """``plan``'s transaction did not commit: its claimed records are the oldest again."""
        for key, claims in plan.claimed.items():
            t = self._tally.get(key)
            if t is not None:
                t.claimed.difference_update(v for v, _ in claims)
                t.oldest.extendleft(v for v, _ in reversed(claims))

    def _bound(self) -> None:
        while len(self._tally) > _TALLY_KEYS:
            self._tally.popitem(last=False)  # the least recently written; counted again when next written

    async def announce(self, changes: Sequence[tuple[str, str, bool, bool]], revision: int,
                       over: Sequence[str] = (), *, ts_ns: int = 0) -> None:
        """After a commit: queue the change events of (key, who, created, deleted) made at ``ts_ns``, then
        prune the keys ``over`` their limit (``committed``'s answer)."""
        if self.changes is not None and changes:
            if len(self._events) + len(changes) > _EVENTS_MAX:
                self._dropped += len(changes)
                log.warning("config change events dropped: too many waiting", extra={"dropped": self._dropped})
            else:
                self._events.extend(_event(*c, ts_ns=ts_ns) for c in changes)
                if not self._events_due:
                    self._events_due = True
                    self.tasks.spawn(self._write_events_soon(), name="config-change-events", loop=False)
        if over:
            self.tasks.spawn(self._prune_all(list(over)), name=f"config-history {revision}", loop=False)

    async def _write_events_soon(self) -> None:
        await asyncio.sleep(EVENT_LINGER_S)
        self._events_due = False
        await self._write_events()

    async def _write_events(self) -> None:
        """Write the waiting events: ``_EVENT_BATCH`` per commit into a ``ChangeLog``, one by one into
        another sink. A failed write loses its events (logged), never the changes they describe."""
        sink = self.changes
        while self._events and sink is not None:
            batch, self._events = self._events[:_EVENT_BATCH], self._events[_EVENT_BATCH:]
            try:
                if isinstance(sink, ChangeLog):
                    await sink.store.txn([], [sink.stage_op(e) for e in batch])
                else:
                    for e in batch:
                        await sink.record(e)
            except Exception:  # the changes are committed; a lost event must not fail anything else
                log.exception("config change events not recorded", extra={"events": len(batch)})

    async def _prune_all(self, over: list[str]) -> None:
        for key in over:
            await self._prune(key)

    async def _prune(self, key: str) -> None:
        """Delete the records of ``key`` past the newest ``keep`` and note the next oldest.

        The tally moves by exact deltas only (+1 per record committed, -1 per record a delete removed),
        never by a count read beside writes in flight; records claimed by a write in flight are left to it,
        and the ones this deletes are claimed until they are gone."""
        async with self._prune_lock:
            t = self._tally.get(key)
            if t is None:  # evicted since its write (writes to more keys than tallies): count it again here,
                found = (await self.store.range(_records_of(key))).kvs  # else it keeps one record too many
                t = self._tally.get(key)
                if t is None:
                    t = self._tally[key] = _Tally(len(found), deque(kv.key for kv in found[:_PRUNE_AHEAD]))
                    self._bound()
            ahead = await self.store.range(_records_of(key), limit=max(t.count - self.keep, 0) + _PRUNE_AHEAD)
            # From here to the first delete nothing else runs: what is claimed and counted now is exact.
            extra = max(t.count - self.keep - len(t.claimed), 0)
            free = [kv.key for kv in ahead.kvs if kv.key not in t.claimed]
            victims, t.oldest = free[:extra], deque(free[extra:])
            t.claimed.update(victims)
            for victim in victims:
                removed = len(await self.store.delete(victim))
                t.claimed.discard(victim)
                t.count -= removed  # after the await: writes committed meanwhile counted themselves

    async def of(self, key: str, *, limit: int = 100) -> list[HistoryRecord]:
        """The recorded changes of ``key``, oldest first (at most the newest ``limit``)."""
        res = await self.store.range(_records_of(key))
        out = []
        for kv in res.kvs[-limit:]:
            d = orjson.loads(kv.value)
            out.append(HistoryRecord(key, d["who"], int(d["ts"]),
                                     None if d["old"] is None else base64.b64decode(d["old"]),
                                     None if d["new"] is None else base64.b64decode(d["new"]), kv.mod_revision))
        return out
