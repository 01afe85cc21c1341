"""Consul's config entries (``/v1/config``) for the kinds that shape the mesh, stored in the revisioned store.

An entry of kind ``K`` named ``N`` is the store key ``<CONFIG_PREFIX>K/N``
holding the entry's JSON as the client sent it (after Consul's
normalisation); ``CreateIndex``/``ModifyIndex`` are the key's create and mod
revisions, so a blocking read of a kind or an entry is a watch from an index
as for KV. Validation follows ``agent/structs/config_entry*.go``: an entry
Consul would refuse is refused with Consul's text and status (decoding
errors 400, validation errors 500 as Consul's RPC layer answers them) and
nothing is stored.

``ConfigEntries`` also keeps every entry in memory (loaded at start, then
kept current from the store watch the blocking queries use), so the mesh can
recompile from them on every change without a store read; ``listeners`` are
called after each change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, unquote

import orjson

from pitwall.core import regex as re2
from pitwall.incidents import ChangeEvent, ChangeSink
from pitwall.registry.blocking import parse_go_duration
from pitwall.registry.mesh_entries import MeshObjects, mesh_objects
from pitwall.registry.model import ROOT, ConsulError
from pitwall.storage.revstore import Compare, Event, KeyValue, Op, RevStore

__all__ = ["CONFIG_PREFIX", "KINDS", "MAX_ENTRIES_PER_KIND", "ConfigEntries", "entry_key", "validate_entry"]

log = logging.getLogger(__name__)
CONFIG_PREFIX = ROOT + "config/"
KINDS = ("service-intentions", "service-splitter", "service-router", "service-resolver", "service-defaults",
         "proxy-defaults")
MAX_ENTRIES_PER_KIND = 10_000
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"})
_RETRY_ON = frozenset({"5xx", "gateway-error", "reset", "connect-failure", "envoy-ratelimited", "retriable-4xx",
                       "refused-stream", "cancelled", "deadline-exceeded", "internal", "resource-exhausted",
                       "unavailable"})
_PROTOCOLS = frozenset({"tcp", "http", "http2", "grpc"})
_LB_POLICIES = frozenset({"", "random", "round_robin", "least_request", "ring_hash", "maglev"})
Entry = dict[str, Any]


def _invalid(msg: str) -> ConsulError:
    """A validation error: Consul's RPC layer answers these with 500 and the bare message."""
    return ConsulError(500, msg)


def _list(e: Entry, field: str) -> list[Any]:
    v = e.get(field)
    if v is None:
        return []
    if not isinstance(v, list):
        raise ConsulError(400, f"Request decoding failed: 1 error(s) decoding:\n\n* '{field}': source data must "
                               "be an array or slice, got " + type(v).__name__)
    return v


def _dict(v: Any, field: str) -> Entry:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ConsulError(400, f"Request decoding failed: 1 error(s) decoding:\n\n* '{field}' expected a map, got "
                               f"'{type(v).__name__}'")
    return v


def _validate_meta(e: Entry) -> None:
    meta = _dict(e.get("Meta"), "Meta")
    if len(meta) > 64:
        raise _invalid(f"Meta exceeds maximum element count {64}")
    for k, v in meta.items():
        if len(k) > 128:
            raise _invalid(f"Key is too long (limit: 128 characters): {k!r}")
        if len(str(v)) > 512:
            raise _invalid(f"Value is too long (limit: 512 characters): {k!r}")


def _validate_splitter(e: Entry) -> None:
    splits = _list(e, "Splits")
    if not splits:
        raise _invalid("no splits configured")
    seen: set[tuple[str, str]] = set()
    total = 0
    for i, s in enumerate(splits):
        s = _dict(s, f"Splits[{i}]")
        key = (str(s.get("Service") or e["Name"]), str(s.get("ServiceSubset") or ""))
        if key in seen:
            raise _invalid(f'split destination occurs more than once: service="{key[0]}", subset="{key[1]}", '
                           'namespace="default", partition="default"')
        seen.add(key)
        w = s.get("Weight", 0)
        if not isinstance(w, int | float) or isinstance(w, bool):
            raise ConsulError(400, f"Request decoding failed: Splits[{i}].Weight must be a number")
        scaled = round(w * 100)  # Consul keeps weights to 0.01 %
        s["Weight"] = scaled // 100 if scaled % 100 == 0 else scaled / 100
        total += round(w * 100)
    if total != 10000:
        raise _invalid(f"the sum of all split weights must be 100, not {total / 100:f}")


