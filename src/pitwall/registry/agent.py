"""The local agent's services and checks: register/deregister, TTL, HTTP and TCP checks.

Services and checks are keys under ``AGENT_PREFIX`` (so they survive a
restart and every blocking catalog/health query sees them change). A check's
status is written only when it changes, so indexes move on real changes
only. ``CheckRunner`` ticks once a second: TTL checks whose TTL ran out turn
critical, HTTP and TCP checks run at their interval (each bounded by its
timeout), and a service whose check stayed critical for longer than its
``DeregisterCriticalServiceAfter`` is deregistered.

Servers sharing the state store are one agent: the runner runs on the controllers' election leader only (one
probe per interval, one writer of each status), and a TTL update, which any server may take, is a heartbeat key
under ``TTL_BEATS`` (outside ``AGENT_PREFIX``, so it wakes no blocking query) that the leader's runner reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from pitwall.core.tasks import Supervisor
from pitwall.registry.blocking import parse_go_duration
from pitwall.registry.model import ROOT, ConsulError
from pitwall.storage.revstore import RevStore

__all__ = ["AGENT_PREFIX", "AgentServices", "CheckDef", "CheckRunner"]

AGENT_PREFIX = ROOT + "agent/"
SERVICES = AGENT_PREFIX + "services/"
CHECKS = AGENT_PREFIX + "checks/"
TTL_BEATS = ROOT + "ttl-beats/"  # check id -> the wall-clock time of its last TTL update
STATUSES = ("passing", "warning", "critical")
MAX_OUTPUT = 4096  # Consul truncates check output (4 KiB by default)
MAX_SERVICES = 10_000
log = logging.getLogger(__name__)


def lower_keys(d: Any) -> dict[str, Any]:
    """Consul decodes service and check definitions case-insensitively (py-consul sends ``ttl``, ``id``)."""
    if not isinstance(d, dict):
        raise ConsulError(400, "Request decode failed: expected a JSON object")
    return {str(k).lower(): v for k, v in d.items()}


def _dur(d: dict[str, Any], name: str) -> float:
    raw = d.get(name)
    if raw in (None, ""):
        return 0.0
    try:
        return parse_go_duration(str(raw)) if isinstance(raw, str) else float(raw) / 1e9
    except ValueError as e:
        raise ConsulError(400, f"Request decode failed: {name}: {e}") from None


@dataclass
class CheckDef:
    """One check as stored: its definition and its current status."""

    id: str
    name: str
    service_id: str
    service_name: str
    ttl_s: float = 0.0
    http: str = ""
    method: str = "GET"
    header: dict[str, list[str]] = field(default_factory=dict)
    tcp: str = ""
    interval_s: float = 0.0
    timeout_s: float = 10.0
    deregister_after_s: float = 0.0
    status: str = "critical"
    output: str = ""
    notes: str = ""

    def kind(self) -> str:
        return "ttl" if self.ttl_s else "http" if self.http else "tcp" if self.tcp else ""

    def to_json(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @staticmethod
    def from_json(raw: bytes) -> CheckDef:
        return CheckDef(**orjson.loads(raw))

    def to_api(self, node: str, index: tuple[int, int] = (0, 0)) -> dict[str, Any]:
        return {"Node": node, "CheckID": self.id, "Name": self.name, "Status": self.status, "Notes": self.notes,
                "Output": self.output, "ServiceID": self.service_id, "ServiceName": self.service_name,
                "ServiceTags": [], "Type": self.kind(), "CreateIndex": index[0], "ModifyIndex": index[1]}


def parse_check(raw: Any, *, service_id: str, service_name: str, default_id: str) -> CheckDef:
    d = lower_keys(raw)
    cid = str(d.get("checkid") or d.get("id") or default_id)
    c = CheckDef(id=cid, name=str(d.get("name") or (f"Service '{service_name}' check" if service_name else cid)),
                 service_id=service_id, service_name=service_name, ttl_s=_dur(d, "ttl"),
                 http=str(d.get("http") or ""), method=str(d.get("method") or "GET"),
                 header={str(k): [str(x) for x in v] for k, v in (d.get("header") or {}).items()},
                 tcp=str(d.get("tcp") or ""), interval_s=_dur(d, "interval"), timeout_s=_dur(d, "timeout") or 10.0,
                 deregister_after_s=_dur(d, "deregistercriticalserviceafter"),
                 status=str(d.get("status") or "critical"), notes=str(d.get("notes") or ""))
    if c.status not in STATUSES:
        raise ConsulError(400, f"Invalid check status: {c.status!r}")
    if sum(1 for x in (c.ttl_s, c.http, c.tcp) if x) != 1:
        raise ConsulError(400, "Invalid check: exactly one of TTL, HTTP or TCP is supported")
    if (c.http or c.tcp) and c.interval_s <= 0:
        raise ConsulError(400, "Invalid check: HTTP and TCP checks need an Interval")
    c.interval_s = max(c.interval_s, 1.0)  # Consul's minimum check interval
    return c


class AgentServices:
    """Registered services and checks of this agent, in the store."""

    def __init__(self, store: RevStore, node: str) -> None:
        self.store = store
        self.node = node

    async def register(self, body: Any) -> None:
        d = lower_keys(body)
        name = d.get("name")
        if not isinstance(name, str) or not name:
            raise ConsulError(400, "Missing service name")
        sid = str(d.get("id") or name)
        port = d.get("port") or 0
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConsulError(400, f"Invalid service port {port!r}")
        tags = d.get("tags") or []
        meta = d.get("meta") or {}
        if not isinstance(tags, list) or not isinstance(meta, dict):
            raise ConsulError(400, "Request decode failed: Tags is a list and Meta an object")
        raw_checks = ([d["check"]] if d.get("check") else []) + list(d.get("checks") or [])
        checks = [parse_check(c, service_id=sid, service_name=name,
                              default_id=f"service:{sid}" + (f":{i + 1}" if len(raw_checks) > 1 else ""))
                  for i, c in enumerate(raw_checks)]
        existing = await self.store.range(SERVICES, limit=1)
        if existing.count >= MAX_SERVICES and await self.store.get(SERVICES + sid) is None:
            raise ConsulError(429, f"too many agent services ({MAX_SERVICES})")
        svc = {"ID": sid, "Service": name, "Tags": [str(t) for t in tags], "Address": str(d.get("address") or ""),
               "Port": port, "Meta": {str(k): str(v) for k, v in meta.items()}}
        await self.store.put(SERVICES + sid, orjson.dumps(svc))
        old = await self.checks_of(sid)
        keep = {c.id for c in checks}
        for c in old:
            if c.id not in keep:
                await self._delete_check(c.id)
        for raw, c in zip(raw_checks, checks, strict=True):
            prev = await self.check(c.id)
            if prev is not None and "status" not in lower_keys(raw):
                c.status, c.output = prev.status, prev.output  # re-registering keeps the known status
            await self.store.put(CHECKS + c.id, c.to_json())

    async def deregister(self, sid: str) -> None:
        if await self.store.get(SERVICES + sid) is None:
            raise ConsulError(404, f'Unknown service ID "{sid}". Ensure that the service ID is passed, not the '
                                   "service name.")
        for c in await self.checks_of(sid):
            await self._delete_check(c.id)
        await self.store.delete(SERVICES + sid)

    async def services(self) -> tuple[list[tuple[dict[str, Any], int, int]], int]:
        res = await self.store.range(SERVICES)
        out = [(orjson.loads(kv.value), kv.create_revision, kv.mod_revision) for kv in res.kvs]
        return out, max((m for _, _, m in out), default=0)

    async def all_checks(self) -> tuple[list[tuple[CheckDef, int, int]], int]:
        res = await self.store.range(CHECKS)
        out = [(CheckDef.from_json(kv.value), kv.create_revision, kv.mod_revision) for kv in res.kvs]
        return out, max((m for _, _, m in out), default=0)

    async def checks_of(self, sid: str) -> list[CheckDef]:
        return [c for c, _, _ in (await self.all_checks())[0] if c.service_id == sid]

    async def check(self, cid: str) -> CheckDef | None:
        kv = await self.store.get(CHECKS + cid)
        return CheckDef.from_json(kv.value) if kv else None

    async def put_check(self, c: CheckDef) -> None:
        """A check of its own (``/v1/agent/check/register``), or one replacing a check of the same ID."""
        await self.store.put(CHECKS + c.id, c.to_json())

    async def delete_check(self, cid: str) -> None:
        if not await self._delete_check(cid):
            raise ConsulError(404, f'Unknown check ID "{cid}". Ensure that the check ID is passed, not the check '
                                   "name.")

    async def _delete_check(self, cid: str) -> bool:
        await self.store.delete(TTL_BEATS + cid)
        return bool(await self.store.delete(CHECKS + cid))

    async def ttl_beats(self) -> dict[str, float]:
        """Each TTL check's last update (wall-clock seconds), whichever server took it."""
        res = await self.store.range(TTL_BEATS)
        return {kv.key[len(TTL_BEATS):]: float(kv.value) for kv in res.kvs}

    async def set_status(self, cid: str, status: str, output: str, *, ttl_only: bool) -> CheckDef:
        c = await self.check(cid)
        if c is None:
            raise ConsulError(404, f'Unknown check ID "{cid}". Ensure that the check ID is passed, not the check '
                                   "name.")
        if ttl_only and not c.ttl_s:
            raise ConsulError(500, f'CheckID "{cid}" does not have associated TTL')
        if status not in STATUSES:
            raise ConsulError(400, f'Invalid check status: "{status}"')
        output = output[:MAX_OUTPUT]
        if ttl_only:  # the TTL starts again: every server's runner (the leader's runs) sees it
            await self.store.put(TTL_BEATS + cid, repr(time.time()).encode())
        if (c.status, c.output) != (status, output):
            c.status, c.output = status, output
            await self.store.put(CHECKS + cid, c.to_json())
        return c


