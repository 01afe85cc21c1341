"""``/v1/catalog``, ``/v1/health`` and ``/v1/agent`` service/check routes (Consul's shapes and errors)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from pitwall.registry.agent import AGENT_PREFIX, STATUSES, AgentServices, lower_keys, parse_check
from pitwall.registry.api import Blocking, json_response, read_limited
from pitwall.registry.blocking import QueryOptions, Resolver, View, WatchHub
from pitwall.registry.catalog import KUBE_PREFIX, Catalog, Instance
from pitwall.registry.filter import Filter, FilterError, parse_filter
from pitwall.registry.model import ConsulError

__all__ = ["catalog_routes"]

AGENT_BODY_MAX = 256 * 1024
_PREFIXES = (KUBE_PREFIX, AGENT_PREFIX)


def _idx(items: list[Instance]) -> int:
    return max((i.modify_index for i in items), default=0)


def _tag_filter(request: Request, items: list[Instance]) -> list[Instance]:
    tags = request.query_params.getlist("tag")
    return [i for i in items if all(t in i.service["Tags"] for t in tags)]


def _filtered(request: Request) -> Callable[[list[Any]], list[Any]]:
    """``?filter=`` as a function over an answer's list; a bad expression is Consul's 400 before any work."""
    flt = _parse(request)
    if flt is None:
        return lambda items: items

    def run(items: list[Any]) -> list[Any]:
        try:
            return flt.apply(items)
        except FilterError as e:
            raise ConsulError(400, str(e)) from None
    return run


def _check_filter(q: Any) -> None:
    """A bad ``?filter=`` is the route's 400 (so such a query is never parked)."""
    try:
        parse_filter(q.get("filter", ""))
    except FilterError as e:
        raise ConsulError(400, str(e)) from None


def flt_map(flt: Callable[[list[Any]], list[Any]], by_id: dict[str, Any]) -> dict[str, Any]:
    """``?filter=`` over an object keyed by id (Consul filters its values)."""
    kept = {id(v) for v in flt(list(by_id.values()))}
    return {k: v for k, v in by_id.items() if id(v) in kept}


def _node_json(catalog: Catalog, node: str, addr: str) -> dict[str, Any]:
    return {"ID": "", "Node": node, "Address": addr, "Datacenter": catalog.datacenter,
            "TaggedAddresses": {"lan": addr, "wan": addr}, "Meta": {}, "CreateIndex": 0, "ModifyIndex": 0}


def _parse(request: Request) -> Filter | None:
    try:
        return parse_filter(request.query_params.get("filter", ""))
    except FilterError as e:
        raise ConsulError(400, str(e)) from None


async def _json_body(request: Request) -> Any:
    raw = await read_limited(request, AGENT_BODY_MAX, lambda n: ConsulError(413, "Request body too large"))
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ConsulError(400, f"Request decode failed: {e}") from None