def _check_regexes(where: str, m: Entry) -> None:
    """pitwall checks regexes when an entry is written (Consul leaves them to Envoy, which then rejects the
    whole listener update): RE2 syntax, as Envoy's safe_regex."""
    found = [("PathRegex", m.get("PathRegex"))] + [(f"Header[{h.get('Name')}].Regex", h.get("Regex"))
                                                   for h in m.get("Header") or [] if isinstance(h, dict)]
    found += [(f"QueryParam[{q.get('Name')}].Regex", q.get("Regex")) for q in m.get("QueryParam") or []
              if isinstance(q, dict)]
    for name, rx in found:
        if rx:
            try:
                re2.compile(str(rx))
            except re2.RegexError as e:
                raise _invalid(f"{where} {name} is not a valid RE2 regular expression: {e}") from None


def _validate_http_match(i: int, m: Entry) -> bool:
    """A route's HTTP match; True when it matches on a path (so ``PrefixRewrite`` may be used)."""
    _check_regexes(f"Route[{i}]", m)
    paths = [p for p in ("PathExact", "PathPrefix") if m.get(p)]
    for p in paths:
        if not str(m[p]).startswith("/"):
            raise _invalid(f"Route[{i}] {p} doesn't start with '/': \"{m[p]}\"")
    if len(paths) + (1 if m.get("PathRegex") else 0) > 1:
        raise _invalid(f"Route[{i}] should only contain at most one of PathExact, PathPrefix, or PathRegex")
    for j, h in enumerate(_list(m, "Header")):
        h = _dict(h, "Header")
        if not h.get("Name"):
            raise _invalid(f"Route[{i}] Header[{j}] missing required Name field")
        if sum(1 for k in ("Present", "Exact", "Prefix", "Suffix", "Regex") if h.get(k)) != 1:
            raise _invalid(f"Route[{i}] Header[{j}] should only contain one of Present, Exact, Prefix, Suffix, "
                           "or Regex")
    for j, q in enumerate(_list(m, "QueryParam")):
        q = _dict(q, "QueryParam")
        if not q.get("Name"):
            raise _invalid(f"Route[{i}] QueryParam[{j}] missing required Name field")
        if sum(1 for k in ("Present", "Exact", "Regex") if q.get(k)) != 1:
            raise _invalid(f"Route[{i}] QueryParam[{j}] should only contain one of Present, Exact, or Regex")
    found: set[str] = set()
    for meth in _list(m, "Methods"):
        if meth not in _METHODS:
            raise _invalid(f'Route[{i}] Methods contains an invalid method "{meth}"')
        if meth in found:
            raise _invalid(f'Route[{i}] Methods contains "{meth}" more than once')
        found.add(meth)
    return bool(paths)


def _validate_router(e: Entry) -> None:
    for i, r in enumerate(_list(e, "Routes")):
        r = _dict(r, f"Routes[{i}]")
        http = _dict(_dict(r.get("Match"), "Match").get("HTTP"), "HTTP")
        by_path = _validate_http_match(i, http) if http else False
        d = _dict(r.get("Destination"), "Destination")
        if d.get("PrefixRewrite") and not by_path:
            raise _invalid(f"Route[{i}] cannot make use of PrefixRewrite without configuring either PathExact or "
                           "PathPrefix")
        for cond in _list(d, "RetryOn"):
            if cond not in _RETRY_ON:
                raise _invalid(f'Route[{i}] contains an invalid retry condition: "{cond}"')
        for f in ("RequestTimeout", "IdleTimeout"):
            _duration(d, f)


def _duration(d: Entry, f: str) -> None:
    if d.get(f) in (None, ""):
        return
    try:
        parse_go_duration(str(d[f]))
    except ValueError as err:
        raise ConsulError(400, f"Request decoding failed: {err}") from None


