"""Config history of Kubernetes ConfigMaps and Secrets: the same records and API as Consul keys' history.

A watch on the objects' store prefixes (with the previous value) records
each change of ``data``/``binaryData`` under the name ``configmap/NS/NAME``
or ``secret/NS/NAME``: who (the manager of the object's newest managed
field, as kubectl and controllers name themselves), when, old -> new, the
revision. A Secret's values are never written to the history: each is
replaced by ``sha256:<first 16 hex digits>`` of its decoded bytes, so a
change shows without showing the secret. Metadata- or status-only writes
record nothing. Records are keyed by the change's revision, so servers
sharing one store (etcd) that all watch write the same keys, not duplicates.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from pitwall.core.errors import PitwallError
from pitwall.core.tasks import Supervisor
from pitwall.incidents import ChangeEvent, ChangeSink
from pitwall.registry.history import HistoryRecord
from pitwall.registry.model import ROOT
from pitwall.storage.revstore import Compacted, Event, KeyValue, RevStore

__all__ = ["KUBE_HISTORY_PREFIX", "KubeConfigHistory"]

KUBE_HISTORY_PREFIX = ROOT + "kube-history/"
_SEP = "\x01"
log = logging.getLogger(__name__)


class KubeConfigHistory:
    """Follows ConfigMaps and Secrets (by store prefix) and records each data change."""

    name = "kube-config-history"

    def __init__(self, store: RevStore, prefixes: dict[str, str], changes: ChangeSink | None, *,
                 keep: int = 100, plain: Callable[[KeyValue], bytes] | None = None) -> None:
        self.store = store
        self.plain = plain or (lambda kv: kv.value)  # the object's JSON (Secrets are encrypted in the store)
        self.prefixes = prefixes  # kind ("configmap", "secret") -> store prefix of its objects
        self.changes = changes
        self.keep = keep
        self.tasks = Supervisor(self.name)

    async def start(self) -> None:
        rev = (await self.store.range(KUBE_HISTORY_PREFIX, limit=1)).revision
        for kind, prefix in self.prefixes.items():
            self.tasks.spawn(self._follow(kind, prefix, rev + 1), name=f"{self.name} {kind}")

    async def stop(self) -> None:
        await self.tasks.stop()

    async def _follow(self, kind: str, prefix: str, start: int) -> None:
        while True:
            try:
                async for batch in self.store.watch(prefix, start_revision=start, prev_kv=True):
                    for ev in batch:
                        await self._record(kind, prefix, ev)
                        start = ev.kv.mod_revision + 1
                return
            except Compacted:  # fell behind the compaction point: go on from now, saying what was missed
                now = (await self.store.range(prefix, limit=1)).revision
                log.warning("%s history: changes between revisions %d and %d were compacted away",
                            kind, start, now)
                start = now + 1

    async def _record(self, kind: str, prefix: str, ev: Event) -> None:
        try:
            new_obj = None if ev.type == "DELETE" else orjson.loads(self.plain(ev.kv))
            old_obj = orjson.loads(self.plain(ev.prev_kv)) if ev.prev_kv is not None else None
        except PitwallError as e:  # a value no configured key opens: skip it, keep following the others
            log.warning("%s history: %s", kind, e)
            return
        old, new = _data(kind, old_obj), _data(kind, new_obj)
        if old == new:
            return
        name = f"{kind}/{ev.kv.key.removeprefix(prefix)}"
        rec = HistoryRecord(name, _who(new_obj), time.time_ns(), old, new, ev.kv.mod_revision)
        body = orjson.dumps({"who": rec.who, "ts": rec.ts_ns, "old": _b64(old), "new": _b64(new)})
        key = f"{KUBE_HISTORY_PREFIX}{name}{_SEP}{rec.revision:020d}"
        await self.store.put(key, body)
        verb = "created" if old is None else "deleted" if new is None else "changed"
        if self.changes is not None:
            try:
                await self.changes.record(ChangeEvent(
                    kind="config", summary=f"{name} {verb} (revision {rec.revision})", source="kubernetes",
                    who=rec.who, details={"key": name, "revision": rec.revision, "change": verb}))
            except Exception:  # the history record is written; a lost event must not stop the watch
                log.exception("config change event not recorded", extra={"key": name})
        await self._prune(name)

    async def _prune(self, name: str) -> None:
        prefix = f"{KUBE_HISTORY_PREFIX}{name}{_SEP}"
        extra = (await self.store.range(prefix, limit=1)).count - self.keep
        if extra > 0:
            for kv in (await self.store.range(prefix, limit=extra)).kvs:
                await self.store.delete(kv.key)

    async def of(self, name: str, *, limit: int = 100) -> list[HistoryRecord]:
        """The recorded changes of ``configmap/NS/NAME`` or ``secret/NS/NAME``, oldest first."""
        res = await self.store.range(f"{KUBE_HISTORY_PREFIX}{name}{_SEP}")
        out = []
        for kv in res.kvs[-limit:]:
            d = orjson.loads(kv.value)
            out.append(HistoryRecord(name, d["who"], int(d["ts"]), _unb64(d["old"]), _unb64(d["new"]),
                                     int(kv.key.rsplit(_SEP, 1)[1])))
        return out


def _data(kind: str, obj: dict[str, Any] | None) -> bytes | None:
    """What the history shows of an object: its data as sorted JSON (a Secret's values as digests)."""
    if obj is None:
        return None
    data = dict(obj.get("data") or {})
    binary = obj.get("binaryData") or {}
    if kind == "secret":
        data = {k: _digest(v) for k, v in data.items()}
    shown: dict[str, Any] = {"data": data}
    if binary:
        shown["binaryData"] = {k: _digest(v) for k, v in binary.items()}
    return orjson.dumps(shown, option=orjson.OPT_SORT_KEYS)


def _digest(b64: Any) -> str:
    try:
        raw = base64.b64decode(str(b64), validate=True)
    except ValueError:
        raw = str(b64).encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]


def _who(obj: dict[str, Any] | None) -> str:
    fields = ((obj or {}).get("metadata") or {}).get("managedFields") or []
    newest = max(fields, key=lambda f: str(f.get("time") or ""), default=None)
    return str(newest.get("manager") or "unknown") if newest else "unknown"


def _b64(v: bytes | None) -> str | None:
    return None if v is None else base64.b64encode(v).decode()


def _unb64(v: str | None) -> bytes | None:
    return None if v is None else base64.b64decode(v)
