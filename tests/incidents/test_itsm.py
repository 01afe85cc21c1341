"""ITSM: incidents synced to Jira and ServiceNow (a recording stub of both), and change records.

The stub is a Starlette app on 127.0.0.1 that answers as Jira's REST API v2
and ServiceNow's Table API do (issue ids and keys, ``sys_id`` and numbers,
the transitions list), records every request, and can fail or hang a create
on demand. pitwall runs live (uvicorn) with ``incidents.itsm`` pointed at it;
events go in through the Events API v2.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pitwall.config import ConfigError, load_settings
from pitwall.incidents.change_records import change_record
from pitwall.incidents.changes import ChangeEvent, ChangeLog
from pitwall.incidents.itsm import ItsmSync, build_systems
from pitwall.incidents.model import Incident, Service
from pitwall.incidents.service import IncidentService
from pitwall.incidents.store import IncidentStore
from pitwall.incidents.wiring import apply_settings
from pitwall.storage.revstore import Op
from pitwall.storage.revstore.election import Election
from pitwall.storage.revstore.sqlite import SqliteRevStore
from tests.conftest import LiveServer, free_port
from tests.incidents.conftest import ROUTING_KEY, TOKEN, incidents_config, pd_settings

pytestmark = pytest.mark.timeout(120)

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Stub:
    """What the stub saw and holds; ``fail``/``hang`` name creates to answer 500 / answer late (after creating)."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    issues: list[dict[str, Any]] = field(default_factory=list)
    tickets: list[dict[str, Any]] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)
    hang: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self, method: str, path_re: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["method"] == method and re.fullmatch(path_re, r["path"])]