def _validate_resolver(e: Entry) -> None:
    name = e["Name"]
    subsets = _dict(e.get("Subsets"), "Subsets")
    for sub, spec in subsets.items():
        if not sub:
            raise _invalid("Subset defined with empty name")
        _dict(spec, f"Subsets[{sub}]")
    if e.get("DefaultSubset") and e["DefaultSubset"] not in subsets:
        raise _invalid(f'DefaultSubset "{e["DefaultSubset"]}" is not a valid subset')
    red = _dict(e.get("Redirect"), "Redirect")
    if red:
        if subsets:
            raise _invalid("Redirect and Subsets cannot both be set")
        if e.get("Failover"):
            raise _invalid("Redirect and Failover cannot both be set")
        if not red.get("Service") and not red.get("ServiceSubset"):
            raise _invalid("Redirect is empty")
        if not red.get("Service") and red.get("ServiceSubset"):
            raise _invalid("Redirect.ServiceSubset defined without Redirect.Service")
        if red.get("Service") == name and not red.get("ServiceSubset"):
            raise _invalid(f"Redirect.Service cannot be set to {name} without a ServiceSubset")
    for sub in _dict(e.get("Failover"), "Failover"):
        if sub != "*" and sub not in subsets:
            raise _invalid(f'Bad Failover["{sub}"]: not a valid subset')
    _duration(e, "ConnectTimeout")
    lb = _dict(e.get("LoadBalancer"), "LoadBalancer")
    if lb.get("Policy", "") not in _LB_POLICIES:
        raise _invalid(f'Invalid LoadBalancer.Policy: "{lb.get("Policy")}"')


def _validate_intentions(e: Entry) -> None:
    sources = _list(e, "Sources")
    seen: set[str] = set()
    for i, s in enumerate(sources):
        s = _dict(s, f"Sources[{i}]")
        if not s.get("Name"):
            raise _invalid(f"Sources[{i}].Name is required")
        if s["Name"] in seen:
            raise _invalid(f'Sources[{i}] defines "{s["Name"]}" more than once')
        seen.add(s["Name"])
        perms = _list(s, "Permissions")
        if perms:
            if s.get("Action"):
                raise _invalid(f"Sources[{i}].Action must be omitted if Permissions are specified")
            if e["Name"] == "*":
                raise _invalid("Sources[{i}].Permissions cannot be specified on intentions with wildcarded "
                               "destinations".replace("{i}", str(i)))
        elif s.get("Action") not in ("allow", "deny"):
            raise _invalid(f"Sources[{i}].Action must be set to 'allow' or 'deny'")
        for j, p in enumerate(perms):
            p = _dict(p, f"Sources[{i}].Permissions[{j}]")
            where = f"Sources[{i}].Permissions[{j}]"
            if p.get("Action") not in ("allow", "deny"):
                raise _invalid(f"{where}.Action must be set to 'allow' or 'deny'")
            http = _dict(p.get("HTTP"), "HTTP")
            if not http:
                raise _invalid(f"{where}.HTTP is required")
            _check_regexes(where, http)
            if sum(1 for k in ("PathExact", "PathPrefix", "PathRegex") if http.get(k)) > 1:
                raise _invalid(f"{where} should only contain at most one of PathExact, PathPrefix, or PathRegex")
            for k in ("PathExact", "PathPrefix"):
                if http.get(k) and not str(http[k]).startswith("/"):
                    raise _invalid(f"{where} {k} doesn't start with '/': \"{http[k]}\"")
            for h in _list(http, "Header"):
                h = _dict(h, "Header")
                if not h.get("Name"):
                    raise _invalid(f"{where}.Header: missing required Name field")
                if sum(1 for k in ("Present", "Exact", "Prefix", "Suffix", "Regex") if h.get(k)) > 1:
                    raise _invalid(f"{where}.Header[{h['Name']}] should only contain one of Present, Exact, "
                                   "Prefix, Suffix, or Regex")
            for meth in _list(http, "Methods"):
                if meth not in _METHODS:
                    raise _invalid(f'{where}.Methods contains an invalid method "{meth}"')
        if s.get("Type", "consul") != "consul":
            raise _invalid(f'Sources[{i}].Type must be set to "consul"')


