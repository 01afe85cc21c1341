"""The verbs on objects, over the revisioned store: what every API path and client calls.

``Resources`` implements get, list, watch, create, update (main resource,
``status`` and ``scale``), patch and delete the way kube-apiserver's generic
registry does: objects are JSON under ``ResourceType.key``; an object's
``resourceVersion`` is its key's mod revision and a list's is the store
revision; writes are compare-and-swap transactions on the mod revision, so a
stale ``resourceVersion`` is a 409 Conflict; ``generation`` counts spec
changes; deletion honours finalizers and the propagation policy (the
garbage collector in ``gc.py`` finishes what is left); a write that changes
nothing is not written.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pitwall.kube import strategy
from pitwall.kube.convert import from_storage, to_storage
from pitwall.kube.encryption import DecryptError, Encryption
from pitwall.kube.errors import (
    AlreadyExists,
    BadRequest,
    Cause,
    Conflict,
    Forbidden,
    Gone,
    InternalError,
    Invalid,
    NotFoundError,
    qualified,
)
from pitwall.kube.managed import track_update
from pitwall.kube.meta import generated_name, meta, new_uid, now_rfc3339
from pitwall.kube.objcache import ObjectCache
from pitwall.kube.registry import Registry, ResourceType
from pitwall.kube.selectors import FieldSelector, LabelSelector
from pitwall.kube.watchcache import WatchCache
from pitwall.storage.revstore import Compacted, Compare, Event, KeyValue, Op, RevStore

__all__ = ["Defaulter", "ListResult", "Resources", "Validator", "WatchEvent"]

Obj = dict[str, Any]
Defaulter = Callable[[Obj, Obj | None], None]
Validator = Callable[[Obj, Obj | None], list[Cause]]
Encoded = list[tuple[Obj, bytes]]  # list items with their JSON
_Entries = list[Any]
_MAX_RETRIES = 16
_UNDELETABLE = ("default", "kube-system", "kube-public")  # as kube-apiserver's namespace lifecycle admission


@dataclass
class ListResult:
    items: list[Obj]
    resource_version: str
    continue_token: str = ""
    remaining: int | None = None


@dataclass
class WatchEvent:
    type: str  # ADDED MODIFIED DELETED BOOKMARK
    object: Obj
    raw: bytes | None = None  # the object's JSON, when the watch was opened with ``shared=True``


def _json(obj: Obj) -> bytes:
    body = copy.copy(obj)
    m = dict(body.get("metadata") or {})
    m.pop("resourceVersion", None)
    m.pop("selfLink", None)
    body["metadata"] = m
    return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)


def _encode_continue(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        d = json.loads(base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)))
        return int(d["rv"]), str(d["start"])
    except (ValueError, KeyError, TypeError):
        raise BadRequest("continue key is not valid: incorrect encoded start resourceVersion "
                         "(version meta.k8s.io/v1)") from None


def _parse_rv(rv: str | None, what: str = "resourceVersion") -> int:
    if rv is None or rv == "":
        return 0
    try:
        n = int(rv)
    except ValueError:
        raise BadRequest(f"invalid {what}: {rv!r}") from None
    if n < 0:
        raise BadRequest(f"invalid {what}: {rv!r}")
    return n


class Resources:
    """Verbs on every served resource type, over one ``RevStore``."""

    def __init__(self, store: RevStore, registry: Registry, *,
                 service_cidr: str = "", encryption: Encryption | None = None) -> None:
        self.store = store
        self.registry = registry
        self.service_cidr = service_cidr or strategy.DEFAULT_SERVICE_CIDR
        self.encryption = encryption  # None: objects are stored as plain JSON
        self._defaulters: dict[tuple[str, str], list[Defaulter]] = {}
        self._validators: dict[tuple[str, str], list[Validator]] = {}
        self.cache = ObjectCache()
        self.watch_cache: WatchCache | None = None  # set (and started) by KubeAPI when kube.watch_cache is on

    # ---- stored form -------------------------------------------------------------------------------------
    def _plain(self, rt: ResourceType, kv: KeyValue) -> tuple[bytes, bool]:
        """The stored JSON of ``kv`` decrypted, and whether it is stale (not sealed by the first provider)."""
        if self.encryption is None:
            return kv.value, False
        try:
            return self.encryption.unseal(rt.group, rt.plural, kv.key, kv.value)
        except DecryptError as e:  # kube-apiserver's words; never the undecrypted bytes
            raise InternalError(f"Internal error occurred: unable to transform key \"{kv.key}\": {e}",
                                details={"causes": [{"message": f"unable to transform key \"{kv.key}\": {e}"}]}) from None

    def plain_value(self, kv: KeyValue) -> bytes:
        """The decrypted value of any object key, for readers outside the verbs (gc, RBAC, CRDs)."""
        if self.encryption is None:
            return kv.value
        try:
            return self.encryption.unseal_any(kv.key, kv.value)
        except DecryptError as e:
            raise InternalError(f"Internal error occurred: unable to transform key \"{kv.key}\": {e}") from None

    def _stored(self, rt: ResourceType, kv: KeyValue) -> Obj:
        obj: Obj = orjson.loads(self._plain(rt, kv)[0])
        return obj

    def _decode(self, rt: ResourceType, kv: KeyValue, revision: int | None = None) -> Obj:
        obj = self._stored(rt, kv)
        meta(obj)["resourceVersion"] = str(revision if revision is not None else kv.mod_revision)
        return from_storage(rt, obj)

    def _encode(self, rt: ResourceType, key: str, obj: Obj) -> bytes:
        data = _json(obj)
        return data if self.encryption is None else self.encryption.seal(rt.group, rt.plural, key, data)

    # ---- reads -------------------------------------------------------------------------------------------
    async def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        kv = await self.store.get(rt.key(namespace, name))
        if kv is None:
            raise NotFoundError.of(rt.plural, rt.group, name)
        return self._decode(rt, kv)

    async def list(self, rt: ResourceType, namespace: str = "", *, label_selector: str | None = None,
                   field_selector: str | None = None, limit: int = 0, continue_token: str = "",
                   resource_version: str = "") -> ListResult:
        if self.watch_cache is not None:
            served = await self._list_cached(rt, namespace, self._loader(rt), label_selector=label_selector,
                                             field_selector=field_selector, limit=limit,
                                             continue_token=continue_token, resource_version=resource_version)
            if served is not None:  # fresh objects from the cached JSON: callers may change what they get
                found, rv, token = served
                return ListResult([orjson.loads(raw) for _, raw in found], rv, token)
        items, rv, token = await self._scan(rt, namespace, lambda kv: self._decode(rt, kv),
                                            label_selector=label_selector, field_selector=field_selector,
                                            limit=limit, continue_token=continue_token,
                                            resource_version=resource_version)
        return ListResult(items, rv, token)

    async def list_encoded(self, rt: ResourceType, namespace: str = "", *, label_selector: str | None = None,
                           field_selector: str | None = None, limit: int = 0, continue_token: str = "",
                           resource_version: str = "") -> tuple[Encoded, str, str]:
        """As ``list``, with each item's JSON, through the object cache: the items are shared, read-only.

        The API serves lists from this: an unchanged object is neither decoded
        nor encoded again, and with the watch cache on the store is not read
        either (see ``_list_cached`` for when it still is).
        """
        load = self._loader(rt)
        kw: dict[str, Any] = {"label_selector": label_selector, "field_selector": field_selector, "limit": limit,
                              "continue_token": continue_token, "resource_version": resource_version}
        if self.watch_cache is not None:
            served = await self._list_cached(rt, namespace, load, **kw)
            if served is not None:
                return served
        found, rv, token = await self._scan(rt, namespace, load, **kw)
        return found, rv, token

    def _loader(self, rt: ResourceType) -> Callable[[KeyValue], tuple[Obj, bytes]]:
        """``kv -> (object, JSON)`` through the object cache (shared, read-only results)."""
        cache = self.cache

        def decode(kv: KeyValue) -> Obj:
            return self._decode(rt, kv)

        return lambda kv: cache.get(rt.api_version, kv, decode)

    async def _list_cached(self, rt: ResourceType, namespace: str, load: Callable[[KeyValue], Any], *,
                           label_selector: str | None, field_selector: str | None, limit: int, continue_token: str,
                           resource_version: str) -> tuple[_Entries, str, str] | None:
        """A list served from the watch cache, or None where the store must answer it (upstream's
        ``shouldDelegateList``, less conservative where our cache can be exact).

        ``resourceVersion=""`` waits (bounded) for the cache to reach the store's current revision;
        ``"0"`` takes the cache as it is; an explicit revision keeps its exact read of the store. A page
        ends with a continue token at the cache's revision, which is a store revision: the next page is
        served from the cache while nothing changed since, else read from the store at that revision
        (the cache holds no older state), so it resumes exactly either way.
        """
        wc = self.watch_cache
        assert wc is not None
        labels = LabelSelector.parse(label_selector)
        fields = FieldSelector.parse(field_selector, rt.kind)
        start: str | None = None
        if continue_token:
            rev, start = _decode_continue(continue_token)
            ok = wc.ready and wc.revision == rev
        elif resource_version == "":
            ok = await wc.wait_fresh(await self.store.revision())
        else:
            ok = resource_version == "0" and wc.ready
        if not ok:
            wc.lists_delegated += 1
            return None
        wc.lists_served += 1
        rev = wc.revision  # no await from here on: the snapshot is exactly this revision
        items: _Entries = []
        more, _, last_obj = self._fill(wc.range(rt.list_prefix(namespace), start), load, labels, fields,
                                       max(limit, 0), items, None)
        return items, str(rev), self._token(rt, rev, more, last_obj)

    def _fill(self, kvs: Sequence[KeyValue], load: Callable[[KeyValue], Any], labels: LabelSelector,
              fields: FieldSelector, page: int, items: _Entries, last_obj: Obj | None) -> tuple[bool, str, Obj | None]:
        """Append ``load(kv)`` of each matching kv to ``items`` until ``page`` are there (0: no limit).

        Returns whether a kv was left over once the page was full, the last key looked at, and the last
        object appended (or ``last_obj``)."""
        select = not (labels.empty and fields.empty)
        if not (select or page) and kvs:  # the common whole list: no per-item checks
            items.extend(map(load, kvs))
            last = items[-1]
            return False, kvs[-1].key, last if isinstance(last, dict) else last[0]
        last_key = ""
        for kv in kvs:
            if page and len(items) >= page:
                return True, last_key, last_obj
            last_key = kv.key
            entry = load(kv)
            obj = entry if isinstance(entry, dict) else entry[0]
            if not select or self._matches(obj, labels, fields):
                items.append(entry)
                last_obj = obj
        return False, last_key, last_obj

    @staticmethod
    def _token(rt: ResourceType, rev: int, more: bool, last_obj: Obj | None) -> str:
        if not (more and last_obj is not None):
            return ""
        return _encode_continue(rev, rt.key(meta(last_obj).get("namespace", ""), meta(last_obj)["name"]) + "\0")

    async def _scan(self, rt: ResourceType, namespace: str, load: Callable[[KeyValue], Any], *,
                    label_selector: str | None, field_selector: str | None, limit: int, continue_token: str,
                    resource_version: str) -> tuple[_Entries, str, str]:
        """The matching entries (``load``'s results; an ``Obj`` or ``(Obj, ...)``), the list's revision, a token,
        read from the store."""
        labels = LabelSelector.parse(label_selector)
        fields = FieldSelector.parse(field_selector, rt.kind)
        prefix = rt.list_prefix(namespace)
        start: str | None = None
        rev = 0
        if continue_token:
            rev, start = _decode_continue(continue_token)
        elif resource_version not in ("", "0"):
            rev = _parse_rv(resource_version)
        items: _Entries = []
        last_obj: Obj | None = None
        page = max(limit, 0)
        try:
            while True:
                res = await self.store.range(prefix, start=start, limit=(page + 1) if page else 0, revision=rev)
                rev = res.revision if rev == 0 else rev
                more, last_key, last_obj = self._fill(res.kvs, load, labels, fields, page, items, last_obj)
                if more or not (page and res.more):
                    break
                start = last_key + "\0"
        except Compacted as e:
            raise Gone("The provided continue parameter is too old to display a consistent list result. "
                       "You can start a new list without the continue parameter, or use the continue "
                       f"token in this response to retrieve the remainder of the results (compacted {e})"
                       ) from None
        return items, str(rev), self._token(rt, rev, more, last_obj)

    @staticmethod
    def _matches(obj: Obj, labels: LabelSelector, fields: FieldSelector) -> bool:
        return labels.matches(meta(obj).get("labels")) and fields.matches(obj)

    async def watch(self, rt: ResourceType, namespace: str = "", *, resource_version: str = "",
                    label_selector: str | None = None, field_selector: str | None = None,
                    send_initial: bool | None = None, shared: bool = False) -> AsyncIterator[WatchEvent]:
        """Events after ``resource_version``; with none (or "0"), the current objects as ADDED first.

        Raises ``Gone`` when the version was compacted away. An object that stops
        matching the selectors is seen as DELETED, one that starts as ADDED.
        ``shared``: the caller only reads the objects (they come from the object
        cache, with their JSON in ``raw``); otherwise each event has its own copy.
        With the watch cache on, a watch from a revision its ring still holds (or
        from now) is fed by the cache's one store watch, not a store watch of its own.
        """
        labels = LabelSelector.parse(label_selector)
        fields = FieldSelector.parse(field_selector, rt.kind)
        prefix = rt.list_prefix(namespace)
        rv = _parse_rv(resource_version)
        load = self._loader(rt) if shared else (lambda kv: (self._decode(rt, kv), None))
        wc = self.watch_cache
        source: AsyncIterator[list[Event]] | None = None
        if rv == 0 or send_initial:
            kvs: Sequence[KeyValue] = []
            if wc is not None and (rv == 0 or rv == wc.revision) and await self._cache_fresh(resource_version):
                rv, kvs = wc.revision, wc.range(prefix)
                source = wc.events(prefix, rv)
            else:
                res = await self.store.range(prefix, revision=rv if send_initial and rv else 0)
                rv, kvs = res.revision, res.kvs
            for kv in kvs:
                obj, raw = load(kv)
                if self._matches(obj, labels, fields):
                    yield WatchEvent("ADDED", obj, raw)
            if send_initial:
                yield WatchEvent("BOOKMARK", self._bookmark(rt, rv, initial_done=True))
        if source is None and wc is not None and wc.covers(rv):
            if rv < wc.revision:
                await self._check_not_compacted(rv)  # the ring may reach further back than the store
            source = wc.events(prefix, rv)
        if wc is not None:
            if source is None:
                wc.watches_delegated += 1
            else:
                wc.watches_served += 1
        if source is None:  # a revision older than the ring (or no cache): the store's own watch, 410 if compacted
            source = self.store.watch(prefix, start_revision=rv + 1, prev_kv=True)
        try:
            async for batch in source:
                for ev in batch:
                    if rt.namespaced and not namespace and ev.kv.key.count("/") != rt.prefix.count("/") + 1:
                        continue
                    out = self._event(ev, load, labels, fields)
                    if out is not None:
                        yield out
        except Compacted as e:
            raise Gone.too_old(rv, e.compact_revision) from None

    async def _check_not_compacted(self, rv: int) -> None:
        """``Gone`` when the store compacted ``rv`` away, as a store watch from it would be told (one
        cheap read of a key at that revision)."""
        try:
            await self.store.get("\0", revision=rv)
        except Compacted as e:
            raise Gone.too_old(rv, e.compact_revision) from None

    async def _cache_fresh(self, resource_version: str) -> bool:
        """Whether the watch cache may answer now: for ``resource_version`` "" once it caught up with the
        store, otherwise (the caller checked the revision) once it is loaded."""
        wc = self.watch_cache
        if wc is None:
            return False
        if resource_version == "":
            return await wc.wait_fresh(await self.store.revision())
        return wc.ready

    def _event(self, ev: Event, load: Callable[[KeyValue], tuple[Obj, bytes | None]], labels: LabelSelector,
               fields: FieldSelector) -> WatchEvent | None:
        """The watch event a store event is for this watcher's selectors, if any."""
        new, raw = load(ev.kv) if ev.type == "PUT" else (None, None)
        old = load(ev.prev_kv)[0] if ev.prev_kv is not None else None
        new_ok = new is not None and self._matches(new, labels, fields)
        old_ok = old is not None and self._matches(old, labels, fields)
        if new is not None and new_ok:
            return WatchEvent("MODIFIED" if old_ok else "ADDED", new, raw)
        if old is not None and old_ok:
            if new is not None:  # it left the selection: its new state, already at this revision
                return WatchEvent("DELETED", new, raw)
            gone = {**old, "metadata": {**meta(old), "resourceVersion": str(ev.kv.mod_revision)}}
            return WatchEvent("DELETED", gone)
        return None

    def _bookmark(self, rt: ResourceType, rv: int, initial_done: bool = False) -> Obj:
        m: Obj = {"resourceVersion": str(rv)}
        if initial_done:
            m["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": m}

    # ---- writes ------------------------------------------------------------------------------------------
    async def _require_namespace(self, rt: ResourceType, namespace: str) -> None:
        if not rt.namespaced:
            return
        if not namespace:
            raise BadRequest("the server could not find the requested resource: namespace is required")
        ns_rt = self.registry.get("", "v1", "namespaces")
        assert ns_rt is not None
        kv = await self.store.get(ns_rt.key("", namespace))
        if kv is None:
            raise NotFoundError.of("namespaces", "", namespace)
        if (json.loads(self.plain_value(kv)).get("metadata") or {}).get("deletionTimestamp"):
            raise Forbidden(f'{qualified(rt.plural, rt.group)} is forbidden: unable to create new content in '
                            f'namespace {namespace} because it is being terminated',
                            details={"kind": rt.plural, **({"group": rt.group} if rt.group else {})})

    def _check_identity(self, rt: ResourceType, obj: Obj, namespace: str, name: str | None) -> None:
        av, kind = obj.get("apiVersion"), obj.get("kind")
        accepted = {rt.api_version}
        if av and av not in accepted:
            raise BadRequest(f"the API version in the data ({av}) does not match the expected API version "
                             f"({rt.api_version})")
        if kind and kind != rt.kind:
            raise BadRequest(f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
        m = meta(obj)
        if rt.namespaced:
            ns = m.get("namespace")
            if ns and namespace and ns != namespace:
                raise BadRequest("the namespace of the provided object does not match the namespace sent on "
                                 "the request")
            m["namespace"] = namespace or ns
        else:
            m.pop("namespace", None)
        if name is not None and m.get("name") and m["name"] != name:
            raise BadRequest(f"the name of the object ({m['name']}) does not match the name on the URL ({name})")
        if name is not None:
            m["name"] = name

    async def create(self, rt: ResourceType, namespace: str, obj: Obj, *, dry_run: bool = False,
                     field_manager: str = "", apply: bool = False) -> Obj:
        obj = copy.deepcopy(obj)
        if not isinstance(obj, dict):
            raise BadRequest("the body of the request was in an unknown format")
        self._check_identity(rt, obj, namespace, None)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        m = meta(obj)
        if not m.get("name"):
            if m.get("generateName"):
                m["name"] = generated_name(m["generateName"])
            else:
                raise Invalid(rt.kind, rt.group, "", [Cause("metadata.name", "FieldValueRequired",
                                                            "Required value: name or generateName is required")])
        namespace = m.get("namespace", "") if rt.namespaced else ""
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            m.pop(k, None)
        m["uid"] = new_uid()
        m["creationTimestamp"] = now_rfc3339()
        if rt.has_generation:
            m["generation"] = 1
        else:
            m.pop("generation", None)
        await self._require_namespace(rt, namespace)
        stored = to_storage(rt, obj)
        strategy.drop_nulls(rt, stored)
        strategy.prepare_create(rt, stored)
        self._validate(rt, stored, None)
        await strategy.admit_create(self, rt, stored, self.service_cidr)
        track_update(rt, stored, None, field_manager, apply=apply)
        if dry_run:
            if await self.store.get(rt.key(namespace, m["name"])) is not None:
                raise AlreadyExists.of(rt.plural, rt.group, m["name"])
            return from_storage(rt, stored)
        key = rt.key(namespace, m["name"])
        res = await self.store.txn([Compare(key, "create", "=", 0)], [Op.put(key, self._encode(rt, key, stored))])
        if not res.succeeded:
            raise AlreadyExists.of(rt.plural, rt.group, m["name"])
        meta(stored)["resourceVersion"] = str(res.revision)
        await strategy.after_write(self, rt, None, stored)
        return from_storage(rt, stored)

    def add_admission(self, group: str, kind: str, *, default: Defaulter | None = None,
                      validate: Validator | None = None) -> None:
        """Kind-specific admission from another pillar (as upstream webhooks): ``default(obj, old)``
        fills fields in place, ``validate(obj, old)`` returns field errors (422). Both see the stored
        shape, after built-in defaulting; ``old`` is None on create."""
        if default is not None:
            self._defaulters.setdefault((group, kind), []).append(default)
        if validate is not None:
            self._validators.setdefault((group, kind), []).append(validate)

    def _validate(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        for fn in self._defaulters.get((rt.group, rt.kind), []):
            fn(obj, old)
        causes = strategy.validate(self.registry, rt, obj, old)
        for check in self._validators.get((rt.group, rt.kind), []):
            causes += check(obj, old)
        if causes:
            raise Invalid(rt.kind, rt.group, str(meta(obj).get("name", "")), causes)

    async def update(self, rt: ResourceType, namespace: str, name: str, obj: Obj, *, subresource: str = "",
                     dry_run: bool = False, field_manager: str = "") -> Obj:
        """PUT: replace the object (or only its status); a stale resourceVersion is a Conflict."""
        if not isinstance(obj, dict):
            raise BadRequest("the body of the request was in an unknown format")
        obj = copy.deepcopy(obj)
        self._check_identity(rt, obj, namespace, name)
        want_rv = _parse_rv(meta(obj).get("resourceVersion"))

        def build(old: Obj) -> Obj:
            if want_rv and want_rv != int(meta(old)["resourceVersion"]):
                raise Conflict.modified(rt.plural, rt.group, name)
            return to_storage(rt, obj)

        return await self._modify(rt, namespace, name, build, subresource=subresource, dry_run=dry_run,
                                  field_manager=field_manager)

    async def modify(self, rt: ResourceType, namespace: str, name: str, fn: Any, *, subresource: str = "",
                     dry_run: bool = False, field_manager: str = "", apply: bool = False) -> Obj:
        """Read, let ``fn(old) -> new`` compute the object (both in the stored shape), write with CAS; retried
        when another writer got there first. ``fn`` raises to refuse."""
        return await self._modify(rt, namespace, name, fn, subresource=subresource, dry_run=dry_run,
                                  field_manager=field_manager, apply=apply)

    async def _modify(self, rt: ResourceType, namespace: str, name: str, fn: Any, *, subresource: str,
                      dry_run: bool, field_manager: str, apply: bool = False) -> Obj:
        key = rt.key(namespace, name)
        for _ in range(_MAX_RETRIES):
            kv = await self.store.get(key)
            if kv is None:
                raise NotFoundError.of(rt.plural, rt.group, name)
            plain, stale = self._plain(rt, kv)
            old: Obj = orjson.loads(plain)
            meta(old)["resourceVersion"] = str(kv.mod_revision)
            new = fn(copy.deepcopy(old))
            new["apiVersion"], new["kind"] = old.get("apiVersion"), old.get("kind")
            strategy.drop_nulls(rt, new)
            new = self._merge_preserved(rt, old, new, subresource)
            strategy.prepare_update(rt, new, old)
            self._validate(rt, new, old)
            if rt.has_generation and strategy.spec_changed(rt, old, new):
                meta(new)["generation"] = int(meta(old).get("generation") or 1) + 1
            track_update(rt, new, old, field_manager, apply=apply)
            if _same(old, new) and not stale:  # a stale one is rewritten: that is how keys rotate
                return from_storage(rt, old)
            m = meta(new)
            finalize = (bool(m.get("deletionTimestamp")) and not m.get("finalizers") and rt.kind != "Namespace"
                        and not m.get("deletionGracePeriodSeconds"))
            if dry_run:
                return from_storage(rt, new)
            if finalize:
                res = await self.store.txn([Compare(key, "mod", "=", kv.mod_revision)], [Op.delete(key)])
            else:
                res = await self.store.txn([Compare(key, "mod", "=", kv.mod_revision)],
                                           [Op.put(key, self._encode(rt, key, new))])
            if res.succeeded:
                meta(new)["resourceVersion"] = str(res.revision)
                await strategy.after_write(self, rt, old, None if finalize else new)
                return from_storage(rt, new)
        raise Conflict.modified(rt.plural, rt.group, name)

    @staticmethod
    def _merge_preserved(rt: ResourceType, old: Obj, new: Obj, subresource: str) -> Obj:
        om, nm = meta(old), meta(new)
        if subresource == "status":
            out = copy.deepcopy(old)
            if "status" in new:
                out["status"] = new["status"]
            else:
                out.pop("status", None)
            return out
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
            if k in om:
                nm[k] = om[k]
            else:
                nm.pop(k, None)
        nm["name"], nm["resourceVersion"] = om["name"], om["resourceVersion"]
        if "namespace" in om:
            nm["namespace"] = om["namespace"]
        if "managedFields" not in nm and "managedFields" in om:
            nm["managedFields"] = om["managedFields"]
        if "status" in rt.subresources and subresource not in ("status", "binding") and rt.kind != "Namespace":
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        return new

    async def bind(self, namespace: str, name: str, binding: Obj, *, dry_run: bool = False,
                   field_manager: str = "") -> Obj:
        """``pods/binding``: assign a pod to the node a ``Binding`` names, as kube-scheduler does.

        Sets ``spec.nodeName``, copies the Binding's annotations to the pod and marks it PodScheduled;
        a pod already assigned, being deleted or still gated is a 409 Conflict, as upstream's BindingREST.
        """
        rt = self.registry.get("", "v1", "pods")
        assert rt is not None
        if not isinstance(binding, dict):
            raise BadRequest("the body of the request was in an unknown format")
        av, kind = binding.get("apiVersion"), binding.get("kind")
        if (av and av != "v1") or (kind and kind != "Binding"):
            raise BadRequest(f"the kind in the data ({av}, Kind={kind}) does not match the expected kind "
                             "(v1, Kind=Binding)")
        bm = meta(binding)
        if bm.get("name") and bm["name"] != name:
            raise BadRequest("name in URL does not match name in Binding object")
        if bm.get("namespace") and bm["namespace"] != namespace:
            raise BadRequest("namespace in URL does not match namespace in Binding object")
        raw_target = binding.get("target")
        target: Obj = raw_target if isinstance(raw_target, dict) else {}
        causes: list[Cause] = []
        if not target.get("name"):
            causes.append(Cause("target.name", "FieldValueRequired", "Required value"))
        if target.get("kind") not in (None, "", "Node"):
            causes.append(Cause("target.kind", "FieldValueNotSupported",
                                f'Unsupported value: "{target["kind"]}": supported values: "Node", "<empty>"'))
        if causes:
            raise Invalid("Binding", "", name, causes)
        node = str(target["name"])

        def fn(pod: Obj) -> Obj:
            pm = meta(pod)
            spec = pod.setdefault("spec", {})

            def refuse(why: str) -> Conflict:
                return Conflict(f'Operation cannot be fulfilled on pods/binding "{name}": {why}',
                                details={"name": name, "kind": "pods/binding"})

            if pm.get("deletionTimestamp"):
                raise refuse(f"pod {name} is being deleted, cannot be assigned to a host")
            if spec.get("nodeName"):
                raise refuse(f'pod {name} is already assigned to node "{spec["nodeName"]}"')
            if spec.get("schedulingGates"):
                raise refuse(f"pod {name} has non-empty .spec.schedulingGates")
            spec["nodeName"] = node
            if bm.get("annotations"):
                pm["annotations"] = {**(pm.get("annotations") or {}), **bm["annotations"]}
            status = pod.setdefault("status", {})
            conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            status["conditions"] = [*conds, {"type": "PodScheduled", "status": "True",
                                             "lastTransitionTime": now_rfc3339()}]
            return pod

        return await self._modify(rt, namespace, name, fn, subresource="binding", dry_run=dry_run,
                                  field_manager=field_manager)

    async def delete(self, rt: ResourceType, namespace: str, name: str, *, propagation: str = "",
                     preconditions: dict[str, Any] | None = None, dry_run: bool = False,
                     grace_period: int | None = None) -> tuple[Obj, bool]:
        """Delete (or start deleting) an object; returns (object, whether it is gone now).

        A pod bound to a node is deleted gracefully, as upstream: it keeps a
        ``deletionTimestamp`` in the future and ``deletionGracePeriodSeconds``
        until its node deletes it with a grace period of 0; an unbound or
        finished pod goes at once.
        """
        key = rt.key(namespace, name)
        if rt.kind == "Namespace" and rt.group == "" and name in _UNDELETABLE:
            raise Forbidden(f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                            details={"name": name, "kind": "namespaces"})
        if propagation and propagation not in ("Orphan", "Background", "Foreground"):
            raise BadRequest(f"propagationPolicy: Unsupported value: {propagation!r}: supported values: "
                             '"Foreground", "Background", "Orphan"')
        for _ in range(_MAX_RETRIES):
            kv = await self.store.get(key)
            if kv is None:
                raise NotFoundError.of(rt.plural, rt.group, name)
            cur = self._decode(rt, kv)
            stored = self._stored(rt, kv)
            m = meta(stored)
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != m.get("uid"):
                raise Conflict(f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                               f"{m.get('uid')}", details={"name": name, "kind": rt.plural})
            if pre.get("resourceVersion") and pre["resourceVersion"] != str(kv.mod_revision):
                raise Conflict(f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                               f"ResourceVersion in object meta: {kv.mod_revision}",
                               details={"name": name, "kind": rt.plural})
            finalizers = list(m.get("finalizers") or [])
            if propagation == "Orphan" and "orphan" not in finalizers:
                finalizers.append("orphan")
            if propagation == "Foreground" and "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
            grace = _pod_grace(rt, stored, grace_period)
            if rt.kind == "Namespace":
                spec_fin = (stored.get("spec") or {}).get("finalizers")
                if spec_fin is None:
                    stored.setdefault("spec", {})["finalizers"] = ["kubernetes"]
                stored.setdefault("status", {})["phase"] = "Terminating"
                finalizers = finalizers or []
                graceful = True
            else:
                graceful = bool(finalizers) or grace > 0
                if not finalizers and grace == 0 and m.get("deletionTimestamp"):
                    graceful = False  # the node's final delete (grace 0) of a terminating pod
            if graceful:
                unchanged = bool(m.get("deletionTimestamp")) and finalizers == list(m.get("finalizers") or [])
                old_grace = m.get("deletionGracePeriodSeconds")
                if grace > 0 and m.get("deletionTimestamp") and (old_grace is None or grace < int(old_grace)):
                    unchanged = False  # a shorter grace period replaces a longer one
                if unchanged and (rt.kind != "Namespace" or (stored.get("status") or {}).get("phase") == "Terminating"):
                    return cur, False
                if grace > 0:
                    m["deletionTimestamp"] = now_rfc3339(grace)
                    m["deletionGracePeriodSeconds"] = grace
                m.setdefault("deletionTimestamp", now_rfc3339())
                m.setdefault("deletionGracePeriodSeconds", 0)
                if finalizers:
                    m["finalizers"] = finalizers
                if rt.has_generation:
                    m["generation"] = int(m.get("generation") or 1) + 1
                if dry_run:
                    return from_storage(rt, stored), False
                res = await self.store.txn([Compare(key, "mod", "=", kv.mod_revision)],
                                           [Op.put(key, self._encode(rt, key, stored))])
                if res.succeeded:
                    m["resourceVersion"] = str(res.revision)
                    return from_storage(rt, stored), False
                continue
            if dry_run:
                return cur, True
            res = await self.store.txn([Compare(key, "mod", "=", kv.mod_revision)], [Op.delete(key)])
            if res.succeeded:
                await strategy.after_write(self, rt, stored, None)
                return cur, True
        raise Conflict.modified(rt.plural, rt.group, name)


def _pod_grace(rt: ResourceType, pod: Obj, requested: int | None) -> int:
    """Seconds a pod's deletion waits for its node (0: delete now)."""
    if rt.kind != "Pod" or rt.group != "":
        return 0
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
        return 0
    if requested is not None:
        return max(0, int(requested))
    tg = spec.get("terminationGracePeriodSeconds")
    return int(tg) if isinstance(tg, int) and tg >= 0 else 30


def _same(old: Obj, new: Obj) -> bool:
    def strip(o: Obj) -> Obj:
        c = dict(o)
        m = dict(c.get("metadata") or {})
        for k in ("resourceVersion", "managedFields"):
            m.pop(k, None)
        c["metadata"] = m
        return c

    if strip(old) != strip(new):
        return False
    # Only managedFields differ: a no-op unless the set of managers changed.
    oms = [(e.get("manager"), e.get("operation"), e.get("fieldsV1"))
           for e in meta(old).get("managedFields") or []]
    nms = [(e.get("manager"), e.get("operation"), e.get("fieldsV1"))
           for e in meta(new).get("managedFields") or []]
    return oms == nms
