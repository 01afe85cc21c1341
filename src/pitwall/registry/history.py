"""Config history: every change to a Consul key, who made it, when, old -> new, at which revision.

Records are keys in the revisioned store (``HISTORY_PREFIX<key>\\x01<ts_ns>``;
``\\x01`` cannot occur in a Consul key, so one key's records never mix with
another's) written in the same transaction as the change itself, so the
record's mod revision is the change's revision. Each change is also a
``config`` event on the one change-event stream (``incidents.ChangeLog``),
in the same commit when the log is in the same store. At most ``keep``
records are kept per key.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pitwall.core.tasks import Supervisor
from pitwall.incidents import ChangeEvent, ChangeLog, ChangeSink
from pitwall.registry.model import ROOT
from pitwall.storage.revstore import Op, RevStore

__all__ = ["HISTORY_PREFIX", "ConfigHistory", "HistoryRecord"]

HISTORY_PREFIX = ROOT + "history/"
_SEP = "\x01"
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


def _event(key: str, who: str, created: bool, deleted: bool) -> ChangeEvent:
    verb = "created" if created else "deleted" if deleted else "changed"
    return ChangeEvent(kind="config", summary=f"Consul KV {key} {verb}", source="consul-kv", who=who,
                       details={"key": key, "change": verb})


class ConfigHistory:
    """Writes history records with each change and reads them back, newest last.

    The history record and the change event are in the change's own commit;
    pruning runs after the write has answered (a supervised task per commit),
    so a KV write costs one store commit.
    """

    name = "consul-config-history"

    def __init__(self, store: RevStore, changes: ChangeSink | None, *, keep: int = 100) -> None:
        self.store = store
        self.changes = changes
        self.keep = keep
        self.tasks = Supervisor(self.name)
        self._prune_lock = asyncio.Lock()  # count-then-delete must not interleave, or it over-deletes

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self.tasks.stop()

    def ops(self, records: Sequence[HistoryRecord]) -> list[Op]:
        """The puts that record ``records`` (to add to the change's own transaction)."""
        out = []
        for r in records:
            body = orjson.dumps({"who": r.who, "ts": r.ts_ns,
                                 "old": None if r.old is None else base64.b64encode(r.old).decode(),
                                 "new": None if r.new is None else base64.b64encode(r.new).decode()})
            out.append(Op.put(f"{HISTORY_PREFIX}{r.key}{_SEP}{r.ts_ns:020d}", body))
        return out

    def event_ops(self, changes: Sequence[tuple[str, str, bool, bool]]) -> list[Op]:
        """The puts of the ``config`` change events of (key, who, created, deleted), to add to the change's own
        transaction when the change log lives in the same store (one commit, one fsync, for both); else none,
        and ``announce`` records them after the commit."""
        if not isinstance(self.changes, ChangeLog) or self.changes.store is not self.store:
            return []
        return [self.changes.stage(_event(*c))[1] for c in changes]

    async def announce(self, changes: Sequence[tuple[str, str, bool, bool]], revision: int) -> None:
        """After a commit: the change events not in it (see ``event_ops``), then pruning."""
        if changes:
            self.tasks.spawn(self._after_commit(list(changes)), name=f"config-history {revision}", loop=False)

    async def _after_commit(self, changes: list[tuple[str, str, bool, bool]]) -> None:
        staged = isinstance(self.changes, ChangeLog) and self.changes.store is self.store
        for c in changes:
            if self.changes is not None and not staged:
                try:
                    await self.changes.record(_event(*c))
                except Exception:  # the change itself is committed; a lost event must not fail the write
                    log.exception("config change event not recorded", extra={"key": c[0]})
            await self._prune(c[0])

    async def _prune(self, key: str) -> None:
        prefix = f"{HISTORY_PREFIX}{key}{_SEP}"
        async with self._prune_lock:
            res = await self.store.range(prefix, limit=1)
            extra = res.count - self.keep
            if extra > 0:
                old = await self.store.range(prefix, limit=extra)
                for kv in old.kvs:
                    await self.store.delete(kv.key)

    async def of(self, key: str, *, limit: int = 100) -> list[HistoryRecord]:
        """The recorded changes of ``key``, oldest first (at most the newest ``limit``)."""
        res = await self.store.range(f"{HISTORY_PREFIX}{key}{_SEP}")
        out = []
        for kv in res.kvs[-limit:]:
            d = orjson.loads(kv.value)
            out.append(HistoryRecord(key, d["who"], int(d["ts"]),
                                     None if d["old"] is None else base64.b64decode(d["old"]),
                                     None if d["new"] is None else base64.b64decode(d["new"]), kv.mod_revision))
        return out
