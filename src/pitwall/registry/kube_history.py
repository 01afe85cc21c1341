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

Diff and rollback. ``data_at`` answers an object's data at a revision from
these records (a Secret's as digests). ``rollback`` restores the real old
data: it reads the object as the revisioned store kept it at that revision
(its MVCC history, the way etcd serves an old revision), never a copy of a
Secret's values kept elsewhere, so the history itself never holds a secret.
Once the store compacted that revision away a ConfigMap is restored from its
record (which has its values) and a Secret cannot be: that is an error
(``Compacted``), never a guess.
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
from pitwall.kube import KubeClient, NotFoundError
from pitwall.registry.history import HistoryRecord
from pitwall.registry.model import ROOT
from pitwall.storage.revstore import Compacted, Event, KeyValue, RevStore

__all__ = ["KUBE_HISTORY_PREFIX", "KubeConfigHistory", "Restored"]

KUBE_HISTORY_PREFIX = ROOT + "kube-history/"
_SEP = "\x01"
log = logging.getLogger(__name__)


class KubeConfigHistory:
    """Follows ConfigMaps and Secrets (by store prefix) and records each data change."""

    name = "kube-config-history"

    def __init__(self, store: RevStore, prefixes: dict[str, str], changes: ChangeSink | None, *,
                 keep: int = 100, kube: KubeClient | None = None,
                 plain: Callable[[KeyValue], bytes] | None = None) -> None:
        self.store = store
        self.kube = kube  # writes rollbacks through the API (validation, managedFields, watches)
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
        rec = HistoryRecord(name, _who(new_obj, old_obj), time.time_ns(), old, new, ev.kv.mod_revision)
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


    async def data_at(self, name: str, revision: int) -> dict[str, str] | None:
        """What the history shows of ``name``'s data at store ``revision`` (key -> value, a Secret's and
        binary values as digests); None if it did not exist then (or before its first record)."""
        shown = await self._shown_at(name, revision)
        if shown is None:
            return None
        d = orjson.loads(shown)
        return {**d.get("data", {}), **d.get("binaryData", {})}

    async def _shown_at(self, name: str, revision: int) -> bytes | None:
        shown: bytes | None = None
        for rec in await self.of(name, limit=self.keep):
            if rec.revision > revision:
                break
            shown = rec.new
        return shown

    async def rollback(self, name: str, to: int, *, who: str) -> Restored:
        """Put ``name``'s data back as it was at store revision ``to`` (deleting the object if it did not
        exist then), through the Kubernetes API as ``who``. Raises ``Compacted`` when the old data is gone
        (a Secret's revision compacted away), ``LookupError`` when nothing is recorded at or before ``to``."""
        if self.kube is None:
            raise LookupError("the Kubernetes API is off: no ConfigMap or Secret to roll back")
        kind, _, ref = name.partition("/")
        ns, _, obj_name = ref.partition("/")
        if not any(r.revision <= to for r in await self.of(name, limit=self.keep)):
            raise LookupError(f"no recorded change of {name} at or before revision {to}")
        old = await self._object_at(kind, ns, obj_name, to)
        api_kind = "ConfigMap" if kind == "configmap" else "Secret"
        manager = f"pitwall-config-rollback ({who})"[:128]
        try:
            cur: dict[str, Any] | None = await self.kube.get("v1", api_kind, obj_name, ns)
        except NotFoundError:
            cur = None
        if old is None:
            if cur is not None:
                await self.kube.delete("v1", api_kind, obj_name, namespace=ns)
            return Restored(name, to, None, deleted=True)
        if cur is None:
            meta = old.get("metadata") or {}
            cur = {"apiVersion": "v1", "kind": api_kind, "type": old.get("type"),
                   "metadata": {"name": obj_name, "namespace": ns,
                                **{k: meta[k] for k in ("labels", "annotations") if k in meta}}}
            if cur["type"] is None:
                del cur["type"]
            _set_data(cur, old)
            out = await self.kube.create(cur, field_manager=manager)
        else:
            _set_data(cur, old)
            cur["metadata"].pop("managedFields", None)  # sent back, they would replace the server's tracking
            out = await self.kube.update(cur, field_manager=manager)
        return Restored(name, to, str(out["metadata"].get("resourceVersion")), deleted=False)

    async def _object_at(self, kind: str, ns: str, obj_name: str, revision: int) -> dict[str, Any] | None:
        """The object as stored at ``revision`` (None: absent then); a compacted revision falls back to
        a ConfigMap's record (its values), and raises ``Compacted`` for a Secret."""
        key = f"{self.prefixes[kind]}{ns}/{obj_name}"
        try:
            res = await self.store.range(key, revision=revision)
        except Compacted:
            shown = await self._shown_at(f"{kind}/{ns}/{obj_name}", revision)
            if kind == "secret" or (shown is not None and orjson.loads(shown).get("binaryData")):
                raise  # only digests of these values were recorded
            return None if shown is None else {"data": orjson.loads(shown)["data"]}
        for kv in res.kvs:
            if kv.key == key:
                obj: dict[str, Any] = orjson.loads(self.plain(kv))  # decrypted (a Secret is encrypted at rest)
                return obj
        return None


class Restored:
    """What a rollback did: the object's new resourceVersion, or that it was deleted."""

    def __init__(self, name: str, to: int, resource_version: str | None, *, deleted: bool) -> None:
        self.name = name
        self.to = to
        self.resource_version = resource_version
        self.deleted = deleted

    def to_api(self) -> dict[str, Any]:
        return {"key": self.name, "to": self.to, "resourceVersion": self.resource_version, "deleted": self.deleted}


def _set_data(obj: dict[str, Any], old: dict[str, Any]) -> None:
    """Give ``obj`` exactly ``old``'s data and binaryData."""
    obj.pop("stringData", None)
    for field in ("data", "binaryData"):
        if old.get(field):
            obj[field] = old[field]
        else:
            obj.pop(field, None)


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


def _who(obj: dict[str, Any] | None, old: dict[str, Any] | None = None) -> str:
    """The manager whose managedFields entry this write stamped (a new entry, or one whose time moved):
    times have one-second resolution, and a writer taking fields from another also edits that other's
    entry, so neither the newest time nor "any changed entry" alone names the writer."""
    fields = ((obj or {}).get("metadata") or {}).get("managedFields") or []
    before = {_entry_id(f): f.get("time") for f in ((old or {}).get("metadata") or {}).get("managedFields") or []}
    stamped = [f for f in fields if _entry_id(f) not in before or before[_entry_id(f)] != f.get("time")]
    newest = max(stamped or fields, key=lambda f: str(f.get("time") or ""), default=None)
    return str(newest.get("manager") or "unknown") if newest else "unknown"


def _entry_id(f: dict[str, Any]) -> tuple[str, str, str]:
    return str(f.get("manager") or ""), str(f.get("operation") or ""), str(f.get("subresource") or "")


def _b64(v: bytes | None) -> str | None:
    return None if v is None else base64.b64encode(v).decode()


def _unb64(v: str | None) -> bytes | None:
    return None if v is None else base64.b64decode(v)