def catalog_routes(r: APIRouter, catalog: Catalog, agent: AgentServices, hub: WatchHub,
                   blocking: Blocking) -> None:
    """Adds the catalog, health and agent service routes to ``r``."""

    async def of_service(name: str) -> tuple[list[Instance], int]:
        items, _ = await catalog.instances()
        mine = [i for i in items if i.name == name]
        return mine, _idx(mine)

    # Each endpoint's view (watched prefixes, read) serves the route and ``ParkHeldQueries`` alike.
    def whole(param: str, q: Any) -> View:
        _check_filter(q)
        return _PREFIXES, catalog.instances

    def one_service(name: str, q: Any) -> View:
        _check_filter(q)
        return _PREFIXES, lambda: of_service(name)

    def state_view(state: str, q: Any) -> View:
        if state not in (*STATUSES, "any"):
            raise ConsulError(400, f"Invalid check state: {state!r}")
        return whole(state, q)
    for path, view in (("/v1/catalog/services", whole), ("/v1/catalog/nodes", whole),
                       ("/v1/catalog/node/", whole), ("/v1/health/node/", whole),
                       ("/v1/catalog/service/", one_service), ("/v1/health/service/", one_service),
                       ("/v1/health/checks/", one_service), ("/v1/health/state/", state_view)):
        hub.parks.add(path, view)

    @r.get("/v1/catalog/services")
    async def services(request: Request) -> Response:
        def out(items: list[Instance], idx: int) -> Response:
            tags: dict[str, list[str]] = {}
            for i in items:
                have = tags.setdefault(i.name, [])
                have.extend(t for t in i.service["Tags"] if t not in have)
            return json_response(tags, idx)
        return await blocking(request, *whole("", request.query_params), out)

    @r.get("/v1/catalog/service/{name}")
    async def service(name: str, request: Request) -> Response:
        flt = _filtered(request)
        return await blocking(request, *one_service(name, request.query_params), lambda items, idx: json_response(
            flt([catalog.catalog_entry(i) for i in _tag_filter(request, items)]), idx))

    @r.get("/v1/catalog/node/{node}")
    async def node(node: str, request: Request) -> Response:
        flt = _filtered(request)

        def out(items: list[Instance], idx: int) -> Response:
            mine = [i for i in items if i.node == node]
            if not mine and node != catalog.node:
                return json_response(None, idx)  # Consul: null for an unknown node
            addr = mine[0].node_address if mine else catalog.node_address
            return json_response({"Node": _node_json(catalog, node, addr), "Services": flt_map(
                flt, {i.service["ID"]: catalog.health_entry(i)["Service"] for i in mine})}, idx)
        return await blocking(request, *whole(node, request.query_params), out)

    @r.get("/v1/health/node/{node}")
    async def health_node(node: str, request: Request) -> Response:
        flt = _filtered(request)

        def out(items: list[Instance], idx: int) -> Response:
            checks = {c["CheckID"]: c for i in items if i.node == node for c in i.checks}
            return json_response(flt(list(checks.values())), idx)
        return await blocking(request, *whole(node, request.query_params), out)

    @r.get("/v1/catalog/nodes")
    async def nodes(request: Request) -> Response:
        flt = _filtered(request)

        def out(items: list[Instance], idx: int) -> Response:
            seen = {catalog.node: catalog.node_address, **{i.node: i.node_address for i in items}}
            return json_response(flt([_node_json(catalog, n, a) for n, a in sorted(seen.items())]), idx)
        return await blocking(request, *whole("", request.query_params), out)

    @r.get("/v1/health/service/{name}")
    async def health_service(name: str, request: Request) -> Response:
        passing = "passing" in request.query_params
        flt = _filtered(request)

        def out(items: list[Instance], idx: int) -> Response:
            chosen = [i for i in _tag_filter(request, items) if not passing or i.status() == "passing"]
            return json_response(flt([catalog.health_entry(i) for i in chosen]), idx)
        return await blocking(request, *one_service(name, request.query_params), out)

    @r.get("/v1/health/checks/{name}")
    async def health_checks(name: str, request: Request) -> Response:
        flt = _filtered(request)
        return await blocking(request, *one_service(name, request.query_params), lambda items, idx: json_response(
            flt([c for i in items for c in i.checks if c["ServiceID"]]), idx))

    @r.get("/v1/health/state/{state}")
    async def health_state(state: str, request: Request) -> Response:
        view = state_view(state, request.query_params)
        flt = _filtered(request)

        def out(items: list[Instance], idx: int) -> Response:
            checks = {(c["Node"], c["CheckID"]): c for i in items for c in i.checks}
            return json_response(flt([c for c in checks.values() if state == "any" or c["Status"] == state]), idx)
        return await blocking(request, *view, out)

    _agent_routes(r, catalog, agent, hub)


async def hash_blocking(request: Request, hub: WatchHub, read: Callable[[], Awaitable[Any]]) -> Response:
    """Consul's agent endpoints block on a content hash: ``?hash=H&wait=D`` answers once the body's hash
    differs from ``H`` (or at the deadline), with ``X-Consul-ContentHash``."""
    opts = QueryOptions(request)
    given = request.query_params.get("hash", "")
    deadline = time.monotonic() + opts.deadline_s()
    while True:
        mark = hub.seen
        body = orjson.dumps(await read(), option=orjson.OPT_SORT_KEYS)
        digest = _digest(body)
        remaining = deadline - time.monotonic()
        if not given or digest != given or remaining <= 0:
            return Response(body, 200, {"X-Consul-ContentHash": digest}, media_type="application/json")
        if hub.seen != mark:
            continue  # a change arrived while reading: read again before waiting
        # no await between that check and the waiter's registration, so no change slips between them
        if await hub.wait((AGENT_PREFIX,), mark, remaining, request) < 0:
            return Response(body, 200, {"X-Consul-ContentHash": digest}, media_type="application/json")