def _app(stub: Stub) -> Starlette:
    async def record(request: Request) -> dict[str, Any]:
        raw = await request.body()
        rec = {"method": request.method, "path": request.url.path, "query": dict(request.query_params),
               "auth": request.headers.get("authorization", ""), "json": None}
        if raw:
            rec["json"] = orjson.loads(raw)
        with stub.lock:
            stub.requests.append(rec)
        return rec

    async def should_fail(system: str) -> bool:
        with stub.lock:
            if stub.fail.get(system, 0) > 0:
                stub.fail[system] -= 1
                return True
        return False

    async def late(system: str) -> None:
        with stub.lock:
            delay = stub.hang.pop(system, 0.0)
        if delay:
            await asyncio.sleep(delay)

    async def jira_create(request: Request) -> Response:
        rec = await record(request)
        if await should_fail("jira"):
            return JSONResponse({"errorMessages": ["Internal server error"], "errors": {}}, 500)
        with stub.lock:
            n = len(stub.issues) + 1
            issue = {"id": str(10_000 + n), "key": f"OPS-{n}", "fields": rec["json"]["fields"], "status": "Open",
                     "comments": []}
            stub.issues.append(issue)
        await late("jira")
        return JSONResponse({"id": issue["id"], "key": issue["key"],
                             "self": f"http://stub/rest/api/2/issue/{issue['id']}"}, 201)

    async def jira_search(request: Request) -> Response:
        rec = await record(request)
        m = re.search(r'labels\s*=\s*"?([\w.-]+)"?', rec["query"].get("jql", ""))
        with stub.lock:
            found = [i for i in stub.issues if m and m.group(1) in i["fields"]["labels"]]
        return JSONResponse({"startAt": 0, "maxResults": 1, "total": len(found),
                             "issues": [{"id": i["id"], "key": i["key"]} for i in found[:1]]})

    def issue_of(key: str) -> dict[str, Any] | None:
        return next((i for i in stub.issues if i["key"] == key), None)

    async def jira_transitions(request: Request) -> Response:
        rec = await record(request)
        issue = issue_of(request.path_params["key"])
        if issue is None:
            return JSONResponse({"errorMessages": ["Issue does not exist"], "errors": {}}, 404)
        if request.method == "GET":  # a resolved issue has nowhere to go in this workflow
            return JSONResponse({"expand": "transitions", "transitions": [] if issue["status"] == "Resolved" else [
                {"id": "11", "name": "In Progress", "to": {"name": "In Progress"}},
                {"id": "31", "name": "Resolve", "to": {"name": "Resolved"}}]})
        issue["status"] = {"11": "In Progress", "31": "Resolved"}[rec["json"]["transition"]["id"]]
        return Response(status_code=204)

    async def jira_issue(request: Request) -> Response:
        await record(request)
        issue = issue_of(request.path_params["key"])
        if issue is None:
            return JSONResponse({"errorMessages": ["Issue does not exist"], "errors": {}}, 404)
        category = "done" if issue["status"] == "Resolved" else "indeterminate"
        return JSONResponse({"id": issue["id"], "key": issue["key"], "fields": {"status": {
            "name": issue["status"], "statusCategory": {"key": category}}}})

    async def jira_comment(request: Request) -> Response:
        rec = await record(request)
        issue = issue_of(request.path_params["key"])
        if issue is None:
            return JSONResponse({"errorMessages": ["Issue does not exist"], "errors": {}}, 404)
        issue["comments"].append(rec["json"]["body"])
        return JSONResponse({"id": "1", "body": rec["json"]["body"]}, 201)

    async def snow_table(request: Request) -> Response:
        rec = await record(request)
        if request.method == "GET":
            q = rec["query"].get("sysparm_query", "")
            want = q.removeprefix("correlation_id=")
            with stub.lock:
                rows = [t for t in stub.tickets if t["correlation_id"] == want]
            return JSONResponse({"result": [{"sys_id": t["sys_id"], "number": t["number"]} for t in rows[:1]]})
        if await should_fail("servicenow"):
            return JSONResponse({"error": {"message": "boom", "detail": ""}, "status": "failure"}, 500)
        with stub.lock:
            ticket = {**rec["json"], "sys_id": secrets.token_hex(16), "number": f"INC{10_000 + len(stub.tickets)}",
                      "state": "1"}
            stub.tickets.append(ticket)
        await late("servicenow")
        return JSONResponse({"result": ticket}, 201)

    async def snow_record(request: Request) -> Response:
        rec = await record(request)
        with stub.lock:
            ticket = next((t for t in stub.tickets if t["sys_id"] == request.path_params["sys_id"]), None)
            if ticket is None:
                return JSONResponse({"error": {"message": "No Record found"}, "status": "failure"}, 404)
            ticket.update(rec["json"])
        return JSONResponse({"result": ticket})

    return Starlette(routes=[
        Route("/rest/api/2/issue", jira_create, methods=["POST"]),
        Route("/rest/api/2/search", jira_search, methods=["GET"]),
        Route("/rest/api/2/issue/{key}/transitions", jira_transitions, methods=["GET", "POST"]),
        Route("/rest/api/2/issue/{key}/comment", jira_comment, methods=["POST"]),
        Route("/rest/api/2/issue/{key}", jira_issue, methods=["GET"]),
        Route("/api/now/table/incident", snow_table, methods=["GET", "POST"]),
        Route("/api/now/table/incident/{sys_id}", snow_record, methods=["PATCH"]),
    ])


@pytest.fixture
def stub() -> Iterator[tuple[Stub, str]]:
    """The recording stub on a free port: (its state, its base URL)."""
    state = Stub()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_app(state), host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield state, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def itsm_config(url: str, **extra: Any) -> dict[str, Any]:
    return {"jira": {"url": url, "project_key": "OPS", "user": "bot@example.com", "token": "jira-api-token"},
            "servicenow": {"url": url, "user": "pitwall", "password": "snow-secret", "assignment_group": "SRE",
                           "caller_id": "pitwall.bot"},
            "poll_interval": "50ms", "retry_initial": "100ms", "retry_max": "500ms", "timeout": "5s", **extra}


def live(tmp_path: Path, url: str, **extra: Any) -> LiveServer:
    srv = LiveServer(pd_settings(tmp_path, tokens=True, itsm=itsm_config(url, **extra)))
    srv.start()
    return srv


def event(action: str, dedup: str) -> dict[str, Any]:
    return {"routing_key": ROUTING_KEY, "event_action": action, "dedup_key": dedup,
            "payload": {"summary": "checkout p99 over 2s", "source": "web-1", "severity": "critical",
                        "component": "web"}}


