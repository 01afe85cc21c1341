"""Consul's HTTP API (``/v1/...``): KV, txn, sessions, status, agent/self, and pitwall's config history.

Handlers parse Consul's query parameters, call ``kv``/``sessions``/
``catalog`` and answer as Consul does: JSON with ``X-Consul-Index``,
``X-Consul-KnownLeader`` and ``X-Consul-LastContact`` on reads, plain-text
errors with Consul's statuses and messages (``ConsulError`` through
``core.http_errors``' ``text`` format). Reads block when given ``index``.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from pitwall.core.http_errors import error_router
from pitwall.core.tenancy import principal_of
from pitwall.registry.blocking import ParkRules, QueryOptions, View, WatchHub, blocking_read
from pitwall.registry.console import ConfigConsole
from pitwall.registry.kv import MAX_TXN_OPS, KVStore
from pitwall.registry.model import KV_PREFIX, MAX_VALUE_BYTES, SESSION_PREFIX, ConsulError, check_key
from pitwall.registry.sessions import SessionStore

__all__ = ["AgentInfo", "Blocking", "consul_router", "history_router", "json_response", "read_limited"]

Blocking = Callable[[Request, tuple[str, ...], Callable[[], Awaitable[tuple[Any, int]]],
                     Callable[[Any, int], Response]], Awaitable[Response]]
_NOT_QUERY = frozenset({"index", "wait", "token", "stale", "consistent", "cached"})
TXN_MAX_BYTES = MAX_VALUE_BYTES  # Consul's txn_max_req_len default
SESSION_BODY_MAX = 64 * 1024


class AgentInfo:
    """What ``/v1/status`` and ``/v1/agent/self`` report about this (single-server) agent."""

    def __init__(self, node: str, address: str, datacenter: str = "dc1", version: str = "1.20.0") -> None:
        self.node = node
        self.address = address
        self.datacenter = datacenter
        self.version = version

    @property
    def raft_address(self) -> str:
        return f"{self.address.rsplit(':', 1)[0] if ':' in self.address else self.address}:8300"


def who(request: Request) -> str:
    """The principal a change is recorded under: the token's name, or ``anonymous`` without auth."""
    p = principal_of(request)
    return p.name if p is not None and p.name else "anonymous"


def query_meta(index: int) -> dict[str, str]:
    """The headers of every read (one server: always a known leader, no replication lag)."""
    return {"X-Consul-Index": str(index), "X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0"}


def json_response(data: Any, index: int | None = None, status: int = 200) -> Response:
    headers = {} if index is None else query_meta(index)
    return Response(orjson.dumps(data), status, headers, media_type="application/json")


def not_found(index: int) -> Response:
    """Consul's answer for a missing key or an empty prefix: 404, no body, the index still set."""
    return Response(b"", 404, query_meta(index))