def _digest(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=8).hexdigest()


def content_hash(result: Any) -> str:
    """``X-Consul-ContentHash`` of an agent endpoint's answer (the route's and ``ParkHeldQueries``')."""
    return _digest(orjson.dumps(result, option=orjson.OPT_SORT_KEYS))


def _by_id(view: Callable[[], Awaitable[dict[str, Any]]], flt: Filter | None
           ) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An agent view (an object keyed by id) with ``?filter=`` applied to its values."""
    if flt is None:
        return view

    async def read() -> dict[str, Any]:
        try:
            return flt.apply_map(await view())
        except FilterError as e:
            raise ConsulError(400, str(e)) from None
    return read


def _agent_routes(r: APIRouter, catalog: Catalog, agent: AgentServices, hub: WatchHub) -> None:
    async def services_view() -> dict[str, Any]:
        items, _ = await agent.services()
        return {s["ID"]: {**s, "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False,
                          "Datacenter": catalog.datacenter} for s, _, _ in items}

    async def checks_view() -> dict[str, Any]:
        items, _ = await agent.all_checks()
        return {c.id: c.to_api(catalog.node, (cc, cm)) for c, cc, cm in items}

    def hashed_view(view: Callable[[], Awaitable[dict[str, Any]]]) -> Resolver:
        def resolve(_: str, q: Any) -> View:
            _check_filter(q)
            read = _by_id(view, parse_filter(q.get("filter", "")))

            async def indexed() -> tuple[dict[str, Any], int]:
                return await read(), 0  # these endpoints block on the content hash, not an index
            return (AGENT_PREFIX,), indexed
        return resolve
    hub.parks.add("/v1/agent/services", hashed_view(services_view), content_hash=content_hash)
    hub.parks.add("/v1/agent/checks", hashed_view(checks_view), content_hash=content_hash)

    @r.get("/v1/agent/services")
    async def agent_services(request: Request) -> Response:
        return await hash_blocking(request, hub, _by_id(services_view, _parse(request)))

    @r.get("/v1/agent/checks")
    async def agent_checks(request: Request) -> Response:
        return await hash_blocking(request, hub, _by_id(checks_view, _parse(request)))

    @r.put("/v1/agent/service/register")
    async def register(request: Request) -> Response:
        await agent.register(await _json_body(request))
        return Response(b"", 200)

    @r.put("/v1/agent/service/deregister/{sid}")
    async def deregister(sid: str) -> Response:
        await agent.deregister(sid)
        return Response(b"", 200)

    @r.put("/v1/agent/check/register")
    async def check_register(request: Request) -> Response:
        d = lower_keys(await _json_body(request))
        sid = str(d.get("serviceid") or "")
        sname = ""
        if sid:
            services, _ = await agent.services()
            match = [s for s, _, _ in services if s["ID"] == sid]
            if not match:
                raise ConsulError(400, f'ServiceID "{sid}" does not exist')
            sname = match[0]["Service"]
        name = str(d.get("name") or "")
        if not name:
            raise ConsulError(400, "Missing check name")
        c = parse_check(d, service_id=sid, service_name=sname, default_id=name)
        await agent.put_check(c)
        return Response(b"", 200)

    @r.put("/v1/agent/check/deregister/{cid}")
    async def check_deregister(cid: str) -> Response:
        await agent.delete_check(cid)
        return Response(b"", 200)

    for verb, status in (("pass", "passing"), ("warn", "warning"), ("fail", "critical")):
        _ttl_route(r, agent, verb, status)

    @r.put("/v1/agent/check/update/{cid}")
    async def update(cid: str, request: Request) -> Response:
        d = lower_keys(await _json_body(request))
        status = str(d.get("status") or "")
        if status not in STATUSES:
            raise ConsulError(400, f'Invalid check status: "{status}"')
        await agent.set_status(cid, status, str(d.get("output") or ""), ttl_only=True)
        return Response(b"", 200)


def _ttl_route(r: APIRouter, agent: AgentServices, verb: str, status: str) -> None:
    async def handler(cid: str, request: Request) -> Response:
        await agent.set_status(cid, status, request.query_params.get("note", ""), ttl_only=True)
        return Response(b"", 200)
    r.add_api_route(f"/v1/agent/check/{verb}/{{cid}}", handler, methods=["PUT"])
