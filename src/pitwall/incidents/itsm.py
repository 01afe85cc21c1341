"""Outbound sync of incidents to Jira Service Management and ServiceNow, one ticket per incident and system.

A new incident joins the store's ITSM work list in the same write that
creates it (``IncidentStore.track_itsm``). ``ItsmSync`` works off that list in
the background, so the incident flow never waits on a ticketing system. It
watches the incident records in the state store and handles an incident as
soon as its record changes; the whole list is read once when it starts or
takes the lead, after a compacted watch, and every ``poll_interval`` as a
resync; a failed step is retried when its delay is due. Per
incident and system it: creates the ticket (Jira ``POST /rest/api/2/issue``,
ServiceNow ``POST /api/now/table/incident``), adds a comment / work note when
the incident is acknowledged, and resolves the ticket when the incident is
(Jira: the resolve transition, nothing when the issue is already in a done
status; ServiceNow: ``PATCH`` state 6 with close code and notes). Once every ticket is resolved the incident leaves the list.

No duplicate tickets: the ticket's ids are kept on the incident
(``external_references``); before a create is sent the system is marked in
``itsm_pending`` on the incident, and while that mark stands (the create's
outcome is unknown: a timeout, a 5xx, a crash or restart mid-request) the
next attempt first looks the ticket up (Jira: JQL ``labels = pitwall-<id>``;
ServiceNow: ``correlation_id=<id>``) and adopts it. Failures are retried
with doubling delays (``retry_initial`` to ``retry_max``, ``max_attempts``
per step; a change of the incident's status starts the count again), each
recorded as a log entry on the incident and counted in
``pitwall_itsm_sync_failures_total{system}``. With the etcd state store,
several servers may share the work list: only the leader of the
``incidents-itsm`` election syncs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import orjson

from pitwall.core.tasks import Supervisor
from pitwall.incidents.model import ExternalReference, Incident, LogEntry, Service
from pitwall.incidents.settings import ItsmSettings, JiraSettings, ServiceNowSettings
from pitwall.incidents.store import IncidentStore, new_id
from pitwall.storage.revstore import Compacted
from pitwall.storage.revstore.election import Election

__all__ = ["ItsmError", "ItsmSync", "JiraClient", "ServiceNowClient", "TicketSystem"]

log = logging.getLogger(__name__)
_SUMMARY_MAX = 255  # Jira's summary and ServiceNow's short_description limits
_DESCRIPTION_MAX = 30_000
_FOLLOWER_CHECK_S = 0.5  # how often a follower looks whether it leads now


class ItsmError(Exception):
    """A request to a ticketing system failed; the message says which and why."""


@dataclass(frozen=True)
class Ticket:
    external_id: str  # Jira key / ServiceNow number
    ticket_id: str  # Jira issue id / ServiceNow sys_id
    url: str


@dataclass(frozen=True)
class IncidentFacts:
    """What a ticket is made of."""

    incident: Incident
    service: str
    url: str  # the incident in pitwall's REST API

    @property
    def summary(self) -> str:
        return f"[pitwall #{self.incident.number}] {self.incident.title}"[:_SUMMARY_MAX]

    @property
    def description(self) -> str:
        i = self.incident
        return (f"{i.title}\n\npitwall incident {i.id} (#{i.number}) on service {self.service}, "
                f"urgency {i.urgency}, dedup key {i.incident_key}.\n{self.url}")[:_DESCRIPTION_MAX]


class TicketSystem(Protocol):
    """One ITSM system's API, as the sync uses it."""

    name: str

    async def find(self, facts: IncidentFacts) -> Ticket | None: ...

    async def create(self, facts: IncidentFacts) -> Ticket: ...

    async def comment(self, ref: ExternalReference, text: str) -> None: ...

    async def resolve(self, ref: ExternalReference, facts: IncidentFacts) -> None: ...


