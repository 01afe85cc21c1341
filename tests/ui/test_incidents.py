"""The incidents pages: view functions without a server, then the pages of a whole pitwall (in process)
fed through the PagerDuty Events API, checked against the REST API ``pitwall incident`` reads."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from tests.incidents.conftest import ROUTING_KEY, incidents_config, pd_settings

from pitwall.metrics import TargetsSnapshot
from pitwall.ui.incidents_view import acting_user, incident_row, oncall_rows, postmortem_filename
from pitwall.ui.routes import ui_router
from pitwall.ui.settings import UISettings
from pitwall.ui.web import UIDeps

pytestmark = pytest.mark.timeout(60)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _inc(**over: Any) -> dict[str, Any]:
    base = {"id": "Q0000007", "incident_number": 7, "title": "checkout 5xx", "status": "triggered",
            "urgency": "high", "service": {"id": "PWEB001", "summary": "web"}, "created_at": "2026-12-06T11:15:00Z",
            "resolved_at": None, "assignments": [{"assignee": {"id": "PALICE1", "summary": "Alice"}}],
            "pitwall": {"service": "checkout", "links": []}}
    return {**base, **over}


def test_incident_row() -> None:
    r = incident_row(_inc(), NOW)
    assert (r.id, r.number, r.status, r.urgency, r.service, r.assignees, r.age) == (
        "Q0000007", 7, "triggered", "high", "web", ["Alice"], "45m")
    assert r.signal_service == "checkout" and r.resolved_at == ""
    assert incident_row(_inc(created_at="garbage", assignments=[]), NOW).age == "—"


def test_oncall_rows_group_by_policy_and_level() -> None:
    def e(pol: str, level: int, user: str, sched: str | None = None, end: str | None = None) -> dict[str, Any]:
        return {"escalation_policy": {"summary": pol}, "escalation_level": level, "user": {"summary": user},
                "schedule": {"summary": sched} if sched else None, "end": end}

    rows = oncall_rows([e("Web", 2, "Carol"), e("Web", 1, "Bob", "Primary", "2026-12-07T08:00:00Z"),
                        e("API", 1, "Ann"), e("Web", 1, "Bob", "Primary", "2026-12-07T08:00:00Z")])
    assert [(r.policy, r.level, r.users) for r in rows] == [
        ("API", 1, ["Ann"]), ("Web", 1, ["Bob (Primary, until 2026-12-07T08:00:00Z)"]), ("Web", 2, ["Carol"])]


def test_acting_user_and_filename() -> None:
    users = [{"id": "PALICE1", "name": "Alice", "email": "alice@example.com"}, {"id": "PBOB001", "name": "Bob",
                                                                                 "email": "bob@example.com"}]
    assert acting_user(users, "BOB@example.com") == "PBOB001"
    assert acting_user(users, "Alice") == "PALICE1"
    assert acting_user(users, "oncall-bot") == "" and acting_user(users) == ""
    assert acting_user(users, "oncall-bot", _inc()) == "PALICE1"  # the assignee, when the principal is no user
    assert postmortem_filename(_inc()) == "postmortem-7.md"


async def test_pages_say_not_available_without_the_capability() -> None:
    deps = UIDeps(settings=UISettings(), metrics=cast(Any, None), targets=lambda: TargetsSnapshot([], [], {}),
                  traces=None, logs=None, alerts=None, dashboards=cast(Any, None))
    from fastapi import FastAPI

    app = FastAPI()
    app.include_router(ui_router(deps))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
        for path in ("/incidents", "/incidents/Q0000001", "/slos", "/slos/default/shop-availability"):
            r = await c.get(path)
            assert r.status_code == 200 and "is not available" in r.text, path
        r = await c.post("/incidents/Q0000001/acknowledge", data={"user": "PBOB001"})
        assert r.status_code == 503


@pytest.fixture
async def pw(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A whole pitwall with ``tests.incidents.conftest``'s people, policy and services."""
    from pitwall.server import create_app

    app = create_app(pd_settings(tmp_path))
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c):
        yield c


async def _trigger(c: httpx.AsyncClient, key: str, summary: str) -> None:
    r = await c.post("/v2/enqueue", json={"routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": key,
                                          "payload": {"summary": summary, "source": "prometheus", "severity": "critical",
                                                      "custom_details": {"service": "checkout"}}})
    assert r.status_code == 202, r.text


async def _rest(c: httpx.AsyncClient, path: str) -> Any:
    r = await c.get("/pagerduty" + path)
    assert r.status_code == 200, r.text
    return r.json()