def send(srv: LiveServer, action: str, dedup: str) -> None:
    r = httpx.post(f"{srv.url}/v2/enqueue", json=event(action, dedup), headers=AUTH)
    assert r.status_code == 202, r.text


def incident(srv: LiveServer, dedup: str) -> dict[str, Any]:
    r = httpx.get(f"{srv.url}/pagerduty/incidents", headers={**AUTH, "Authorization": f"Token token={TOKEN}"},
                  params={"limit": 100})
    (inc,) = [i for i in r.json()["incidents"] if i["incident_key"] == dedup]
    full = httpx.get(f"{srv.url}/pagerduty/incidents/{inc['id']}", headers={"Authorization": f"Token token={TOKEN}"})
    return dict(full.json()["incident"])


def log_entries(srv: LiveServer, inc_id: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{srv.url}/pagerduty/incidents/{inc_id}/log_entries", params={"limit": 100},
                  headers={"Authorization": f"Token token={TOKEN}"})
    return list(r.json()["log_entries"])


def until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def refs(srv: LiveServer, dedup: str) -> dict[str, dict[str, Any]]:
    return {r["webhook"]["id"]: r for r in incident(srv, dedup)["external_references"]}


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


# --- the sync ------------------------------------------------------------------------------------------------


# With a resync period of an hour every step still happens at once: the sync follows the store's watch.
@pytest.mark.parametrize("resync", ["50ms", "1h"])
def test_trigger_acknowledge_resolve(tmp_path: Path, stub: tuple[Stub, str], resync: str) -> None:
    state, url = stub
    srv = live(tmp_path, url, poll_interval=resync)
    try:
        send(srv, "trigger", "p99")
        got = until(lambda: len(r := refs(srv, "p99")) == 2 and r, "both tickets")
        inc = incident(srv, "p99")
        # One Jira issue with the fields pitwall promised, by basic auth.
        (create,) = state.seen("POST", "/rest/api/2/issue")
        f = create["json"]["fields"]
        assert (f["project"], f["issuetype"], create["auth"]) == (
            {"key": "OPS"}, {"name": "Incident"}, basic("bot@example.com", "jira-api-token"))
        assert f["summary"] == "[pitwall #1] checkout p99 over 2s"
        assert f["labels"] == ["pitwall", "web", f"pitwall-{inc['id']}"]
        assert inc["id"] in f["description"] and "urgency high" in f["description"]
        assert state.seen("GET", "/rest/api/2/search") == []  # nothing was unknown: no lookup
        assert got["jira"]["external_id"] == "OPS-1" and got["jira"]["external_url"] == f"{url}/browse/OPS-1"
        assert got["jira"]["type"] == "external_reference"
        # One ServiceNow incident, correlated with the pitwall incident.
        (snow,) = state.seen("POST", "/api/now/table/incident")
        body = snow["json"]
        assert (body["correlation_id"], body["urgency"], body["impact"], body["assignment_group"],
                body["caller_id"]) == (inc["id"], "1", "1", "SRE", "pitwall.bot")
        assert body["short_description"] == "[pitwall #1] checkout p99 over 2s"
        assert snow["auth"] == basic("pitwall", "snow-secret")
        assert got["servicenow"]["external_id"] == state.tickets[0]["number"]
        assert got["servicenow"]["pitwall"]["ticket_id"] == state.tickets[0]["sys_id"]

        send(srv, "acknowledge", "p99")
        until(lambda: state.issues[0]["comments"] and state.tickets[0].get("work_notes"), "ack comments")
        assert "Acknowledged in pitwall" in state.issues[0]["comments"][0]

        send(srv, "resolve", "p99")
        until(lambda: state.issues[0]["status"] == "Resolved" and state.tickets[0]["state"] == "6", "resolution")
        (move,) = state.seen("POST", r"/rest/api/2/issue/OPS-1/transitions")
        assert move["json"] == {"transition": {"id": "31"}}  # "Resolve", looked up by name
        t = state.tickets[0]
        assert t["close_code"] == "Solution provided" and inc["id"] in t["close_notes"]
        done = until(lambda: all(r["pitwall"]["synced_status"] == "resolved" for r in refs(srv, "p99").values())
                     and refs(srv, "p99"), "resolved refs")
        assert set(done) == {"jira", "servicenow"}
        # Off the work list: later passes send nothing more.
        n = len(state.requests)
        time.sleep(0.5)
        assert len(state.requests) == n
        assert [e["summary"] for e in log_entries(srv, inc["id"]) if e["type"] == "itsm_sync_log_entry"]
        draft = httpx.get(f"{srv.url}/pagerduty/incidents/{inc['id']}/postmortem", headers=AUTH).text
        assert f"- Tickets: Jira [OPS-1]({url}/browse/OPS-1), ServiceNow [{t['number']}](" in draft
    finally:
        srv.stop()