async def read_limited(request: Request, limit: int, too_large: Callable[[int], ConsulError]) -> bytes:
    """The body, refused with ``too_large(size)`` as soon as it passes ``limit`` bytes (declared or read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared))
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(size)
        parts.append(chunk)
    return b"".join(parts)


def _uint_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise ConsulError(400, f'strconv.ParseUint: parsing "{raw}": invalid syntax')
    return int(raw)


def _conflicting(request: Request, *flags: str) -> None:
    if sum(1 for f in flags if f in request.query_params) > 1:
        raise ConsulError(400, f"Conflicting flags: {request.query_params}")


def _raw_path_check(request: Request) -> None:
    raw = request.scope.get("raw_path", b"").decode("latin-1")
    if "../" in raw or "..\\" in raw:
        raise ConsulError(400, "URL path contains invalid traversal sequence")
    if any(s in raw.lower() for s in ("%2e%2e%2f", "%2e%2e/", "..%2f", "%2e%2e%5c", "%252e%252e%252f")):
        raise ConsulError(400, "URL path contains encoded traversal sequence")


def consul_router(kv: KVStore, sessions: SessionStore, hub: WatchHub, agent: AgentInfo,
                  extra: Callable[[APIRouter, Blocking], None] | None = None) -> APIRouter:
    """The ``/v1/`` routes for KV, txn, sessions, status and agent/self; ``extra`` adds more (the catalog)."""
    r = error_router("text", tags=["consul"])

    async def blocking(request: Request, prefixes: tuple[str, ...], read: Callable[[], Awaitable[tuple[Any, int]]],
                       render: Callable[[Any, int], Response]) -> Response:
        opts = QueryOptions(request)
        share = None if opts.index <= 0 else (  # only a blocking query shares its reads
            request.url.path, tuple(sorted((k, v) for k, v in request.query_params.multi_items()
                                           if k not in _NOT_QUERY)))
        result, idx = await blocking_read(hub, prefixes, opts, read, share)
        return render(result, idx if idx > 0 else max(hub.seen, 1))

    def kv_view(key: str, q: Any) -> View:
        """A KV read's watched prefix and read (the route's and ``ParkHeldQueries``')."""
        listing = "keys" in q or "recurse" in q
        check_key(key, allow_empty=listing)
        prefix = (KV_PREFIX + key,)
        if "keys" in q:
            sep = q.get("separator", q.get("seperator", ""))
            return prefix, lambda: kv.keys(key, sep)
        return prefix, (lambda: kv.tree(key)) if "recurse" in q else (lambda: kv.get(key))
    hub.parks.add("/v1/kv/", kv_view, rest=True)

    @r.get("/v1/kv/{key:path}")
    async def kv_get(key: str, request: Request) -> Response:
        _raw_path_check(request)
        q = request.query_params
        prefix, read = kv_view(key, q)
        if "keys" in q:
            def keys_out(ks: list[str], idx: int) -> Response:
                return not_found(idx) if not ks and key else json_response(ks, idx)
            return await blocking(request, prefix, read, keys_out)
        if "recurse" in q:
            def list_out(entries: list[Any], idx: int) -> Response:
                return json_response([e.to_api() for e in entries], idx) if entries else not_found(idx)
            return await blocking(request, prefix, read, list_out)

        def one_out(e: Any, idx: int) -> Response:
            if e is None:
                return not_found(idx)
            if "raw" in q:
                return Response(e.value, 200, {**query_meta(idx), "X-Content-Type-Options": "nosniff",
                                               "Content-Security-Policy": "sandbox"}, media_type="text/plain")
            return json_response([e.to_api()], idx)
        return await blocking(request, prefix, read, one_out)

    @r.put("/v1/kv/{key:path}")
    async def kv_put(key: str, request: Request) -> Response:
        _raw_path_check(request)
        check_key(key)
        _conflicting(request, "cas", "acquire", "release")
        flags = _uint_param(request, "flags") or 0
        cas = _uint_param(request, "cas")
        value = await read_limited(request, MAX_VALUE_BYTES, lambda n: ConsulError(
            413, f"Request body({n} bytes) too large, max size: {MAX_VALUE_BYTES} bytes. See "
                 "https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size."))
        q = request.query_params
        ok = await kv.put(key, value, who=who(request), flags=flags, cas=cas, acquire=q.get("acquire", ""),
                          release=q.get("release", ""))
        return json_response(ok)

    @r.delete("/v1/kv/{key:path}")
    async def kv_delete(key: str, request: Request) -> Response:
        _raw_path_check(request)
        recurse = "recurse" in request.query_params
        check_key(key, allow_empty=recurse)
        _conflicting(request, "recurse", "cas")
        ok = await kv.delete(key, who=who(request), recurse=recurse, cas=_uint_param(request, "cas"))
        return json_response(ok)

    @r.put("/v1/txn")
    async def txn(request: Request) -> Response:
        body = await read_limited(request, TXN_MAX_BYTES, lambda n: ConsulError(
            413, f"Request body too large, max size: {TXN_MAX_BYTES} bytes"))
        try:
            ops = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise ConsulError(400, f"Failed to parse body: {e}") from None
        if not isinstance(ops, list):
            raise ConsulError(400, "Failed to parse body: a transaction is a JSON array of operations")
        if len(ops) > MAX_TXN_OPS:
            raise ConsulError(413, f"Transaction contains too many operations ({len(ops)} > {MAX_TXN_OPS})")
        out = await kv.txn(ops, who=who(request))
        headers = {"X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0"}
        return Response(orjson.dumps(out.to_api()), 409 if out.errors else 200, headers,
                        media_type="application/json")

    _session_routes(r, sessions, blocking, agent, hub.parks)
    _status_routes(r, agent)
    if extra is not None:
        extra(r, blocking)
    return r


