"""REST API v2 under /pagerduty: shapes, filters, pagination, errors, auth, configuration CRUD, timeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from pitwall.incidents import ChangeEvent
from tests.incidents.conftest import ROUTING_KEY, TOKEN, pd_settings

pytestmark = pytest.mark.timeout(60)
ALICE = {"From": "alice@example.com"}


async def _trigger(c: httpx.AsyncClient, dedup: str, key: str = ROUTING_KEY, severity: str = "critical") -> None:
    r = await c.post("/v2/enqueue", json={"routing_key": key, "event_action": "trigger", "dedup_key": dedup,
                                          "payload": {"summary": f"alert {dedup}", "source": "h",
                                                      "severity": severity}})
    assert r.status_code == 202, r.text


async def test_pagination_envelope(pd: httpx.AsyncClient) -> None:
    for i in range(5):
        await _trigger(pd, f"k{i}")
    body = (await pd.get("/pagerduty/incidents", params={"limit": 2, "offset": 2, "total": "true"})).json()
    assert [i["incident_number"] for i in body["incidents"]] == [3, 4]
    assert (body["limit"], body["offset"], body["more"], body["total"]) == (2, 2, True, 5)
    body = (await pd.get("/pagerduty/incidents", params={"limit": 2, "offset": 4})).json()
    assert ([i["incident_number"] for i in body["incidents"]], body["more"], body["total"]) == ([5], False, None)
    body = (await pd.get("/pagerduty/incidents", params={"limit": 1000})).json()
    assert body["limit"] == 100
    desc = (await pd.get("/pagerduty/incidents", params={"sort_by": "incident_number:desc"})).json()
    assert [i["incident_number"] for i in desc["incidents"]] == [5, 4, 3, 2, 1]
    r = await pd.get("/pagerduty/incidents", params={"limit": "ten"})
    assert r.status_code == 400 and r.json()["error"]["code"] == 2001


async def test_incident_shape(pd: httpx.AsyncClient) -> None:
    await _trigger(pd, "disk")
    inc = (await pd.get("/pagerduty/incidents/Q0000001")).json()["incident"]
    assert inc["type"] == "incident" and inc["summary"] == "[#1] alert disk"
    assert inc["self"] == "http://localhost/pagerduty/incidents/Q0000001"
    assert inc["service"] == {"id": "PWEB001", "type": "service_reference", "summary": "web",
                              "self": "http://localhost/pagerduty/services/PWEB001",
                              "html_url": "http://localhost/pagerduty/services/PWEB001"}
    assert inc["escalation_policy"]["summary"] == "Web on-call"
    assert inc["assignments"][0]["assignee"]["type"] == "user_reference"
    assert inc["alert_counts"] == {"all": 1, "triggered": 1, "resolved": 0}
    assert [p["type"] for p in inc["pending_actions"]] == ["escalate", "resolve"]
    for key in ("created_at", "updated_at", "last_status_change_at"):
        assert inc[key].endswith("Z")


async def test_filters(pd: httpx.AsyncClient) -> None:
    from tests.incidents.conftest import OTHER_KEY

    await _trigger(pd, "a")
    await _trigger(pd, "b")
    await _trigger(pd, "c", key=OTHER_KEY)
    r = await pd.put("/pagerduty/incidents/Q0000002", headers=ALICE,
                     json={"incident": {"type": "incident_reference", "status": "acknowledged"}})
    assert r.status_code == 200 and r.json()["incident"]["status"] == "acknowledged"

    async def numbers(**params: Any) -> list[int]:
        r = await pd.get("/pagerduty/incidents", params=params)
        assert r.status_code == 200, r.text
        return [i["incident_number"] for i in r.json()["incidents"]]

    assert await numbers(**{"statuses[]": ["triggered"]}) == [1, 3]
    assert await numbers(**{"statuses[]": ["triggered", "acknowledged"], "urgencies[]": ["high"]}) == [1, 2]
    assert await numbers(**{"urgencies[]": ["low"]}) == [3]
    assert await numbers(**{"service_ids[]": ["PWEB001"]}) == [1, 2]
    assert await numbers(since="2000-01-01T00:00:00Z", until="2001-01-01T00:00:00Z") == []
    r = await pd.get("/pagerduty/incidents", params={"statuses[]": ["open"]})
    assert r.status_code == 400
    assert r.json() == {"error": {"message": "Invalid Input Provided", "code": 2001,
                                  "errors": ["statuses: 'open' is not a valid status"]}}


async def test_errors_in_pagerdutys_shape(pd: httpx.AsyncClient) -> None:
    r = await pd.get("/pagerduty/incidents/Q9999999")
    assert r.status_code == 404
    assert r.json() == {"error": {"message": "Not Found", "code": 2100, "errors": ["Incident Q9999999 not found"]}}
    await _trigger(pd, "x")
    body = {"incident": {"type": "incident_reference", "status": "resolved"}}
    r = await pd.put("/pagerduty/incidents/Q0000001", json=body)
    assert r.status_code == 400 and "From" in r.json()["error"]["message"]
    r = await pd.put("/pagerduty/incidents/Q0000001", json=body, headers={"From": "mallory@example.com"})
    assert r.status_code == 400 and "Requester User Not Found" in r.json()["error"]["errors"][0]
    r = await pd.put("/pagerduty/incidents/Q0000001", json={"incident": {"status": "snoozed"}}, headers=ALICE)
    assert r.status_code == 400
    r = await pd.put("/pagerduty/incidents/Q0000001", content=b"{", headers=ALICE)
    assert r.status_code == 400 and r.json()["error"]["errors"] == ["The request body is not valid JSON"]
    assert (await pd.get("/pagerduty/incidents/Q0000001")).json()["incident"]["status"] == "triggered"


async def test_reassign_escalate_notes_and_log(pd: httpx.AsyncClient) -> None:
    await _trigger(pd, "x")
    r = await pd.put("/pagerduty/incidents/Q0000001", headers=ALICE, json={"incident": {
        "type": "incident_reference", "assignments": [{"assignee": {"id": "PBOB001", "type": "user_reference"}}]}})
    assert [a["assignee"]["id"] for a in r.json()["incident"]["assignments"]] == ["PBOB001"]
    r = await pd.put("/pagerduty/incidents/Q0000001", headers=ALICE,
                     json={"incident": {"type": "incident_reference", "escalation_level": 2}})
    inc = r.json()["incident"]
    assert inc["escalation_level"] == 2 and [a["assignee"]["summary"] for a in inc["assignments"]] == ["Carol"]
    r = await pd.put("/pagerduty/incidents/Q0000001", headers=ALICE,
                     json={"incident": {"type": "incident_reference", "escalation_level": 7}})
    assert r.status_code == 400
    r = await pd.post("/pagerduty/incidents/Q0000001/notes", headers=ALICE, json={"note": {"content": "on it"}})
    assert r.status_code == 201 and r.json()["note"]["user"]["summary"] == "Alice"
    r = await pd.post("/pagerduty/incidents/Q0000001/notes", headers=ALICE, json={"note": {"content": ""}})
    assert r.status_code == 400
    notes = (await pd.get("/pagerduty/incidents/Q0000001/notes")).json()["notes"]
    assert [n["content"] for n in notes] == ["on it"]
    log = (await pd.get("/pagerduty/incidents/Q0000001/log_entries", params={"is_overview": "true"})).json()
    assert [e["type"] for e in log["log_entries"]] == [
        "annotate_log_entry", "escalate_log_entry", "assign_log_entry", "assign_log_entry", "trigger_log_entry"]
    r = await pd.put("/pagerduty/incidents/Q0000001", headers=ALICE,
                     json={"incident": {"type": "incident_reference", "status": "resolved"}})
    assert r.json()["incident"]["status"] == "resolved" and r.json()["incident"]["pending_actions"] == []
    r = await pd.put("/pagerduty/incidents/Q0000001", headers=ALICE, json={"incident": {
        "type": "incident_reference", "assignments": [{"assignee": {"id": "PBOB001"}}]}})
    assert r.status_code == 400 and r.json()["error"]["errors"] == ["Incident Already Resolved"]


async def test_create_incident_through_rest(pd: httpx.AsyncClient) -> None:
    body = {"incident": {"type": "incident", "title": "checkout is slow", "urgency": "low", "incident_key": "slow",
                         "service": {"id": "PWEB001", "type": "service_reference"}}}
    r = await pd.post("/pagerduty/incidents", headers=ALICE, json=body)
    assert r.status_code == 201
    inc = r.json()["incident"]
    assert (inc["title"], inc["urgency"], inc["incident_key"], inc["status"]) == (
        "checkout is slow", "low", "slow", "triggered")
    r = await pd.post("/pagerduty/incidents", headers=ALICE, json=body)
    assert r.status_code == 400 and "matching dedup key" in r.json()["error"]["message"]


async def test_configuration_crud_drives_routing(pd: httpx.AsyncClient) -> None:
    r = await pd.post("/pagerduty/users", json={"user": {"type": "user", "name": "Dave", "email": "dave@x.io",
                                                         "time_zone": "Asia/Tokyo"}})
    assert r.status_code == 201
    dave = r.json()["user"]
    r = await pd.post(f"/pagerduty/users/{dave['id']}/contact_methods", json={"contact_method": {
        "type": "email_contact_method", "address": "dave@x.io", "label": "Work"}})
    assert r.status_code == 201 and r.json()["contact_method"]["type"] == "email_contact_method"
    cm_id = r.json()["contact_method"]["id"]
    r = await pd.put(f"/pagerduty/users/{dave['id']}", json={"user": {
        "notification_rules": [{"urgency": "low", "contact_methods": [cm_id]}]}})
    assert r.status_code == 200, r.text
    dave_now = r.json()["user"]
    assert dave_now["notification_rules"] == [{"urgency": "low", "contact_methods": [cm_id]}]
    assert [c["id"] for c in dave_now["contact_methods"]] == [cm_id]  # kept by the partial update
    assert dave_now["time_zone"] == "Asia/Tokyo"
    r = await pd.post("/pagerduty/escalation_policies", json={"escalation_policy": {
        "type": "escalation_policy", "name": "Payments",
        "escalation_rules": [{"escalation_delay_in_minutes": 15,
                              "targets": [{"id": dave["id"], "type": "user_reference"}]}]}})
    assert r.status_code == 201
    pol = r.json()["escalation_policy"]
    r = await pd.post("/pagerduty/services", json={"service": {
        "type": "service", "name": "payments", "escalation_policy": {"id": pol["id"], "type": "escalation_policy_reference"}}})
    assert r.status_code == 201
    svc = r.json()["service"]
    r = await pd.post(f"/pagerduty/services/{svc['id']}/integrations",
                      json={"integration": {"type": "events_api_v2_inbound_integration"}})
    assert r.status_code == 201
    key = r.json()["integration"]["integration_key"]
    await _trigger(pd, "pay", key=key)
    (inc,) = (await pd.get("/pagerduty/incidents", params={"service_ids[]": svc["id"]})).json()["incidents"]
    assert [a["assignee"]["summary"] for a in inc["assignments"]] == ["Dave"]
    r = await pd.put(f"/pagerduty/services/{svc['id']}", json={"service": {"description": "money"}})
    assert r.status_code == 200 and r.json()["service"]["description"] == "money"
    assert r.json()["service"]["integrations"][0]["integration_key"] == key  # kept by a partial update
    assert (await pd.delete(f"/pagerduty/services/{svc['id']}")).status_code == 204
    r = await pd.post("/v2/enqueue", json={"routing_key": key, "event_action": "trigger",
                                           "payload": {"summary": "s", "source": "h", "severity": "info"}})
    assert r.status_code == 400 and r.json()["errors"] == ["Invalid routing key"]
    assert (await pd.get(f"/pagerduty/services/{svc['id']}")).status_code == 404


async def test_bad_configuration_names_the_field(pd: httpx.AsyncClient) -> None:
    r = await pd.post("/pagerduty/schedules", json={"schedule": {
        "name": "bad", "time_zone": "Mars/Olympus", "schedule_layers": [
            {"start": "2026-01-01T00:00:00Z", "rotation_virtual_start": "2026-01-01T00:00:00Z",
             "rotation_turn_length_seconds": 86400, "users": [{"user": {"id": "PALICE1"}}]}]}})
    assert r.status_code == 400
    assert any("time_zone" in e and "Mars/Olympus" in e for e in r.json()["error"]["errors"])
    r = await pd.post("/pagerduty/escalation_policies", json={"escalation_policy": {
        "name": "ghosts", "escalation_rules": [{"targets": [{"id": "PNOBODY", "type": "user_reference"}]}]}})
    assert r.status_code == 400 and r.json()["error"]["errors"] == ["user PNOBODY not found"]
    r = await pd.post("/pagerduty/services", json={"service": {"name": "x", "integration_keys": ["short"]}})
    assert r.status_code == 400
    assert len((await pd.get("/pagerduty/services")).json()["services"]) == 2  # nothing stored


async def test_schedules_overrides_and_oncalls(pd: httpx.AsyncClient) -> None:
    r = await pd.post("/pagerduty/schedules/PSCHED1/overrides", json={"override": {
        "start": "2026-01-07T12:00:00Z", "end": "2026-01-07T13:00:00Z", "user": {"id": "PBOB001"}}})
    assert r.status_code == 201
    oid = r.json()["override"]["id"]
    window = {"since": "2026-01-07T00:00:00Z", "until": "2026-01-08T00:00:00Z"}
    overrides = (await pd.get("/pagerduty/schedules/PSCHED1/overrides", params=window)).json()["overrides"]
    assert [(o["id"], o["start"], o["user"]["id"]) for o in overrides] == [(oid, "2026-01-07T12:00:00Z", "PBOB001")]
    oncalls = (await pd.get("/pagerduty/oncalls", params={**window, "schedule_ids[]": "PSCHED1"})).json()["oncalls"]
    assert [(o["user"]["summary"], o["start"], o["end"]) for o in oncalls] == [
        ("Alice", "2026-01-05T08:00:00Z", "2026-01-07T12:00:00Z"),
        ("Bob", "2026-01-07T12:00:00Z", "2026-01-07T13:00:00Z"),
        ("Alice", "2026-01-07T13:00:00Z", "2026-01-12T08:00:00Z")]
    earliest = (await pd.get("/pagerduty/oncalls", params={**window, "earliest": "true",
                                                           "schedule_ids[]": "PSCHED1"})).json()["oncalls"]
    assert [o["user"]["summary"] for o in earliest] == ["Alice", "Bob"]
    carol = (await pd.get("/pagerduty/oncalls", params={"user_ids[]": "PCAROL1"})).json()["oncalls"]
    assert [(o["escalation_level"], o["schedule"]) for o in carol] == [(2, None)]
    assert (await pd.delete(f"/pagerduty/schedules/PSCHED1/overrides/{oid}")).status_code == 200
    assert (await pd.delete(f"/pagerduty/schedules/PSCHED1/overrides/{oid}")).status_code == 404
    r = await pd.get("/pagerduty/oncalls", params={"since": "2026-01-01T00:00:00Z", "until": "2026-09-01T00:00:00Z"})
    assert r.status_code == 400  # over three months


async def test_timeline_and_postmortem_include_change_events(pd: httpx.AsyncClient) -> None:
    svc = pd.app.state.components.incidents.service  # type: ignore[attr-defined]
    now = svc.clock()
    log = pd.app.state.components.incidents.rest.changes  # type: ignore[attr-defined]
    await log.record(ChangeEvent("deploy", "rollout web v42", "deployment-controller", service="default/web",
                                 who="ci-bot", ts_ns=now - 10 * 60 * 10**9))
    await log.record(ChangeEvent("config", "long ago", "kv", ts_ns=now - 3 * 3600 * 10**9))
    await _trigger(pd, "x")
    await pd.put("/pagerduty/incidents/Q0000001", headers=ALICE,
                 json={"incident": {"type": "incident_reference", "status": "acknowledged"}})
    await pd.post("/pagerduty/incidents/Q0000001/notes", headers=ALICE, json={"note": {"content": "rolling back"}})
    related = (await pd.get("/pagerduty/incidents/Q0000001/related_change_events")).json()["change_events"]
    assert [c["summary"] for c in related] == ["rollout web v42"]
    r = await pd.get("/pagerduty/incidents/Q0000001/postmortem")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
    md = r.text
    assert md.startswith("# Postmortem: [#1] alert x")
    rows = [line for line in md.splitlines() if line.startswith("| 20")]
    kinds = [row.split("|")[2].strip() for row in rows]
    assert kinds[0].startswith("change (deploy) on default/web: rollout web v42 [deployment-controller by ci-bot]")
    assert "long ago" not in md
    assert any(k.startswith("alert (critical)") for k in kinds)
    assert any(k.startswith("Acknowledged (Alice)") for k in kinds)
    assert kinds[-1] == "note by Alice: rolling back"
    assert "## Follow-up actions" in md and "1 change event(s)" in md


async def test_token_auth_for_the_pagerduty_prefix(tmp_path: Path) -> None:
    from pitwall.server import create_app

    app = create_app(pd_settings(tmp_path, tokens=True))
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c):
        assert (await c.get("/pagerduty/incidents")).status_code == 401
        assert (await c.get("/pagerduty/incidents", headers={"Authorization": "Token token=wrong"})).status_code == 401
        ok = {"Authorization": f"Token token={TOKEN}"}
        assert (await c.get("/pagerduty/incidents", headers=ok)).status_code == 200
        assert (await c.get("/pagerduty/incidents", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
        # PagerDuty's header form is for the PagerDuty prefix only.
        assert (await c.get("/api/v1/query", params={"query": "1"}, headers=ok)).status_code == 401
        # With auth on, the Events API needs a write token too (as a bearer token).
        event = {"routing_key": ROUTING_KEY, "event_action": "trigger",
                 "payload": {"summary": "s", "source": "h", "severity": "info"}}
        assert (await c.post("/v2/enqueue", json=event)).status_code == 401
        r = await c.post("/v2/enqueue", json=event, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 202
        assert len((await c.get("/pagerduty/incidents", headers=ok)).json()["incidents"]) == 1


async def test_with_the_control_plane_incidents_share_its_store(tmp_path: Path) -> None:
    from pitwall.server import create_app

    app = create_app(pd_settings(tmp_path, kube=True))
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c):
        comps = app.state.components
        assert comps.incidents.own_store is None
        assert comps.incidents.service.store.store is comps.control_plane.kube.store
        await _trigger(c, "k")
        assert (await c.get("/pagerduty/incidents/Q0000001")).status_code == 200
        kv = await comps.control_plane.kube.store.get("/pitwall/incidents/incidents/Q0000001")
        assert kv is not None