@pytest.mark.parametrize("resync", ["50ms", "1h"])  # retries come when their delay is due, not at a resync
def test_failed_creates_make_exactly_one_ticket(tmp_path: Path, stub: tuple[Stub, str], resync: str) -> None:
    """Jira answers the first create 500; ServiceNow creates but answers after pitwall's timeout."""
    state, url = stub
    state.fail["jira"] = 1
    state.hang["servicenow"] = 3.0
    srv = live(tmp_path, url, timeout="1s", poll_interval=resync)
    try:
        send(srv, "trigger", "disk")
        got = until(lambda: len(r := refs(srv, "disk")) == 2 and r, "both tickets")
        assert len(state.issues) == 1 and len(state.tickets) == 1
        assert len(state.seen("POST", "/rest/api/2/issue")) == 2  # the 500, then the one that worked
        # The retry looked for an issue from the first attempt before creating again.
        (search,) = state.seen("GET", "/rest/api/2/search")
        inc = incident(srv, "disk")
        assert f"pitwall-{inc['id']}" in search["query"]["jql"]
        # ServiceNow's create timed out: the retry found its ticket by correlation id and sent no second create.
        assert len(state.seen("POST", "/api/now/table/incident")) == 1
        (query,) = state.seen("GET", "/api/now/table/incident")
        assert query["query"]["sysparm_query"] == f"correlation_id={inc['id']}"
        assert got["servicenow"]["pitwall"]["ticket_id"] == state.tickets[0]["sys_id"]
        entries = [e["summary"] for e in log_entries(srv, inc["id"])]
        assert any(s.startswith("Jira sync failed (attempt 1)") and "HTTP 500" in s for s in entries)
        assert any(s.startswith("ServiceNow sync failed (attempt 1)") and "timed out" in s for s in entries)
        metrics = httpx.get(f"{srv.url}/metrics", headers=AUTH).text
        assert 'pitwall_itsm_sync_failures_total{system="jira"} 1.0' in metrics
        assert 'pitwall_itsm_sync_failures_total{system="servicenow"} 1.0' in metrics
    finally:
        srv.stop()