class CheckRunner:
    """Runs the agent's checks: TTL deadlines, HTTP and TCP probes, critical-service deregistration."""

    name = "consul-checks"

    def __init__(self, services: AgentServices, *, tick_s: float = 1.0,
                 leading: Callable[[], bool] | None = None) -> None:
        self.services = services
        self.tick_s = tick_s
        self.leading = leading  # servers sharing the state: only the election's leader runs the checks
        self.tasks = Supervisor(self.name)
        self._first_seen: dict[str, float] = {}  # TTL checks never updated: their TTL runs from here
        self._next_run: dict[str, float] = {}
        self._critical_since: dict[str, float] = {}
        self._running: set[str] = set()

    async def start(self) -> None:
        self.tasks.spawn(self._loop(), name="consul-check-runner")

    async def stop(self) -> None:
        await self.tasks.stop()

    async def _loop(self) -> None:
        while True:
            try:
                await self.pass_once()
            except Exception:
                log.exception("consul check pass failed")
            await asyncio.sleep(self.tick_s)

    async def pass_once(self) -> None:
        if self.leading is not None and not self.leading():
            for table in (self._first_seen, self._next_run, self._critical_since):
                table.clear()  # a new leader starts from the store
            return
        now, wall = time.monotonic(), time.time()
        checks, _ = await self.services.all_checks()
        beats = await self.services.ttl_beats() if any(c.ttl_s for c, _, _ in checks) else {}
        live = {c.id for c, _, _ in checks}
        for table in (self._first_seen, self._next_run, self._critical_since):
            for cid in [k for k in table if k not in live]:
                del table[cid]
        for c, _, _ in checks:
            if c.ttl_s:
                deadline = beats.get(c.id, self._first_seen.setdefault(c.id, wall)) + c.ttl_s
                if wall > deadline and c.status != "critical":
                    await self.services.set_status(c.id, "critical", "TTL expired", ttl_only=False)
                    c.status = "critical"
            elif now >= self._next_run.get(c.id, 0.0) and c.id not in self._running:
                self._next_run[c.id] = now + c.interval_s
                self._running.add(c.id)
                self.tasks.spawn(self._probe(c), name=f"consul-check {c.id}", loop=False)
            await self._maybe_deregister(c, now)

    async def _maybe_deregister(self, c: CheckDef, now: float) -> None:
        if c.status != "critical":
            self._critical_since.pop(c.id, None)
            return
        since = self._critical_since.setdefault(c.id, now)
        if c.deregister_after_s and now - since >= c.deregister_after_s and c.service_id:
            log.info("deregistering a service whose check stayed critical",
                     extra={"service": c.service_id, "check": c.id})
            with contextlib.suppress(ConsulError):
                await self.services.deregister(c.service_id)

    async def _probe(self, c: CheckDef) -> None:
        try:
            status, output = await (self._http(c) if c.http else self._tcp(c))
            with contextlib.suppress(ConsulError):  # deregistered meanwhile
                await self.services.set_status(c.id, status, output, ttl_only=False)
        finally:
            self._running.discard(c.id)

    @staticmethod
    async def _http(c: CheckDef) -> tuple[str, str]:
        """Consul's rule: 2xx passing, 429 warning, anything else critical."""
        try:
            async with httpx.AsyncClient(timeout=c.timeout_s, follow_redirects=True) as client:
                r = await client.request(c.method, c.http, headers={k: ",".join(v) for k, v in c.header.items()})
        except httpx.HTTPError as e:
            return "critical", f"Get \"{c.http}\": {e}"
        body = r.text[:MAX_OUTPUT]
        out = f"HTTP {c.method} {c.http}: {r.status_code} {r.reason_phrase} Output: {body}"[:MAX_OUTPUT]
        if 200 <= r.status_code < 300:
            return "passing", out
        return ("warning" if r.status_code == 429 else "critical"), out

    @staticmethod
    async def _tcp(c: CheckDef) -> tuple[str, str]:
        host, _, port = c.tcp.rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), c.timeout_s)
        except (OSError, ValueError, TimeoutError) as e:
            return "critical", f"dial tcp {c.tcp}: {e}"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return "passing", f"TCP connect {c.tcp}: Success"
