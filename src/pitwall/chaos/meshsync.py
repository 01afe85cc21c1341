"""Mesh faults on servers that do not lead the chaos controllers.

Servers sharing an etcd all serve every cluster IP (the kernel spreads the
connections over them), but only the leader runs the chaos controllers, which
put HTTPChaos and NetworkChaos faults into the leader's own proxy. Every other
server runs ``MeshFaultSync``: once a second it reads the experiments'
records and puts the faults the leader has injected (records ``Injected``)
into its own proxy's fault table, and takes out those recovered since. Its
keys are its own (``sync:...``); when its server becomes the leader it takes
them all out and the controllers re-apply theirs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

from pitwall.chaos.meshfaults import HttpRule, NetRule
from pitwall.chaos.model import API_VERSION, INJECTED, ChaosSpecError
from pitwall.core.tasks import Supervisor
from pitwall.kube import KubeClient
from pitwall.traffic import FaultTable

__all__ = ["MeshFaultSync"]

log = logging.getLogger(__name__)
Obj = dict[str, Any]
PREFIX = "sync:"


def _exp_key(obj: Obj) -> str:
    m = obj["metadata"]
    return f"{PREFIX}{obj.get('kind')}/{m['namespace']}/{m['name']}/{m.get('uid') or ''}"


def _injected(obj: Obj) -> list[Obj]:
    recs = ((obj.get("status") or {}).get("experiment") or {}).get("containerRecords") or []
    return [r for r in recs if r.get("phase") == INJECTED]


class MeshFaultSync:
    """Mirrors the leader's injected mesh faults into this server's proxy while ``leading()`` is False."""

    name = "chaos-mesh-sync"

    def __init__(self, client: KubeClient, table: FaultTable, leading: Callable[[], bool],
                 interval_s: float = 1.0) -> None:
        self.client = client
        self.table = table
        self.leading = leading
        self.interval_s = interval_s
        self.tasks = Supervisor("chaos-mesh-sync")
        self._put: dict[str, bytes] = {}  # key -> fingerprint of what was put (spec and member IPs)

    async def start(self) -> None:
        self.tasks.spawn(self._loop(), name="sync")

    async def stop(self) -> None:
        await self.tasks.stop()
        self._drop(set(self._put))

    @property
    def healthy(self) -> bool:
        return self.tasks.healthy

    async def _loop(self) -> None:
        while True:
            try:
                await self.sync_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("chaos: mirroring mesh faults failed; trying again")
            await asyncio.sleep(self.interval_s)

    def _drop(self, keys: set[str]) -> None:
        for k in keys:
            self.table.remove(k)
            self._put.pop(k, None)

    async def sync_once(self) -> None:
        """One pass: the table's ``sync:`` faults made equal to the records (none while leading)."""
        if self.leading():
            self._drop(set(self._put))
            return
        objs = [{**o, "kind": kind} for kind in ("HTTPChaos", "NetworkChaos")
                for o in (await self.client.list(API_VERSION, kind)).items if _injected(o)]
        ips: dict[str, str] = {}
        if objs:
            for p in (await self.client.list("v1", "Pod")).items:
                ip = (p.get("status") or {}).get("podIP")
                if ip and not p["metadata"].get("deletionTimestamp"):
                    ips[f"{p['metadata']['namespace']}/{p['metadata']['name']}"] = str(ip)
        want: set[str] = set()
        for o in objs:
            try:
                want |= self._http(o, ips) if o["kind"] == "HTTPChaos" else self._net(o, ips)
            except ChaosSpecError:
                continue  # the leader refuses it too
        self._drop(set(self._put) - want)

    def _http(self, obj: Obj, ips: dict[str, str]) -> set[str]:
        spec = obj.get("spec") or {}
        keys = set()
        for r in _injected(obj):
            ip = ips.get(str(r["id"]))
            if ip is None:
                continue
            key = f"{_exp_key(obj)}/{r['id']}"
            fp = orjson.dumps([spec, ip], option=orjson.OPT_SORT_KEYS)
            if self._put.get(key) != fp:
                rule = HttpRule(spec)
                self.table.put_http(key, ip, rule.port, rule)
                self._put[key] = fp
            keys.add(key)
        return keys

    def _net(self, obj: Obj, ips: dict[str, str]) -> set[str]:
        spec = obj.get("spec") or {}
        members = {(r.get("selectorKey") == ".Target", str(r["id"]), ips[str(r["id"])])
                   for r in _injected(obj) if str(r["id"]) in ips}
        if not any(not is_target for is_target, _, _ in members):
            return set()
        key = _exp_key(obj)
        fp = orjson.dumps([spec, sorted(members)], option=orjson.OPT_SORT_KEYS)
        if self._put.get(key) != fp:
            rule = NetRule(spec)
            for is_target, rid, ip in members:
                (rule.targets if is_target else rule.sources)[("target:" if is_target else "") + rid] = ip
            self.table.put_net(key, rule)
            self._put[key] = fp
        return {key}