def test_a_failing_system_delays_no_other(tmp_path: Path, stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.fail["servicenow"] = 10_000
    srv = live(tmp_path, url)
    try:
        for key in ("a", "b", "c"):
            send(srv, "trigger", key)
        until(lambda: len(state.issues) == 3, "a Jira issue per incident")
        assert all(set(refs(srv, key)) == {"jira"} for key in ("a", "b", "c"))
        assert state.tickets == []
        send(srv, "resolve", "b")
        until(lambda: [i["status"] for i in state.issues] == ["Open", "Resolved", "Open"], "b's issue resolved")
    finally:
        srv.stop()


def test_issue_closed_in_jira_first(tmp_path: Path, stub: tuple[Stub, str]) -> None:
    """Someone resolved the issue in Jira; resolving the incident finds no transition, sees it done, and stops."""
    state, url = stub
    srv = live(tmp_path, url)
    try:
        send(srv, "trigger", "closed")
        until(lambda: "jira" in refs(srv, "closed"), "the issue")
        state.issues[0]["status"] = "Resolved"
        send(srv, "resolve", "closed")
        until(lambda: refs(srv, "closed")["jira"]["pitwall"]["synced_status"] == "resolved", "synced")
        assert state.seen("POST", r"/rest/api/2/issue/OPS-1/transitions") == []
        assert len(state.seen("GET", r"/rest/api/2/issue/OPS-1")) == 1
        inc = incident(srv, "closed")
        assert not [e for e in log_entries(srv, inc["id"]) if "failed" in e["summary"]]
    finally:
        srv.stop()


def test_gives_up_after_max_attempts_until_the_incident_changes(tmp_path: Path, stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.fail["jira"] = 2
    srv = live(tmp_path, url, max_attempts=2)
    try:
        send(srv, "trigger", "flaky")
        inc = incident(srv, "flaky")
        until(lambda: any("giving up" in e["summary"] for e in log_entries(srv, inc["id"])), "giving up")
        time.sleep(0.6)  # several passes and the longest retry delay: nothing more is sent
        assert len(state.seen("POST", "/rest/api/2/issue")) == 2 and state.issues == []
        send(srv, "acknowledge", "flaky")  # a new status: the sync tries again, creates, then comments
        until(lambda: state.issues and state.issues[0]["comments"], "the ticket and its comment")
        # Each attempt after the first 500 searched first (its outcome was unknown).
        assert len(state.issues) == 1 and len(state.seen("GET", "/rest/api/2/search")) == 2
    finally:
        srv.stop()


def test_restart_mid_create_does_not_duplicate(tmp_path: Path, stub: tuple[Stub, str]) -> None:
    """pitwall stops while ServiceNow's create is in flight (the ticket exists); the next start adopts it."""
    state, url = stub
    state.hang["servicenow"] = 20.0
    srv = live(tmp_path, url, timeout="60s")
    try:
        send(srv, "trigger", "db")
        until(lambda: state.tickets and refs(srv, "db").get("jira"), "jira done and the ServiceNow create sent")
        assert "servicenow" not in refs(srv, "db")
        srv.stop()  # the create is still waiting for its answer
        srv.start()
        got = until(lambda: len(r := refs(srv, "db")) == 2 and r, "both tickets after the restart")
        assert len(state.seen("POST", "/api/now/table/incident")) == 1
        assert len(state.seen("POST", "/rest/api/2/issue")) == 1  # Jira's ticket was kept: not sent again
        assert got["servicenow"]["pitwall"]["ticket_id"] == state.tickets[0]["sys_id"]
        send(srv, "resolve", "db")
        until(lambda: state.tickets[0]["state"] == "6" and state.issues[0]["status"] == "Resolved", "resolution")
    finally:
        srv.stop()


async def test_servers_sharing_a_store_sync_once(tmp_path: Path, stub: tuple[Stub, str]) -> None:
    """Two syncs over one store (as two servers on one etcd): only the election's leader sends; when it stops,
    the other takes over."""
    state, url = stub
    store = SqliteRevStore(tmp_path / "s.db", compact_interval_s=None)
    await store.start()
    cfg = load_settings(data_dir=tmp_path, incidents={**incidents_config(), "itsm": itsm_config(url)}).incidents
    stores = [IncidentStore(store), IncidentStore(store)]
    # A lease long enough that a loaded machine's slow keep-alive never hands leadership over mid-test
    # (the takeover below is by resigning).
    syncs = [ItsmSync(s, cfg.itsm, build_systems(cfg.itsm), election=Election(store, "incidents-itsm", f"srv{i}",
                                                                                ttl_s=15))
             for i, s in enumerate(stores)]
    await apply_settings(stores[0], cfg)
    service = IncidentService(stores[1], ChangeLog(store))
    web = await stores[0].get(Service, "PWEB001")
    assert web is not None

    async def wait(check: Callable[[], bool], what: str) -> None:
        for _ in range(600):
            if check():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    try:
        for sync in syncs:
            await sync.start()
        for i in range(4):
            await service.trigger(web, f"k{i}", None, time.time_ns(), title=f"incident {i}")
        await wait(lambda: len(state.issues) == 4 and len(state.tickets) == 4, "four tickets each")
        await asyncio.sleep(0.5)
        assert (len(state.issues), len(state.tickets)) == (4, 4)
        await wait(lambda: sum(1 for s in syncs if s.election is not None and s.election.is_leader) == 1,
                   "one leader")
        leaders = [s for s in syncs if s.election is not None and s.election.is_leader]
        await leaders[0].stop()  # resigns
        await service.trigger(web, "k-after", None, time.time_ns(), title="after the leader left")
        await wait(lambda: len(state.issues) == 5 and len(state.tickets) == 5, "the other server's tickets")
    finally:
        for sync in syncs:
            await sync.stop()
        await store.stop()


async def test_work_list_is_read_whole(tmp_path: Path) -> None:
    """More incidents on the work list than one page: every one is listed (open ones stay listed)."""
    store = SqliteRevStore(tmp_path / "s.db", compact_interval_s=None)
    await store.start()
    try:
        incidents = IncidentStore(store)
        for batch in range(11):
            await store.txn([], [Op.put(f"{incidents.p}itsm/Q{n:07d}", b"") for n in range(batch * 100, batch * 100 + 100)])
        work = await incidents.itsm_work()
        assert len(work) == 1100 and work[0] == "Q0000000" and work[-1] == "Q0001099"
        await incidents.itsm_done("Q0000000")
        assert len(await incidents.itsm_work()) == 1099
    finally:
        await store.stop()


def test_bad_settings_name_the_key(tmp_path: Path) -> None:
    def error(itsm: dict[str, Any]) -> str:
        with pytest.raises(ConfigError) as e:
            load_settings(data_dir=tmp_path, incidents={"itsm": itsm})
        return str(e.value)

    jira = {"url": "https://example.atlassian.net", "project_key": "OPS", "user": "bot@example.com"}
    assert "incidents.itsm.jira: " in error({"jira": jira}) and "token and token_file" in error({"jira": jira})
    assert "incidents.itsm.jira: " in error({"jira": {**jira, "token": "t", "token_file": "/x"}})
    missing = error({"jira": {**jira, "token_file": str(tmp_path / "nope")}})
    assert "token_file: cannot read" in missing
    assert "incidents.itsm.jira.url" in error({"jira": {**jira, "url": "ftp://x", "token": "t"}})
    assert "incidents.itsm.jira.project_key" in error({"jira": {**jira, "project_key": "lower", "token": "t"}})
    assert "incidents.itsm.servicenow: " in error({"servicenow": {"url": "https://x.service-now.com", "user": "u"}})
    assert "incidents.itsm.servicenow.colour" in error({"servicenow": {"url": "https://x.service-now.com",
                                                                       "user": "u", "password": "p", "colour": 1}})
    assert "incidents.itsm.timeout" in error({"timeout": "soon"})
    secret = tmp_path / "snow"
    secret.write_text("from-a-file\n")
    s = load_settings(data_dir=tmp_path, incidents={"itsm": {"servicenow": {
        "url": "https://x.service-now.com/", "user": "u", "password_file": str(secret)}}})
    assert s.incidents.itsm.servicenow is not None
    assert (s.incidents.itsm.servicenow.secret, s.incidents.itsm.servicenow.url) == (
        "from-a-file", "https://x.service-now.com")


# --- change records ------------------------------------------------------------------------------------------


def _inc(id_: str, created: int, resolved: int = 0, service: str = "PWEB001", signal: str = "") -> Incident:
    return Incident(id=id_, number=1, title="t", service_id=service, incident_key="k", created_ns=created,
                    updated_ns=created, last_status_change_ns=created, resolved_ns=resolved,
                    status="resolved" if resolved else "triggered", signal_service=signal)


def test_change_record_rule() -> None:
    names = {"PWEB001": "web"}
    ev = ChangeEvent("deploy", "rollout", "deployment-controller", service="default/web", ts_ns=100)
    assert change_record(ev, [], names).type == "standard"
    assert change_record(ChangeEvent("config", "x", "kubernetes", who="kubectl-edit", ts_ns=100), [],
                         names).type == "normal"
    assert change_record(ChangeEvent("config", "x", "kubernetes", who="system:serviceaccount:a:b", ts_ns=1), [],
                         names).type == "standard"
    assert change_record(ChangeEvent("rollback", "x", "deployment-controller", ts_ns=1), [], names).type == "emergency"
    assert change_record(ChangeEvent("chaos", "x", "pitwall-chaos", details={"action": "halt"}, ts_ns=1), [],
                         names).type == "emergency"
    assert change_record(ChangeEvent("release", "x", "flagger", who="flagger", details={"phase": "Failed"},
                                     ts_ns=1), [], names).type == "emergency"
    # Open at the change's time, on the same service (by PagerDuty service name or the alerts' service): linked.
    incs = [_inc("Q1", 50), _inc("Q2", 10, resolved=90), _inc("Q3", 50, service="POTHER"),
            _inc("Q4", 150), _inc("Q5", 60, service="POTHER", signal="default/web")]
    rec = change_record(ev, incs, names)
    assert (rec.type, rec.incidents) == ("emergency", ["Q1", "Q5"])
    assert change_record(ChangeEvent("deploy", "x", "c", service="default/api", ts_ns=100), incs,
                         names).incidents == []


@pytest.mark.slow
def test_change_records_through_the_kube_api(tmp_path: Path) -> None:
    """A controller's rollout is standard, a user's change normal, a rollout during an incident emergency."""
    srv = LiveServer(pd_settings(tmp_path, kube=True, tokens=True))
    srv.start()
    api = httpx.Client(base_url=srv.url, headers=AUTH, timeout=30)
    try:
        deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
                  "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                           "template": {"metadata": {"labels": {"app": "web"}},
                                        "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}}
        r = api.post("/apis/apps/v1/namespaces/default/deployments", json=deploy,
                     params={"fieldManager": "kubectl-create"})
        assert r.status_code == 201, r.text
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config", "namespace": "default"},
              "data": {"LOG_LEVEL": "info"}}
        r = api.post("/api/v1/namespaces/default/configmaps", json=cm, params={"fieldManager": "kubectl-create"})
        assert r.status_code == 201, r.text

        def changes() -> list[dict[str, Any]]:
            got = api.get("/pagerduty/change_events", params={"limit": 100},
                          headers={"Authorization": f"Token token={TOKEN}"})
            return list(got.json()["change_events"])

        def one(pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
            return dict(until(lambda: next((c for c in changes() if pred(c)), None), "a change event"))

        rollout = one(lambda c: c["source"] == "deployment-controller" and "revision 1 started" in c["summary"])
        assert (rollout["change_type"], rollout["incidents"], rollout["service"]) == ("standard", [], "default/web")
        config = one(lambda c: c["kind"] == "config" and "web-config" in c["summary"])
        assert (config["change_type"], config["who"]) == ("normal", "kubectl-create")

        send(srv, "trigger", "web-down")
        inc = incident(srv, "web-down")
        deploy["spec"]["template"]["spec"]["containers"][0]["image"] = "web:2"
        r = api.patch("/apis/apps/v1/namespaces/default/deployments/web",
                      json={"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}}},
                      headers={"Content-Type": "application/strategic-merge-patch+json"},
                      params={"fieldManager": "kubectl-set"})
        assert r.status_code == 200, r.text
        fix = one(lambda c: c["source"] == "deployment-controller" and "revision 2 started" in c["summary"])
        assert (fix["change_type"], fix["incidents"]) == ("emergency", [inc["id"]])
        # The record is derived on read: the incident's related change events carry it too.
        related = api.get(f"/pagerduty/incidents/{inc['id']}/related_change_events",
                          headers={"Authorization": f"Token token={TOKEN}"}).json()["change_events"]
        assert {c["id"]: c["change_type"] for c in related}[fix["id"]] == "emergency"
        assert {c["id"]: c["change_type"] for c in related}[rollout["id"]] == "standard"
        draft = api.get(f"/pagerduty/incidents/{inc['id']}/postmortem").text
        assert "rollout of revision 2 started (web:2) [deployment-controller] (emergency change)" in draft
        # The PagerDuty service "web" lists the changes of the Kubernetes Deployment default/web, not the ConfigMap.
        mine = api.get("/pagerduty/services/PWEB001/change_events", params={"limit": 100},
                       headers={"Authorization": f"Token token={TOKEN}"}).json()["change_events"]
        assert {rollout["id"], fix["id"]} <= {c["id"] for c in mine} and config["id"] not in {c["id"] for c in mine}
    finally:
        api.close()
        srv.stop()