async def test_list_filter_and_oncall(pw: httpx.AsyncClient) -> None:
    c = pw
    r = await c.get("/incidents")
    assert r.status_code == 200 and "No open incidents" in r.text
    await _trigger(c, "k1", "checkout 5xx above 5%")
    inc = (await _rest(c, "/incidents"))["incidents"][0]
    r = await c.get("/incidents")
    assert 'data-incident-id="Q0000001"' in r.text and "checkout 5xx above 5%" in r.text
    assignee = inc["assignments"][0]["assignee"]["summary"]  # whoever the schedule puts on call now
    row = r.text.split('data-incident-id="Q0000001"')[1].split("</tr>")[0]
    assert ">triggered<" in row and "<strong>high</strong>" in row and ">web<" in row and assignee in row
    # The on-call panel: pitwall oncall's entries, level 1 from the schedule, level 2 Carol.
    oncall = r.text.split('data-testid="oncall"')[1].split("</table>")[0]
    assert f"{assignee} (Primary, until" in oncall and "Carol" in oncall and "Web on-call" in oncall
    assert 'data-incident-id="Q0000001"' not in (await c.get("/incidents?status=resolved")).text
    assert 'data-incident-id="Q0000001"' in (await c.get("/incidents?status=all&service=web")).text
    assert 'data-incident-id="Q0000001"' not in (await c.get("/incidents?status=all&service=api")).text
    r = await c.get("/incidents?status=closed")
    assert r.status_code == 400 and "status must be one of" in r.text


async def test_detail_actions_and_postmortem(pw: httpx.AsyncClient) -> None:
    c = pw
    r = await c.post("/v2/change/enqueue", json={"routing_key": ROUTING_KEY, "payload": {
        "summary": "deploy checkout v42", "source": "ci"}})
    assert r.status_code == 202, r.text
    await _trigger(c, "k1", "checkout 5xx above 5%")
    page = (await c.get("/incidents/Q0000001")).text
    timeline = page.split('data-testid="timeline"')[1].split("</table>")[0]
    assert "deploy checkout v42" in timeline and "checkout 5xx above 5%" in timeline
    assert timeline.index("deploy checkout v42") < timeline.index("alert (critical)")
    links = page.split('data-testid="signal-links"')[1].split("</ul>")[0]
    assert "/graph?expr=" in links and "/logs?query=" in links and "checkout: traces with errors" in links
    assert 'data-testid="acknowledge"' in page and 'data-testid="resolve"' in page

    # Bad input: no user, an unknown user, an empty note: a clear message, nothing stored.
    r = await c.post("/incidents/Q0000001/acknowledge", data={})
    assert r.status_code == 400 and "pick the user you act as" in r.text
    r = await c.post("/incidents/Q0000001/acknowledge", data={"user": "PNOBODY"})
    assert r.status_code == 400 and "not found" in r.text
    r = await c.post("/incidents/Q0000001/notes", data={"user": "PBOB001", "content": "   "})
    assert r.status_code == 400 and "Note content must be 1 to 25000 characters" in r.text
    assert (await _rest(c, "/incidents/Q0000001/notes"))["notes"] == []
    assert (await _rest(c, "/incidents/Q0000001"))["incident"]["status"] == "triggered"
    assert (await c.post("/incidents/Q0000009/acknowledge", data={"user": "PBOB001"})).status_code == 404
    assert (await c.post("/incidents/Q0000001/merge", data={"user": "PBOB001"})).status_code == 404

    r = await c.post("/incidents/Q0000001/acknowledge", data={"user": "PBOB001"})
    assert r.status_code == 303 and r.headers["location"].startswith("/incidents/Q0000001")
    inc = (await _rest(c, "/incidents/Q0000001"))["incident"]
    assert inc["status"] == "acknowledged" and inc["acknowledgements"][0]["acknowledger"]["id"] == "PBOB001"
    r = await c.post("/incidents/Q0000001/notes", data={"user": "PBOB001", "content": "rolled back to v41"})
    assert r.status_code == 303
    notes = (await _rest(c, "/incidents/Q0000001/notes"))["notes"]
    assert [(n["content"], n["user"]["id"]) for n in notes] == [("rolled back to v41", "PBOB001")]
    page = (await c.get("/incidents/Q0000001")).text
    assert "note by Bob: rolled back to v41" in page and 'data-testid="acknowledge"' not in page

    # The postmortem draft is the REST API's (what `pitwall incident postmortem` prints), shown and downloadable.
    rest_md = (await c.get("/pagerduty/incidents/Q0000001/postmortem")).text
    page = (await c.get("/incidents/Q0000001?postmortem=1")).text
    shown = page.split('data-testid="postmortem-text">')[1].split("</pre>")[0]
    assert html.unescape(shown) == rest_md and "# Postmortem: [#1] checkout 5xx above 5%" in rest_md
    r = await c.get("/incidents/Q0000001/postmortem.md")
    assert r.status_code == 200 and r.text == rest_md and r.headers["content-type"].startswith("text/markdown")
    assert r.headers["content-disposition"] == 'attachment; filename="postmortem-1.md"'
    assert (await c.get("/incidents/Q0000009/postmortem.md")).status_code == 404

    r = await c.post("/incidents/Q0000001/resolve", data={"user": "PALICE1"})
    assert r.status_code == 303
    assert (await _rest(c, "/incidents/Q0000001"))["incident"]["status"] == "resolved"
    page = (await c.get("/incidents/Q0000001")).text
    assert 'data-testid="resolve"' not in page and "Resolved" in page
    listing = (await c.get("/incidents")).text  # no longer open: among the recently resolved
    assert 'data-incident-id="Q0000001"' not in listing.split('data-testid="incidents-open"')[1].split("</table>")[0]
    assert 'data-incident-id="Q0000001"' in listing.split('data-testid="incidents-resolved"')[1].split("</table>")[0]
    r = await c.get("/incidents/Q0000009")
    assert r.status_code == 404 and "incident Q0000009 not found" in r.text