class _Http:
    """httpx with basic auth, a timeout and a bound on response bodies; errors become ``ItsmError``."""

    def __init__(self, system: str, base: str, user: str, secret: str, *, timeout_s: float, max_bytes: int,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.system = system
        self.max_bytes = max_bytes
        self.client = httpx.AsyncClient(base_url=base, auth=(user, secret), timeout=timeout_s, transport=transport,
                                        headers={"Accept": "application/json"}, follow_redirects=False)

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """The decoded JSON answer (None for an empty one); a non-2xx answer raises with its first 300 bytes."""
        content = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else {}
        try:
            async with self.client.stream(method, path, content=content, headers=headers) as resp:
                raw = bytearray()
                async for chunk in resp.aiter_bytes():
                    raw += chunk
                    if len(raw) > self.max_bytes:
                        raise ItsmError(f"{self.system} {method} {path}: response over {self.max_bytes} bytes")
        except httpx.TimeoutException:
            raise ItsmError(f"{self.system} {method} {path}: timed out") from None
        except httpx.HTTPError as e:
            raise ItsmError(f"{self.system} {method} {path}: {type(e).__name__}: {e}") from None
        if not 200 <= resp.status_code < 300:
            text = bytes(raw[:300]).decode(errors="replace")
            raise ItsmError(f"{self.system} {method} {path}: HTTP {resp.status_code}: {text}")
        if not raw.strip():
            return None
        try:
            return orjson.loads(bytes(raw))
        except orjson.JSONDecodeError:
            raise ItsmError(f"{self.system} {method} {path}: the answer is not JSON") from None

    async def close(self) -> None:
        await self.client.aclose()


def _label(text: str) -> str:
    """A Jira label (no spaces allowed)."""
    return "".join(c if c.isalnum() or c in "-_.:/" else "_" for c in text)[:255] or "unknown"


def _obj(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ItsmError(f"unexpected answer to {what}: {str(v)[:200]}")
    return v


class JiraClient:
    """Jira's REST API v2: issues with labels ``pitwall``, the service and ``pitwall-<incident id>``."""

    name = "jira"

    def __init__(self, cfg: JiraSettings, *, timeout_s: float, max_bytes: int,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.cfg = cfg
        self.http = _Http("jira", cfg.url, cfg.user, cfg.secret, timeout_s=timeout_s, max_bytes=max_bytes,
                          transport=transport)

    def _ticket(self, key: str, id_: str) -> Ticket:
        return Ticket(key, id_, f"{self.cfg.url}/browse/{key}")

    async def find(self, facts: IncidentFacts) -> Ticket | None:
        jql = f'labels = "pitwall-{facts.incident.id}" ORDER BY created ASC'
        got = _obj(await self.http.call("GET", f"/rest/api/2/search?jql={quote(jql)}&fields=key&maxResults=1"),
                   "the issue search")
        issues = got.get("issues") or []
        return self._ticket(str(issues[0]["key"]), str(issues[0]["id"])) if issues else None

    async def create(self, facts: IncidentFacts) -> Ticket:
        fields = {"project": {"key": self.cfg.project_key}, "summary": facts.summary,
                  "description": facts.description, "issuetype": {"name": self.cfg.issue_type},
                  "labels": ["pitwall", _label(facts.service), f"pitwall-{facts.incident.id}"]}
        got = _obj(await self.http.call("POST", "/rest/api/2/issue", {"fields": fields}), "the issue create")
        if "key" not in got or "id" not in got:
            raise ItsmError(f"jira: the issue create answered without key and id: {str(got)[:200]}")
        return self._ticket(str(got["key"]), str(got["id"]))

    async def comment(self, ref: ExternalReference, text: str) -> None:
        await self.http.call("POST", f"/rest/api/2/issue/{quote(ref.external_id)}/comment", {"body": text})

    async def resolve(self, ref: ExternalReference, facts: IncidentFacts) -> None:
        path = f"/rest/api/2/issue/{quote(ref.external_id)}/transitions"
        got = _obj(await self.http.call("GET", path), "the transitions list")
        transitions = [t for t in got.get("transitions") or [] if isinstance(t, dict)]
        chosen = self._pick(transitions)
        if chosen is None and await self._done(ref):
            return  # closed in Jira already: nothing left to move
        if chosen is None:
            names = ", ".join(repr(t.get("name")) for t in transitions) or "none"
            want = self.cfg.resolve_transition or "'Resolve' or 'Done'"
            raise ItsmError(f"jira {ref.external_id}: no transition {want} (available: {names})")
        await self.http.call("POST", path, {"transition": {"id": str(chosen["id"])}})

    async def _done(self, ref: ExternalReference) -> bool:
        """Whether the issue's status is in Jira's "done" category."""
        got = _obj(await self.http.call("GET", f"/rest/api/2/issue/{quote(ref.external_id)}?fields=status"),
                   "the issue read")
        status = (got.get("fields") or {}).get("status") or {}
        return bool((status.get("statusCategory") or {}).get("key") == "done")

    def _pick(self, transitions: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        wanted = [self.cfg.resolve_transition] if self.cfg.resolve_transition else ["Resolve", "Done"]
        for w in wanted:
            for t in transitions:
                if str(t.get("id")) == w or str(t.get("name", "")).casefold() == w.casefold():
                    return t
        return None

    async def close(self) -> None:
        await self.http.close()


class ServiceNowClient:
    """ServiceNow's Table API on the ``incident`` table, ``correlation_id`` = the pitwall incident id."""

    name = "servicenow"

    def __init__(self, cfg: ServiceNowSettings, *, timeout_s: float, max_bytes: int,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.cfg = cfg
        self.http = _Http("servicenow", cfg.url, cfg.user, cfg.secret, timeout_s=timeout_s, max_bytes=max_bytes,
                          transport=transport)

    def _ticket(self, rec: dict[str, Any]) -> Ticket:
        if not rec.get("sys_id"):
            raise ItsmError(f"servicenow: a record without sys_id: {str(rec)[:200]}")
        sys_id = str(rec["sys_id"])
        return Ticket(str(rec.get("number") or sys_id), sys_id,
                      f"{self.cfg.url}/nav_to.do?uri=incident.do?sys_id={sys_id}")

    async def find(self, facts: IncidentFacts) -> Ticket | None:
        query = f"correlation_id={facts.incident.id}"
        got = _obj(await self.http.call("GET", f"/api/now/table/incident?sysparm_query={quote(query)}"
                                               "&sysparm_fields=sys_id,number&sysparm_limit=1"), "the query")
        rows = got.get("result") or []
        return self._ticket(rows[0]) if rows else None

    async def create(self, facts: IncidentFacts) -> Ticket:
        # ServiceNow's 1 = High, 3 = Low for both; priority follows from the two.
        level = "1" if facts.incident.urgency == "high" else "3"
        body = {"short_description": facts.summary, "description": facts.description, "urgency": level,
                "impact": level, "correlation_id": facts.incident.id, "correlation_display": "pitwall"}
        if self.cfg.assignment_group:
            body["assignment_group"] = self.cfg.assignment_group
        if self.cfg.caller_id:
            body["caller_id"] = self.cfg.caller_id
        got = _obj(await self.http.call("POST", "/api/now/table/incident", body), "the incident create")
        return self._ticket(_obj(got.get("result"), "the incident create"))

    async def comment(self, ref: ExternalReference, text: str) -> None:
        await self.http.call("PATCH", f"/api/now/table/incident/{quote(ref.ticket_id)}", {"work_notes": text})

    async def resolve(self, ref: ExternalReference, facts: IncidentFacts) -> None:
        # State 6 is Resolved; ServiceNow's resolve UI policy makes close_code and close_notes mandatory.
        body = {"state": "6", "close_code": self.cfg.close_code,
                "close_notes": f"Resolved in pitwall: incident {facts.incident.id} (#{facts.incident.number}).\n"
                               f"{facts.url}"}
        await self.http.call("PATCH", f"/api/now/table/incident/{quote(ref.ticket_id)}", body)

    async def close(self) -> None:
        await self.http.close()


@dataclass
class _Backoff:
    status: str  # the incident's status when it failed: a new status starts the count again
    failures: int = 0
    next_at: float = 0.0


def _entry(now: int, summary: str, **details: object) -> LogEntry:
    return LogEntry(id=new_id("R"), type="itsm_sync_log_entry",
                    created_ns=now, summary=summary, channel="itsm", details=dict(details))


class ItsmSync:
    """The background sync: creates, comments on and resolves tickets for the incidents on the work list."""

    name = "incidents-itsm"

    def __init__(self, store: IncidentStore, settings: ItsmSettings, systems: Sequence[TicketSystem], *,
                 base_url: str = "", election: Election | None = None) -> None:
        self.store = store
        self.election = election  # several servers on one etcd: only its leader syncs
        self.settings = settings
        self.systems = list(systems)
        self.base_url = base_url.rstrip("/")
        self.tasks = Supervisor("incidents-itsm")
        self.failures: dict[str, int] = {s.name: 0 for s in self.systems}
        self._backoff: dict[tuple[str, str], _Backoff] = {}
        self._dirty: set[str] = set()  # incidents whose records changed since the last pass
        self._retry: set[str] = set()  # incidents with a step to retry when its delay is due
        self._relist = False
        self._wake = asyncio.Event()
        store.track_itsm = True

    async def start(self) -> None:
        if self.election is not None:
            await self.election.start()
        self.tasks.spawn(self._watch(), name="watch")
        self.tasks.spawn(self._run(), name="sync")

    async def stop(self) -> None:
        await self.tasks.stop()
        if self.election is not None:
            await self.election.stop()
        for s in self.systems:
            close = getattr(s, "close", None)
            if close is not None:
                await close()

    async def _watch(self) -> None:
        """Mark every incident whose record changes; a compacted watch asks for a full pass."""
        prefix = self.store.p + "incidents/"
        while True:
            try:
                async for batch in self.store.store.watch(prefix):
                    self._dirty.update(ev.kv.key[len(prefix):] for ev in batch)
                    self._wake.set()
                return  # the store stopped
            except Compacted:
                self._relist = True
                self._wake.set()

    def _next_due(self) -> float | None:
        """When the earliest failed step may be retried (monotonic), if any may."""
        due = [b.next_at for (inc_id, _), b in self._backoff.items()
               if inc_id in self._retry and b.failures < self.settings.max_attempts]
        return min(due) if due else None

    async def _run(self) -> None:
        resync_s = self.settings.poll_interval / 1000
        next_full, was_leader = 0.0, False
        while True:
            if not (self.election is None or self.election.is_leader):
                was_leader = False
                await asyncio.sleep(_FOLLOWER_CHECK_S)  # changes are for the leader; a new one reads all
                continue
            now = time.monotonic()
            due = self._next_due()
            wait = min(next_full - now, (due - now) if due is not None and self._retry else resync_s)
            if wait > 0 and not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            if not (self.election is None or self.election.is_leader):
                continue
            now = time.monotonic()
            full = not was_leader or self._relist or now >= next_full
            was_leader = True
            try:
                if full:
                    self._relist, next_full = False, now + resync_s
                    self._dirty.clear()
                    await self.pass_once()
                else:
                    due = self._next_due()
                    ids = set(self._dirty) | (self._retry if due is not None and due <= now else set())
                    self._dirty.clear()
                    if ids:
                        await self.pass_once(ids)
            except Exception:
                log.exception("ITSM sync pass failed")  # a store hiccup: the next full pass tries again
                next_full = time.monotonic() + resync_s

    async def pass_once(self, ids: set[str] | None = None) -> None:
        """One pass over the work list (or the listed incidents on it), each system on its own (a slow or
        failing one delays no other)."""
        incidents: list[Incident] = []
        for inc_id in await self.store.itsm_work() if ids is None else sorted(ids):
            if ids is not None and not await self.store.itsm_tracked(inc_id):
                self._retry.discard(inc_id)
                continue
            inc = await self.store.get_incident(inc_id)
            if inc is None:
                await self.store.itsm_done(inc_id)
            else:
                incidents.append(inc)
        if ids is None:
            self._retry.clear()
        if not incidents:
            return
        results = await asyncio.gather(*(self._system_pass(s, incidents) for s in self.systems))
        for i, inc in enumerate(incidents):
            states = [r[i] for r in results]
            if all(st == "done" for st in states):
                await self.store.itsm_done(inc.id)
                for key in [k for k in self._backoff if k[0] == inc.id]:
                    del self._backoff[key]
            if any(st == "retry" for st in states):
                self._retry.add(inc.id)
            else:
                self._retry.discard(inc.id)

    async def _system_pass(self, system: TicketSystem, incidents: Sequence[Incident]) -> list[str]:
        """Per incident: "done" (nothing is left for ``system``), "idle" (it waits for a change of the
        incident) or "retry" (a step failed or waits for its delay). After a failure the rest are retried
        with it, so a system that times out costs one timeout per retry, not one per incident."""
        out = ["retry"] * len(incidents)
        for i, inc in enumerate(incidents):
            got = await self._sync(inc, system)
            if got is None:
                break
            out[i] = got
        return out

    async def _facts(self, inc: Incident) -> IncidentFacts:
        svc = await self.store.get(Service, inc.service_id)
        return IncidentFacts(inc, svc.name if svc else inc.service_id, f"{self.base_url}/pagerduty/incidents/{inc.id}")

    async def _sync(self, inc: Incident, system: TicketSystem) -> str | None:
        """Bring ``system``'s ticket in step with the incident: "done" when nothing is left to do for it,
        "idle" when it waits for the incident to change, "retry" while a failed step waits for its delay
        (or has given up: then "idle"), None when it failed just now."""
        inc_id, key = inc.id, (inc.id, system.name)
        b = self._backoff.get(key)
        if b is None or b.status != inc.status:  # e.g. resolved after its acknowledgement comment gave up
            b = self._backoff[key] = _Backoff(inc.status)
        if b.failures >= self.settings.max_attempts:
            return "idle"
        if time.monotonic() < b.next_at:
            return "retry"
        try:
            finished = await self._step(inc_id, system)
        except (ItsmError, KeyError, TypeError) as e:  # the two latter: an answer of an unexpected shape
            await self._failed(inc_id, system.name, b, str(e) if isinstance(e, ItsmError) else
                               f"{system.name}: unexpected answer ({type(e).__name__}: {e})")
            return None
        self._backoff.pop(key, None)
        return "done" if finished else "idle"

    async def _step(self, inc_id: str, system: TicketSystem) -> bool:
        inc = await self.store.require_incident(inc_id)
        facts = await self._facts(inc)
        ref = inc.reference(system.name)
        if ref is None:
            found = await system.find(facts) if system.name in inc.itsm_pending else None
            if found is None:
                await self._mark_pending(inc_id, system.name)
                found = await system.create(facts)
                how = "created"
            else:
                how = "found (an earlier create's outcome was unknown)"
            inc = await self._keep(inc_id, system.name, found, how)
            ref = inc.reference(system.name)
            assert ref is not None
        if inc.status == "acknowledged" and ref.synced == "triggered":
            who = ", ".join(a["user"] for a in inc.acknowledgements if a.get("user")) or "pitwall"
            await system.comment(ref, f"Acknowledged in pitwall by {who}.")
            inc = await self._synced(inc_id, system.name, "acknowledged", f"commented the acknowledgement on "
                                     f"{ref.external_id}")
        if inc.status == "resolved" and ref.synced != "resolved":
            await system.resolve(ref, facts)
            inc = await self._synced(inc_id, system.name, "resolved", f"resolved {ref.external_id}")
        return inc.status == "resolved"

    async def _mark_pending(self, inc_id: str, system: str) -> None:
        async def change(inc: Incident) -> tuple[list[LogEntry], list[Any]] | None:
            if system in inc.itsm_pending:
                return None
            inc.itsm_pending = [*inc.itsm_pending, system]
            return [], []

        await self.store.update_incident(inc_id, change)

    async def _keep(self, inc_id: str, system: str, t: Ticket, how: str) -> Incident:
        now = time.time_ns()

        async def change(inc: Incident) -> tuple[list[LogEntry], list[Any]] | None:
            inc.itsm_pending = [s for s in inc.itsm_pending if s != system]
            if inc.reference(system) is None:
                inc.external_references = [*inc.external_references, ExternalReference(
                    system=system, external_id=t.external_id, ticket_id=t.ticket_id, external_url=t.url,
                    created_ns=now)]
            return [_entry(now, f"{_NAMES[system]} ticket {t.external_id} {how}", system=system,
                           external_id=t.external_id, ticket_id=t.ticket_id)], []

        return await self.store.update_incident(inc_id, change)

    async def _synced(self, inc_id: str, system: str, status: str, what: str) -> Incident:
        now = time.time_ns()

        async def change(inc: Incident) -> tuple[list[LogEntry], list[Any]] | None:
            ref = inc.reference(system)
            if ref is None:
                return None
            ref.synced = status  # type: ignore[assignment]
            return [_entry(now, f"{_NAMES[system]}: {what}", system=system, external_id=ref.external_id)], []

        return await self.store.update_incident(inc_id, change)

    async def _failed(self, inc_id: str, system: str, b: _Backoff, why: str) -> None:
        b.failures += 1
        self.failures[system] = self.failures.get(system, 0) + 1
        delay_ms = min(self.settings.retry_initial * 2 ** (b.failures - 1), self.settings.retry_max)
        b.next_at = time.monotonic() + delay_ms / 1000
        last = b.failures >= self.settings.max_attempts
        then = "giving up until the incident's status changes or pitwall restarts" if last else f"retrying in {delay_ms / 1000:g}s"
        log.warning("ITSM sync failed", extra={"incident": inc_id, "system": system, "error": why})
        try:
            await self.store.add_log(inc_id, _entry(time.time_ns(), f"{_NAMES[system]} sync failed "
                                                    f"(attempt {b.failures}): {why[:500]}; {then}",
                                                    system=system, error=why[:2000], attempt=b.failures))
        except Exception:
            log.exception("could not record the ITSM failure", extra={"incident": inc_id})


_NAMES = {"jira": "Jira", "servicenow": "ServiceNow"}


def build_systems(settings: ItsmSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> list[TicketSystem]:
    """The configured systems' clients."""
    t_s, cap = settings.timeout / 1000, settings.max_response_bytes
    out: list[TicketSystem] = []
    if settings.jira is not None:
        out.append(JiraClient(settings.jira, timeout_s=t_s, max_bytes=cap, transport=transport))
    if settings.servicenow is not None:
        out.append(ServiceNowClient(settings.servicenow, timeout_s=t_s, max_bytes=cap, transport=transport))
    return out
