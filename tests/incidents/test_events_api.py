"""Events API v2 on pitwall's port: PagerDuty's answers, validation, dedup, throttling, change events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.incidents.conftest import OTHER_KEY, ROUTING_KEY, pd_settings

pytestmark = pytest.mark.timeout(60)


def trigger(key: str = ROUTING_KEY, **payload: Any) -> dict[str, Any]:
    p = {"summary": "disk full on db1", "source": "db1", "severity": "critical", **payload}
    return {"routing_key": key, "event_action": "trigger", "payload": p}


async def test_trigger_answers_as_pagerduty(pd: httpx.AsyncClient) -> None:
    r = await pd.post("/v2/enqueue", json={**trigger(), "dedup_key": "disk-db1"})
    assert r.status_code == 202
    assert r.json() == {"status": "success", "message": "Event processed", "dedup_key": "disk-db1"}
    r = await pd.post("/v2/enqueue", json=trigger(summary="no key"))
    body = r.json()
    assert r.status_code == 202 and len(body["dedup_key"]) == 32  # generated, as PagerDuty does


async def test_full_payload_is_kept_on_the_alert(pd: httpx.AsyncClient) -> None:
    event = {**trigger(component="postgres", group="db", **{"class": "disk"},
                       timestamp="2026-12-05T10:00:00+00:00",
                       custom_details={"free_bytes": 0, "mount": "/var"}),
             "dedup_key": "k1", "client": "Prometheus", "client_url": "http://prom/graph",
             "links": [{"href": "http://grafana/d/db", "text": "dashboard"}],
             "images": [{"src": "http://grafana/render.png", "href": "http://grafana", "alt": "graph"}]}
    assert (await pd.post("/v2/enqueue", json=event)).status_code == 202
    (alert,) = (await pd.get("/pagerduty/incidents/Q0000001/alerts")).json()["alerts"]
    cef = alert["body"]["cef_details"]
    assert (cef["source_component"], cef["service_group"], cef["event_class"]) == ("postgres", "db", "disk")
    assert cef["details"] == {"free_bytes": 0, "mount": "/var"} and cef["client"] == "Prometheus"
    assert cef["creation_time"] == "2026-12-05T10:00:00+00:00" and alert["severity"] == "critical"
    assert {"href": "http://grafana/d/db", "text": "dashboard"} in alert["body"]["contexts"]
    assert alert["alert_key"] == "k1" and alert["status"] == "triggered"


@pytest.mark.parametrize(("event", "errors"), [
    ({"event_action": "trigger", "payload": {"summary": "s", "source": "h", "severity": "info"}},
     ["'routing_key' is missing or blank"]),
    ({"routing_key": "short-key!", "event_action": "page",
      "payload": {"summary": "s", "source": "h", "severity": "info"}},
     ["Length of 'routing_key' is incorrect (should be 32 characters)",
      "'routing_key' cannot contain non-alphanumeric characters.",
      "'event_action' is invalid (must be one of the following: 'trigger', 'acknowledge' or 'resolve')"]),
    ({"routing_key": ROUTING_KEY, "event_action": "trigger", "payload": {"severity": "fatal"}},
     ["'payload.summary' is missing or blank", "'payload.source' is missing or blank",
      "'payload.severity' is invalid (must be one of the following: 'critical', 'warning', 'error' or 'info')"]),
    (trigger(summary="x" * 1025), ["'summary' is too long (maiximum is 1024 characters)"]),
    ({"routing_key": ROUTING_KEY, "event_action": "trigger"}, ["'payload' is missing or blank"]),
    ({"routing_key": ROUTING_KEY, "event_action": "resolve"}, ["'dedup_key' is missing or blank"]),
    (trigger(timestamp="yesterday"), ["'payload.timestamp' is invalid (must be an ISO 8601 timestamp)"]),
    (trigger(key="0" * 32), ["Invalid routing key"]),
    (["not", "an", "object"], ["Event object must be a JSON object"]),
])
async def test_invalid_events_list_every_problem(pd: httpx.AsyncClient, event: Any, errors: list[str]) -> None:
    r = await pd.post("/v2/enqueue", json=event)
    assert r.status_code == 400
    assert r.json() == {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
    assert (await pd.get("/pagerduty/incidents")).json()["incidents"] == []  # nothing stored


async def test_not_json_and_too_large(pd: httpx.AsyncClient) -> None:
    r = await pd.post("/v2/enqueue", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["errors"] == ["Event object is not valid JSON"]
    r = await pd.post("/v2/enqueue", json=trigger(custom_details={"blob": "x" * 600_000}))
    assert r.status_code == 413 and r.json()["status"] == "invalid event"


async def test_summary_of_exactly_1024_is_accepted(pd: httpx.AsyncClient) -> None:
    assert (await pd.post("/v2/enqueue", json=trigger(summary="x" * 1024))).status_code == 202


async def test_acknowledge_and_resolve_by_dedup_key(pd: httpx.AsyncClient) -> None:
    await pd.post("/v2/enqueue", json={**trigger(), "dedup_key": "k"})
    for action, status in (("acknowledge", "acknowledged"), ("resolve", "resolved")):
        r = await pd.post("/v2/enqueue", json={"routing_key": ROUTING_KEY, "event_action": action,
                                               "dedup_key": "k"})
        assert r.json() == {"status": "success", "message": "Event processed", "dedup_key": "k"}
        assert (await pd.get("/pagerduty/incidents/Q0000001")).json()["incident"]["status"] == status
    # Acknowledging a key with nothing open is accepted and changes nothing, as at PagerDuty.
    r = await pd.post("/v2/enqueue", json={"routing_key": ROUTING_KEY, "event_action": "acknowledge",
                                           "dedup_key": "k"})
    assert r.status_code == 202
    # A new trigger with the resolved incident's key opens a new incident.
    await pd.post("/v2/enqueue", json={**trigger(), "dedup_key": "k"})
    incs = (await pd.get("/pagerduty/incidents")).json()["incidents"]
    assert [(i["incident_number"], i["status"], i["incident_key"]) for i in incs] == [
        (1, "resolved", "k"), (2, "triggered", "k")]
    # Keys are per service: the same key on another service is another incident.
    await pd.post("/v2/enqueue", json={**trigger(OTHER_KEY), "dedup_key": "k"})
    incs = (await pd.get("/pagerduty/incidents", params={"service_ids[]": "PAPI001"})).json()["incidents"]
    assert [(i["incident_number"], i["urgency"]) for i in incs] == [(3, "low")]


async def test_change_events_join_the_change_stream(pd: httpx.AsyncClient) -> None:
    change = {"routing_key": ROUTING_KEY, "payload": {"summary": "deploy web v42", "source": "ci",
                                                      "timestamp": "2026-12-05T09:59:00Z",
                                                      "custom_details": {"sha": "abc123"}},
              "links": [{"href": "https://ci.example.com/42", "text": "pipeline"}]}
    r = await pd.post("/v2/change/enqueue", json=change)
    assert r.status_code == 202 and r.json() == {"status": "success", "message": "Change event processed"}
    r = await pd.post("/v2/change/enqueue", json={"routing_key": ROUTING_KEY, "payload": {}})
    assert r.status_code == 400 and r.json()["errors"] == ["'payload.summary' is missing or blank"]
    log = pd.app.state.components.incidents.rest.changes  # type: ignore[attr-defined]
    (ev,) = await log.between(0, 1 << 62)
    assert (ev.summary, ev.source, ev.service, ev.kind) == ("deploy web v42", "ci", "web", "other")
    assert ev.links == ("https://ci.example.com/42",)
    listed = (await pd.get("/pagerduty/services/PWEB001/change_events")).json()["change_events"]
    assert [c["summary"] for c in listed] == ["deploy web v42"]
    assert listed[0]["timestamp"] == "2026-12-05T09:59:00Z" and listed[0]["custom_details"] == {"sha": "abc123"}


async def test_too_many_events_for_one_key_get_429(tmp_path: Path) -> None:
    from pitwall.server import create_app

    app = create_app(pd_settings(tmp_path, events_per_minute=3))
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c):
        codes = [(await c.post("/v2/enqueue", json={**trigger(), "dedup_key": "same"})).status_code
                 for _ in range(4)]
        assert codes == [202, 202, 202, 429]
        r = await c.post("/v2/enqueue", json=trigger())
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert r.json() == {"status": "throttle event",
                            "message": "Requests for this service are arriving too quickly.  Please retry later."}
        # Another routing key has its own budget.
        assert (await c.post("/v2/enqueue", json=trigger(OTHER_KEY))).status_code == 202


async def test_concurrent_triggers_with_one_key_open_one_incident(pd: httpx.AsyncClient) -> None:
    import asyncio

    codes = await asyncio.gather(*(pd.post("/v2/enqueue", json={**trigger(), "dedup_key": "storm"})
                                   for _ in range(20)))
    assert {r.status_code for r in codes} == {202}
    incs = (await pd.get("/pagerduty/incidents")).json()["incidents"]
    assert len(incs) == 1 and incs[0]["incident_key"] == "storm"
    # Distinct keys at once: every incident gets the next number, none skipped (as PagerDuty numbers them).
    await asyncio.gather(*(pd.post("/v2/enqueue", json={**trigger(), "dedup_key": f"k{i}"}) for i in range(12)))
    incs = (await pd.get("/pagerduty/incidents", params={"limit": 100})).json()["incidents"]
    assert [i["incident_number"] for i in incs] == list(range(1, 14))
    assert sorted(i["incident_key"] for i in incs[1:]) == sorted(f"k{i}" for i in range(12))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=40),
                          lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                              st.sampled_from(["routing_key", "event_action", "payload", "summary", "source",
                                               "severity", "dedup_key", "links", "images", "timestamp", "x"]),
                              inner, max_size=6), max_leaves=20))
async def test_any_json_gets_202_or_a_pagerduty_400(pd: httpx.AsyncClient, event: Any) -> None:
    r = await pd.post("/v2/enqueue", json=event)
    assert r.status_code in (202, 400), r.text
    if r.status_code == 400:
        body = r.json()
        assert body["status"] == "invalid event" and body["errors"] and all(isinstance(e, str) for e in body["errors"])


async def test_severity_based_urgency_and_disabled_services(pd: httpx.AsyncClient) -> None:
    r = await pd.put("/pagerduty/services/PAPI001", json={"service": {
        "incident_urgency_rule": {"type": "severity_based"}}})
    assert r.status_code == 200 and r.json()["service"]["incident_urgency_rule"] == {"type": "severity_based"}
    for sev in ("warning", "error", "info", "critical"):
        await pd.post("/v2/enqueue", json={**trigger(OTHER_KEY, severity=sev), "dedup_key": sev})
    incs = (await pd.get("/pagerduty/incidents")).json()["incidents"]
    assert [(i["incident_key"], i["urgency"]) for i in incs] == [
        ("warning", "low"), ("error", "high"), ("info", "low"), ("critical", "high")]
    r = await pd.put("/pagerduty/services/PWEB001", json={"service": {"status": "disabled"}})
    assert r.json()["service"]["status"] == "disabled"
    r = await pd.post("/v2/enqueue", json={**trigger(), "dedup_key": "dropped"})
    assert r.status_code == 202 and r.json()["dedup_key"] == "dropped"
    assert len((await pd.get("/pagerduty/incidents")).json()["incidents"]) == 4