async def test_actions_need_the_write_scope(tmp_path: Path) -> None:
    from pitwall.config import load_settings
    from pitwall.server import create_app

    read, write = "ui-read-token-0123456789", "ui-write-token-0123456789"
    settings = load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                             kube={"enabled": False}, incidents=incidents_config(),
                             auth_tokens=[{"token": read, "scopes": ["read"], "name": "viewer"},
                                          {"token": write, "scopes": ["read", "write"], "name": "bob@example.com"}])
    app = create_app(settings)
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c):
        ro, rw = {"Authorization": f"Bearer {read}"}, {"Authorization": f"Bearer {write}"}
        r = await c.post("/v2/enqueue", headers=rw, json={"routing_key": ROUTING_KEY, "event_action": "trigger",
                                                          "payload": {"summary": "x", "source": "y",
                                                                      "severity": "info"}})
        assert r.status_code == 202
        assert (await c.get("/incidents/Q0000001", headers=ro)).status_code == 200
        r = await c.post("/incidents/Q0000001/acknowledge", data={"user": "PBOB001"}, headers=ro)
        assert r.status_code == 403
        assert (await _rest_as(c, ro, "/incidents/Q0000001"))["incident"]["status"] == "triggered"
        page = (await c.get("/incidents/Q0000001", headers=rw)).text
        assert '<option value="PBOB001" selected>' in page  # the token's name is Bob's email: he acts
        r = await c.post("/incidents/Q0000001/acknowledge", data={"user": "PBOB001"}, headers=rw)
        assert r.status_code == 303
        assert (await _rest_as(c, ro, "/incidents/Q0000001"))["incident"]["status"] == "acknowledged"


async def _rest_as(c: httpx.AsyncClient, headers: dict[str, str], path: str) -> Any:
    r = await c.get("/pagerduty" + path, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


class _OneIncident:
    """An ``IncidentsSource`` with one open incident (for what the page renders, not what it reads)."""

    async def incident(self, incident_id: str) -> dict[str, Any] | None:
        return _inc(escalation_policy={"id": "PPOLICY", "summary": "Web on-call"}, escalation_level=1,
                    alert_counts={"all": 0, "triggered": 0, "resolved": 0}) if incident_id == "Q0000007" else None

    async def users(self) -> list[dict[str, Any]]:
        return [{"id": "PALICE1", "name": "Alice", "email": "alice@example.com"}]

    async def alerts(self, incident_id: str) -> list[dict[str, Any]]:
        return []

    async def timeline(self, incident_id: str) -> list[dict[str, Any]]:
        return []

    async def oncalls_now(self) -> list[dict[str, Any]]:
        return []

    async def postmortem(self, incident_id: str) -> str:
        return "# Postmortem: <b>x</b>\n"


async def test_every_form_carries_the_sessions_csrf_token() -> None:
    from fastapi import FastAPI

    deps = UIDeps(settings=UISettings(), metrics=cast(Any, None), targets=lambda: TargetsSnapshot([], [], {}),
                  traces=None, logs=None, alerts=None, dashboards=cast(Any, None), incidents=cast(Any, _OneIncident()))
    inner = FastAPI()
    inner.include_router(ui_router(deps))

    async def app(scope: Any, receive: Any, send: Any) -> None:  # what core.oidc leaves for a signed-in session
        await inner({**scope, "pitwall.csrf": "tok-123", "pitwall.principal": SimpleNamespace(name="alice@example.com")},
                    receive, send)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
        page = (await c.get("/incidents/Q0000007?postmortem=1")).text
    forms = [f for f in page.split("<form")[1:] if 'method="post"' in f.split(">")[0]]
    actions = sorted(f.split('action="')[1].split('"')[0] for f in forms)
    assert actions == ["/auth/logout", "/incidents/Q0000007/acknowledge", "/incidents/Q0000007/notes", "/incidents/Q0000007/resolve"]
    assert all('name="csrf_token" value="tok-123"' in f.split("</form>")[0] for f in forms)
    assert "# Postmortem: &lt;b&gt;x&lt;/b&gt;" in page  # the draft is text, escaped
    assert page.count('<option value="PALICE1" selected>') == 3  # the signed-in user acts