def _normalize_intentions(e: Entry) -> None:
    """Consul's Normalize: each source gets ``Type: consul`` and its ``Precedence`` (9 exact -> exact, 8
    exact destination from any source, 6 any destination from an exact source, 5 any -> any)."""
    exact_dst = e["Name"] != "*"
    for s in e.get("Sources") or []:
        s["Type"] = "consul"
        exact_src = s.get("Name") != "*"
        s["Precedence"] = (9 if exact_src else 8) if exact_dst else (6 if exact_src else 5)


def _validate_defaults(e: Entry) -> None:
    proto = e.get("Protocol", "")
    if proto and str(proto).lower() not in _PROTOCOLS:
        raise _invalid(f'invalid value for protocol: "{proto}"')


def _validate_proxy_defaults(e: Entry) -> None:
    if e["Name"] != "global":
        raise _invalid(f'invalid name ("{e["Name"]}"), only "global" is supported')
    cfg = _dict(e.get("Config"), "Config")
    proto = cfg.get("protocol", "")
    if proto and str(proto).lower() not in _PROTOCOLS:
        raise _invalid(f'invalid value for protocol: "{proto}"')


_VALIDATORS: dict[str, Callable[[Entry], None]] = {
    "service-splitter": _validate_splitter, "service-router": _validate_router,
    "service-resolver": _validate_resolver, "service-intentions": _validate_intentions,
    "service-defaults": _validate_defaults, "proxy-defaults": _validate_proxy_defaults,
}


def check_kind(kind: str) -> None:
    if kind not in _VALIDATORS:
        raise ConsulError(400, f"invalid config entry kind: {kind}")


def check_name(name: str) -> None:
    if not name:
        raise _invalid("Name is required")
    if len(name) > 512 or any(ch < " " or ch == "\x7f" for ch in name):
        raise _invalid(f"Name {name!r} is invalid: at most 512 printable characters")


def validate_entry(raw: Any) -> Entry:
    """The entry as Consul would store it (normalised), or ``ConsulError`` with Consul's status and text."""
    if not isinstance(raw, dict):
        raise ConsulError(400, "Request decoding failed: Payload does not contain a kind/Kind key at the top level")
    kind = raw.get("Kind", raw.get("kind"))
    if not isinstance(kind, str) or not kind:
        raise ConsulError(400, "Request decoding failed: Payload does not contain a kind/Kind key at the top level")
    check_kind(kind)
    e: Entry = {k: v for k, v in raw.items() if k not in ("kind", "CreateIndex", "ModifyIndex", "Hash")}
    e["Kind"] = kind
    name = e.get("Name", "")
    if not isinstance(name, str):
        raise ConsulError(400, "Request decoding failed: 'Name' expected type 'string'")
    check_name(name)
    _validate_meta(e)
    _VALIDATORS[kind](e)
    if kind == "service-intentions":
        _normalize_intentions(e)
    return e


def _to_api(kv: KeyValue) -> Entry:
    e: Entry = orjson.loads(kv.value)
    e["CreateIndex"], e["ModifyIndex"] = kv.create_revision, kv.mod_revision
    return e


def entry_key(kind: str, name: str) -> str:
    """The store key of an entry: the name escaped so it holds no ``/``, and ended by ``/``, so one entry's
    key is a prefix of no other (a blocking read of ``web`` is not woken by ``web2``)."""
    return f"{CONFIG_PREFIX}{kind}/{quote(name, safe='')}/"


