"""Routes from the Kubernetes API: a watch on Ingresses, IngressClasses, GatewayClasses, Gateways, HTTPRoutes
and Services feeding the gateway.

Every server's gateway runs its own source (no leader): each lists then
watches the kinds, and after a burst of events settles (``SETTLE_S``)
translates the whole set again and hands the result to ``publish``, which
swaps one reference, as a file reload does. Each pitwall Ingress's
``status.loadBalancer.ingress`` is set to the gateway's listen address
(written only when it differs, so servers that agree write nothing).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pitwall.traffic.gateway.gatewayapi import (
    CONTROLLER,
    Translation,
    translate_gateway_api,
    with_transition_times,
)
from pitwall.traffic.gateway.ingress import IngressTranslation, translate_ingresses
from pitwall.traffic.gateway.kuberoutes import KubeRoutes

__all__ = ["KubeRouteSource"]

log = logging.getLogger(__name__)
Obj = dict[str, Any]
SETTLE_S = 0.05
RELIST_MAX_S = 5.0
_GW = "gateway.networking.k8s.io/v1"
_KINDS = (("networking.k8s.io/v1", "IngressClass"), ("networking.k8s.io/v1", "Ingress"), ("v1", "Service"),
          (_GW, "GatewayClass"), (_GW, "Gateway"), (_GW, "HTTPRoute"), ("v1", "Namespace"))


def _key(o: Obj) -> tuple[str, str]:
    m = o.get("metadata") or {}
    return str(m.get("namespace") or ""), str(m.get("name") or "")


class KubeRouteSource:
    """Follows the kinds in ``_KINDS``; ``publish(routes)`` after each settled change."""

    def __init__(self, client: Any, publish: Callable[[KubeRoutes], None], address: str, *, port: int = 80,
                 scheme: str = "http", record: Callable[[str, Obj], Awaitable[None]] | None = None) -> None:
        self.client = client
        self.publish = publish
        self.record = record  # told (summary, details) when the set of served objects changes
        self._served: frozenset[tuple[str, str, str, int]] | None = None
        self.address = address
        self.port = port
        self.scheme = scheme
        self.objects: dict[str, dict[tuple[str, str], Obj]] = {kind: {} for _, kind in _KINDS}
        self.changed = asyncio.Event()
        self.synced = asyncio.Event()
        self._listed: set[str] = set()

    async def run(self) -> None:
        """Follow every kind and rebuild on change, until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for api_version, kind in _KINDS:
                tg.create_task(self._follow(api_version, kind))
            tg.create_task(self._rebuild_loop())

    async def _follow(self, api_version: str, kind: str) -> None:
        from pitwall.kube import Gone, NotFoundError

        backoff = 0.1
        while True:
            try:
                lr = await self.client.list(api_version, kind)
                self.objects[kind] = {_key(o): o for o in lr.items}
                self._listed.add(kind)
                self.changed.set()
                async for ev in self.client.watch(api_version, kind, resource_version=lr.resource_version):
                    if ev.type == "BOOKMARK":
                        continue
                    if ev.type == "DELETED":
                        self.objects[kind].pop(_key(ev.object), None)
                    else:
                        self.objects[kind][_key(ev.object)] = ev.object
                    self.changed.set()
                    backoff = 0.1
            except Gone:
                continue
            except asyncio.CancelledError:
                raise
            except NotFoundError:  # not served (the Gateway API CRDs are absent): empty, look again later
                self.objects[kind] = {}
                self._listed.add(kind)
                self.changed.set()
                await asyncio.sleep(RELIST_MAX_S)
            except Exception:
                log.exception("gateway: following %s failed; listing again", kind)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RELIST_MAX_S)

    async def _rebuild_loop(self) -> None:
        while True:
            await self.changed.wait()
            await asyncio.sleep(SETTLE_S)  # a kubectl apply of many objects becomes one rebuild
            self.changed.clear()
            if len(self._listed) < len(_KINDS):
                continue  # half a picture would drop routes that exist
            try:
                await self.rebuild()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gateway: translating Kubernetes routes failed; the previous routes stay")

    async def rebuild(self) -> None:
        # A snapshot (the watches go on changing ``objects``), translated in a thread: a thousand routes
        # take a few hundred ms of Python, which would otherwise stall every request on this loop.
        snap = {kind: dict(objs) for kind, objs in self.objects.items()}
        t, g = await asyncio.to_thread(self._translate, snap)
        self.publish(KubeRoutes(g.table, t.routes))
        self.synced.set()
        await self._record(t, g, snap)
        for key, errs in t.problems.items():
            log.warning("gateway: Ingress %s partly served: %s", key, "; ".join(errs))
        for ing in t.served:
            await self._write_status(ing)
        served = {_key(i) for i in t.served}
        for ing_key, ing in snap["Ingress"].items():
            if ing_key not in served:
                await self._drop_address(ing)
        await self._write_gateway_api_status(g)

    async def _record(self, t: IngressTranslation, g: Translation, snap: dict[str, dict[tuple[str, str], Obj]]) \
            -> None:
        """One change event when the served objects or their specs (generations) change; status writes and
        unrelated Services do not count."""
        served = {("Ingress", *_key(i), int((i.get("metadata") or {}).get("generation") or 0)) for i in t.served}
        served |= {("HTTPRoute", ns, name, int((snap["HTTPRoute"][(ns, name)].get("metadata") or {})
                                               .get("generation") or 0))
                   for ns, name in g.route_parents if (ns, name) in snap["HTTPRoute"]}
        now = frozenset(served)
        if now == self._served:
            return
        first = self._served is None
        self._served = now
        if self.record is None or (first and not now):
            return
        n_ing = sum(1 for x in now if x[0] == "Ingress")
        summary = (f"gateway Kubernetes routes applied: {n_ing} Ingresses, {len(now) - n_ing} HTTPRoutes, "
                   f"{len(g.table.entries)} HTTPRoute matches")
        try:
            await self.record(summary, {"ingresses": n_ing, "httproutes": len(now) - n_ing})
        except Exception:  # the routes are in force either way; only their record is lost
            log.exception("gateway: recording the Kubernetes routes change failed")

    def _translate(self, snap: dict[str, dict[tuple[str, str], Obj]]) -> tuple[IngressTranslation, Translation]:
        classes = {name: c for (_, name), c in snap["IngressClass"].items()}
        t = translate_ingresses(snap["Ingress"].values(), classes, snap["Service"])
        g = translate_gateway_api(snap["GatewayClass"].values(), snap["Gateway"].values(),
                                  snap["HTTPRoute"].values(), snap["Service"],
                                  address=self.address, scheme=self.scheme, port=self.port,
                                  namespaces={name: o for (_, name), o in snap["Namespace"].items()})
        return t, g

    async def _write_status(self, ing: Obj) -> None:
        from pitwall.kube import KubeError

        have = ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if {"ip": self.address} in have:
            return  # servers with other listen addresses add theirs beside it: no write-back loop
        want = [*have, {"ip": self.address}]
        fresh = {**ing, "status": {**(ing.get("status") or {}), "loadBalancer": {"ingress": want}}}
        try:
            await self.client.update_status(fresh)
        except KubeError as e:  # changed meanwhile (its watch event brings a new round) or deleted
            log.debug("gateway: Ingress status not written: %s", e)

    async def _drop_address(self, ing: Obj) -> None:
        """An Ingress no longer ours (its class changed or went away) stops showing our address."""
        status = ing.get("status") or {}
        have = (status.get("loadBalancer") or {}).get("ingress") or []
        if {"ip": self.address} in have:
            await self._put_status(ing, {**status, "loadBalancer": {
                "ingress": [a for a in have if a != {"ip": self.address}]}})

    async def _write_gateway_api_status(self, g: Translation) -> None:
        for (_, name), cls in self.objects["GatewayClass"].items():
            if name in g.class_status:
                await self._merge_conditions(cls, g.class_status[name])
        for key, gw in self.objects["Gateway"].items():
            want = g.gateway_status.get(key)
            if want is None:
                continue
            old = gw.get("status") or {}
            old_listeners = {ls.get("name"): ls for ls in old.get("listeners") or []}
            listeners = [{**ls, "conditions": with_transition_times(
                ls["conditions"], (old_listeners.get(ls["name"]) or {}).get("conditions"))} for ls in want["listeners"]]
            have = list(old.get("addresses") or [])  # other servers' addresses stay, in place: no write-back loop
            addresses = have + [a for a in want["addresses"] if a not in have]
            await self._put_status(gw, {**old, "addresses": addresses, "listeners": listeners,
                                        "conditions": with_transition_times(want["conditions"], old.get("conditions"))})
        for key, rt in self.objects["HTTPRoute"].items():
            ours = g.route_parents.get(key, [])
            old = rt.get("status") or {}
            old_parents = old.get("parents") or []
            before = {_ref_key(p.get("parentRef") or {}, key[0]): p for p in old_parents
                      if p.get("controllerName") == CONTROLLER}
            mine = [{**p, "conditions": with_transition_times(
                p["conditions"], (before.get(_ref_key(p["parentRef"], key[0])) or {}).get("conditions"))}
                for p in ours]
            others = [p for p in old_parents if p.get("controllerName") != CONTROLLER]
            if not mine and not before:
                continue
            await self._put_status(rt, {**old, "parents": others + mine})

    async def _merge_conditions(self, obj: Obj, want: Obj) -> None:
        old = obj.get("status") or {}
        await self._put_status(obj, {**old, "conditions": with_transition_times(want["conditions"],
                                                                                 old.get("conditions"))})

    async def _put_status(self, obj: Obj, status: Obj) -> None:
        from pitwall.kube import KubeError

        if obj.get("status") == status:
            return
        try:
            await self.client.update_status({**obj, "status": status})
        except KubeError as e:  # changed meanwhile (its watch event brings a new round) or deleted
            log.debug("gateway: status not written: %s", e)


def _ref_key(ref: Obj, ns: str) -> tuple[str, str, str, str]:
    return (str(ref.get("namespace") or ns), str(ref.get("name", "")), str(ref.get("sectionName") or ""),
            str(ref.get("port") or ""))