def _session_routes(r: APIRouter, sessions: SessionStore, blocking: Blocking, agent: AgentInfo,
                    parks: ParkRules) -> None:
    @r.put("/v1/session/create")
    async def create(request: Request) -> Response:
        raw = await read_limited(request, SESSION_BODY_MAX, lambda n: ConsulError(413, "Request body too large"))
        body: Any = {}
        if raw.strip():
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                raise ConsulError(400, f"Request decode failed: {e}") from None
        if not isinstance(body, dict):
            raise ConsulError(400, "Request decode failed: the body is a JSON object")
        return json_response({"ID": await sessions.create(body)})

    @r.put("/v1/session/destroy/{sid}")
    async def destroy(sid: str, request: Request) -> Response:
        await sessions.destroy(sid, who=who(request))
        return json_response(True)

    @r.put("/v1/session/renew/{sid}")
    async def renew(sid: str) -> Response:
        s = await sessions.renew(sid)
        return json_response([s.to_api()])

    def listed(items: list[Any], idx: int) -> Response:
        return json_response([s.to_api() for s in items], idx)

    def info_view(sid: str, q: Any) -> View:
        async def read() -> tuple[list[Any], int]:
            s = await sessions.get(sid)
            return ([s], s.modify_index) if s else ([], 0)
        return (SESSION_PREFIX + sid,), read

    def node_view(node: str, q: Any) -> View:
        return (SESSION_PREFIX,), lambda: sessions.listing(node)
    parks.add("/v1/session/info/", info_view)
    parks.add("/v1/session/list", node_view)
    parks.add("/v1/session/node/", node_view)

    @r.get("/v1/session/info/{sid}")
    async def info(sid: str, request: Request) -> Response:
        return await blocking(request, *info_view(sid, request.query_params), listed)

    @r.get("/v1/session/list")
    async def list_all(request: Request) -> Response:
        return await blocking(request, *node_view("", request.query_params), listed)

    @r.get("/v1/session/node/{node}")
    async def of_node(node: str, request: Request) -> Response:
        return await blocking(request, *node_view(node, request.query_params), listed)


def _status_routes(r: APIRouter, agent: AgentInfo) -> None:
    @r.get("/v1/status/leader")
    async def leader() -> Response:
        return json_response(agent.raft_address)

    @r.get("/v1/status/peers")
    async def peers() -> Response:
        return json_response([agent.raft_address])

    @r.get("/v1/agent/self")
    async def self_() -> Response:
        return json_response({
            "Config": {"Datacenter": agent.datacenter, "NodeName": agent.node, "NodeID": "", "Server": True,
                       "Revision": "pitwall", "Version": agent.version, "PrimaryDatacenter": agent.datacenter},
            "Member": {"Name": agent.node, "Addr": agent.raft_address.rsplit(":", 1)[0], "Port": 8301,
                       "Tags": {"role": "consul", "dc": agent.datacenter, "build": agent.version}, "Status": 1},
            "Meta": {}, "xDS": None,
        })


def history_router(console: ConfigConsole) -> APIRouter:
    """pitwall's own config API: a key's recorded changes (a Consul key's, or with ``source=kubernetes`` a
    ConfigMap's or Secret's, named ``configmap/NS/NAME``), the difference between two revisions (of KV keys
    under a prefix, or of one ConfigMap's or Secret's data), putting a key or a ConfigMap/Secret back to what
    it was at a revision, and the difference between two environments (``config/<env>/<service>/...``)."""
    r = error_router("native", tags=["config"])
    kv = console.kv

    @r.get("/api/config/v1/history")
    async def key_history(key: str, limit: int = 100, source: str = "consul") -> Response:
        recs = await console.records(key, source, limit)
        return json_response({"key": key, "source": source, "changes": [rec.to_api() for rec in recs]})

    @r.get("/api/config/v1/diff")
    async def diff(request: Request, prefix: str = "", key: str = "") -> Response:
        a, b = _revision(request, "from"), _revision(request, "to")
        if key:  # one ConfigMap's or Secret's data (a Secret's values as digests)
            check_key(key)
            kh = console.kube_named(key)
            da, db = await kh.data_at(key, a) or {}, await kh.data_at(key, b) or {}
            out = [{"Key": k, "Old": _b64s(da.get(k)), "New": _b64s(db.get(k))}
                   for k in sorted(da.keys() | db.keys()) if da.get(k) != db.get(k)]
            return json_response({"key": key, "from": a, "to": b, "changes": out})
        check_key(prefix, allow_empty=True)
        old, new = await kv.at(prefix, a), await kv.at(prefix, b)
        out = [{"Key": k, "Old": _b64(old.get(k)), "New": _b64(new.get(k))}
               for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
        return json_response({"from": a, "to": b, "changes": out})

    @r.post("/api/config/v1/rollback")
    async def rollback(request: Request, key: str) -> Response:
        return json_response(await console.rollback(key, _revision(request, "to"), who=who(request)))

    @r.get("/api/config/v1/diff-env")
    async def diff_env(a: str, b: str, service: str = "") -> Response:
        return json_response((await console.envs(a, b, service)).to_api())

    return r


def _revision(request: Request, name: str) -> int:
    raw = request.query_params.get(name, "")
    if not raw.isdigit() or int(raw) <= 0:
        raise ConsulError(400, f"{name}: a store revision (a positive integer) is required, got {raw!r}")
    return int(raw)


def _b64(v: bytes | None) -> str | None:
    return None if v is None else base64.b64encode(v).decode()


def _b64s(v: str | None) -> str | None:
    return None if v is None else base64.b64encode(v.encode()).decode()