class ConfigEntries:
    """The config entries: reads, writes (with ``cas``), and an in-memory copy kept current for the mesh."""

    name = "consul-config-entries"

    def __init__(self, store: RevStore, changes: ChangeSink | None = None) -> None:
        self.store = store
        self.changes = changes  # each applied or deleted entry is a ``config`` change event (it moves traffic)
        self.entries: dict[tuple[str, str], Entry] = {}  # (kind, name) -> entry, current
        self.listeners: list[Callable[[], None]] = []

    async def start(self) -> None:
        res = await self.store.range(CONFIG_PREFIX)
        self.entries = {}
        for kv in res.kvs:
            self._remember(kv)
        self._changed()

    async def stop(self) -> None:
        """Nothing to release: the hub owns the store watch."""

    def on_events(self, batch: list[Event]) -> None:
        """Keep ``entries`` current (called by the blocking-query hub with every batch it sees)."""
        touched = False
        for ev in batch:
            if not ev.kv.key.startswith(CONFIG_PREFIX):
                continue
            touched = True
            if ev.type == "DELETE":
                kind, _, name = ev.kv.key[len(CONFIG_PREFIX):].partition("/")
                self.entries.pop((kind, unquote(name.removesuffix("/"))), None)
            else:
                self._remember(ev.kv)
        if touched:
            self._changed()

    def _remember(self, kv: KeyValue) -> None:
        with_index = _to_api(kv)
        self.entries[(with_index["Kind"], with_index["Name"])] = with_index

    def mesh_objects(self, services: Mapping[tuple[str, str], Entry]) -> MeshObjects:
        """The Istio objects the mesh enforces for these entries over Kubernetes ``services``."""
        return mesh_objects(self.entries, services)

    def _changed(self) -> None:
        for fn in self.listeners:
            try:
                fn()
            except Exception:  # a listener's failure must not stop the store watch that calls it
                log.exception("config entries: a listener failed")

    async def get(self, kind: str, name: str) -> tuple[Entry | None, int]:
        check_kind(kind)
        kv = await self.store.get(entry_key(kind, name))
        return (_to_api(kv), kv.mod_revision) if kv is not None else (None, 0)

    async def listing(self, kind: str) -> tuple[list[Entry], int]:
        check_kind(kind)
        res = await self.store.range(f"{CONFIG_PREFIX}{kind}/")
        return [_to_api(kv) for kv in res.kvs], max((kv.mod_revision for kv in res.kvs), default=0)

    async def put(self, entry: Entry, cas: int | None = None, *, who: str = "") -> bool:
        """Store a validated entry; with ``cas`` only when its ModifyIndex is ``cas`` (0: only when new)."""
        key = entry_key(entry["Kind"], entry["Name"])
        value = orjson.dumps(entry)
        if cas is None:
            existing = await self.store.range(f"{CONFIG_PREFIX}{entry['Kind']}/", limit=1)
            if existing.count >= MAX_ENTRIES_PER_KIND and await self.store.get(key) is None:
                raise ConsulError(500, f"too many {entry['Kind']} config entries (limit {MAX_ENTRIES_PER_KIND})")
            rev = (await self.store.put(key, value)).mod_revision
        else:
            cmp = Compare(key, "create", "=", 0) if cas == 0 else Compare(key, "mod", "=", cas)
            res = await self.store.txn([cmp], [Op.put(key, value)])
            if not res.succeeded:
                return False
            rev = res.revision
        await self._record(entry["Kind"], entry["Name"], "applied", rev, who)
        return True

    async def delete(self, kind: str, name: str, cas: int | None = None, *, who: str = "") -> bool:
        check_kind(kind)
        key = entry_key(kind, name)
        if cas is None:
            gone = await self.store.delete(key)
            if gone:
                await self._record(kind, name, "deleted", await self.store.revision(), who)
            return True
        if cas == 0:  # Consul: a CAS delete with index 0 deletes nothing
            return False
        res = await self.store.txn([Compare(key, "mod", "=", cas)], [Op.delete(key)])
        if res.succeeded:
            await self._record(kind, name, "deleted", res.revision, who)
        return res.succeeded

    async def _record(self, kind: str, name: str, verb: str, revision: int, who: str) -> None:
        if self.changes is None:
            return
        try:
            await self.changes.record(ChangeEvent(
                kind="config", summary=f"Consul {kind} {name} {verb} (revision {revision})", source="consul-config",
                who=who, details={"kind": kind, "name": name, "revision": revision, "change": verb}))
        except Exception:  # the change itself is committed; a lost event must not fail the write
            log.exception("config entry change event not recorded")
