"""The pipeline end to end in process: POST /api/v2/alerts -> route -> group -> webhook."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from pitwall.alerting.model import Alert
from tests.alerting.notify.conftest import validate
from tests.alerting.notify.helpers import Receiver, webhook_config


def _ts(delta_s: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta_s)).isoformat()


async def _wait(pred: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met")


async def test_alerts_grouped_and_delivered_as_webhook_v4(am_app: Any, receiver: Receiver,
                                                          spec_definitions: dict[str, Any]) -> None:
    async with am_app(webhook_config(receiver.url + "/hook", group_wait="300ms")) as c:
        alerts = [{"labels": {"alertname": "HighLatency", "instance": f"api-{i}", "job": "api"},
                   "annotations": {"summary": "slow"}, "generatorURL": "http://prom/graph"} for i in range(3)]
        alerts.append({"labels": {"alertname": "Other", "job": "db"}})
        r = await c.post("/api/v2/alerts", json=alerts)
        assert r.status_code == 200, r.text
        await _wait(lambda: len(receiver.bodies()) == 2)
        bodies = {b["groupLabels"]["alertname"]: b for b in receiver.bodies()}
        hl = bodies["HighLatency"]
        assert hl["version"] == "4" and hl["status"] == "firing" and hl["receiver"] == "hook"
        assert hl["groupKey"] == '{}:{alertname="HighLatency"}'
        assert [a["labels"]["instance"] for a in hl["alerts"]] == ["api-0", "api-1", "api-2"]
        assert hl["commonLabels"] == {"alertname": "HighLatency", "job": "api"}
        assert hl["commonAnnotations"] == {"summary": "slow"}
        assert hl["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
        assert hl["truncatedAlerts"] == 0

        got = (await c.get("/api/v2/alerts")).json()
        validate(spec_definitions, "gettableAlerts", got)
        assert len(got) == 4
        groups = (await c.get("/api/v2/alerts/groups")).json()
        validate(spec_definitions, "alertGroups", groups)
        assert [g["labels"] for g in groups] == [{"alertname": "HighLatency"}, {"alertname": "Other"}]
        assert (await c.get("/api/v2/alerts", params={"filter": 'instance=~"api-[01]"'})).json().__len__() == 2
        assert (await c.get("/api/v2/alerts", params={"receiver": "nope"})).json() == []


async def test_resolved_notification_and_dedup(am_app: Any, receiver: Receiver) -> None:
    async with am_app(webhook_config(receiver.url, group_wait="100ms", group_interval="500ms")) as c:
        a = {"labels": {"alertname": "Flappy"}, "startsAt": _ts(-10)}
        assert (await c.post("/api/v2/alerts", json=[a])).status_code == 200
        await _wait(lambda: len(receiver.bodies()) == 1)
        # Re-posting the same firing alert within repeat_interval notifies nothing new.
        await c.post("/api/v2/alerts", json=[a])
        await asyncio.sleep(1.2)
        assert len(receiver.bodies()) == 1
        await c.post("/api/v2/alerts", json=[{**a, "endsAt": _ts(-1)}])
        await _wait(lambda: len(receiver.bodies()) == 2)
        last = receiver.bodies()[-1]
        assert last["status"] == "resolved" and last["alerts"][0]["status"] == "resolved"


async def test_silence_suppresses_and_api_shapes(am_app: Any, receiver: Receiver,
                                                 spec_definitions: dict[str, Any]) -> None:
    async with am_app(webhook_config(receiver.url, group_wait="200ms")) as c:
        body = {"matchers": [{"name": "alertname", "value": "Muted", "isRegex": False, "isEqual": True}],
                "startsAt": _ts(), "endsAt": _ts(3600), "createdBy": "me", "comment": "quiet"}
        r = await c.post("/api/v2/silences", json=body)
        assert r.status_code == 200, r.text
        sid = r.json()["silenceID"]
        await c.post("/api/v2/alerts", json=[{"labels": {"alertname": "Muted"}},
                                             {"labels": {"alertname": "Loud"}}])
        await _wait(lambda: len(receiver.bodies()) >= 1)
        await asyncio.sleep(0.5)
        assert [b["groupLabels"]["alertname"] for b in receiver.bodies()] == ["Loud"]
        sil = (await c.get(f"/api/v2/silence/{sid}")).json()
        validate(spec_definitions, "gettableSilence", sil)
        assert sil["status"]["state"] == "active"
        listed = (await c.get("/api/v2/silences")).json()
        validate(spec_definitions, "gettableSilences", listed)
        alerts = (await c.get("/api/v2/alerts", params={"silenced": "false"})).json()
        assert [a["labels"]["alertname"] for a in alerts] == ["Loud"]
        muted = [a for a in (await c.get("/api/v2/alerts")).json() if a["labels"]["alertname"] == "Muted"]
        assert muted[0]["status"] == {"state": "suppressed", "silencedBy": [sid], "inhibitedBy": [], "mutedBy": []}

        # Update in place: same matchers, later end keeps the id.
        upd = await c.post("/api/v2/silences", json={**body, "id": sid, "startsAt": sil["startsAt"],
                                                     "endsAt": _ts(7200)})
        assert upd.json()["silenceID"] == sid
        # Changed matchers: the old one is expired and a new id issued.
        new = await c.post("/api/v2/silences", json={**body, "id": sid, "matchers": [
            {"name": "alertname", "value": "Other", "isRegex": False}]})
        assert new.json()["silenceID"] != sid
        assert (await c.get(f"/api/v2/silence/{sid}")).json()["status"]["state"] == "expired"
        assert (await c.delete(f"/api/v2/silence/{new.json()['silenceID']}")).status_code == 200
        assert (await c.get("/api/v2/silence/2f0b8c63-0000-0000-0000-000000000000")).status_code == 404
        assert (await c.post("/api/v2/silences", json={**body, "id": "nope"})).status_code == 404


async def test_bad_requests_answer_json_strings(am_app: Any, receiver: Receiver) -> None:
    async with am_app(webhook_config(receiver.url)) as c:
        r = await c.post("/api/v2/alerts", json=[{"labels": {}}, {"labels": {"a": "b"}}])
        assert r.status_code == 400 and r.json() == "at least one label pair required"
        assert len((await c.get("/api/v2/alerts")).json()) == 1  # the valid one was kept
        r = await c.post("/api/v2/alerts", json=[{"labels": {"a": "b"}, "startsAt": _ts(), "endsAt": _ts(-60)}])
        assert r.status_code == 400 and r.json() == "start time must be before end time"
        r = await c.get("/api/v2/alerts", params={"filter": "a=~("})
        assert r.status_code == 400 and isinstance(r.json(), str)
        past = {"matchers": [{"name": "a", "value": "b", "isRegex": False}], "startsAt": _ts(-7200),
                "endsAt": _ts(-3600), "createdBy": "x", "comment": "y"}
        r = await c.post("/api/v2/silences", json=past)
        assert r.status_code == 400 and r.json() == "Failed to create silence: end time can't be in the past"
        empty = {**past, "endsAt": _ts(60), "matchers": [{"name": "a", "value": ".*", "isRegex": True}]}
        r = await c.post("/api/v2/silences", json=empty)
        assert r.status_code == 400 and "must not match the empty string" in r.json()


async def test_inhibition(am_app: Any, receiver: Receiver) -> None:
    cfg = webhook_config(receiver.url, group_wait="300ms")
    cfg["inhibit_rules"] = [{"source_matchers": ['severity="critical"'], "target_matchers": ['severity="warning"'],
                             "equal": ["cluster"]}]
    async with am_app(cfg) as c:
        await c.post("/api/v2/alerts", json=[
            {"labels": {"alertname": "Down", "severity": "critical", "cluster": "eu"}},
            {"labels": {"alertname": "Slow", "severity": "warning", "cluster": "eu"}},
            {"labels": {"alertname": "Slow2", "severity": "warning", "cluster": "us"}},
        ])
        await _wait(lambda: len(receiver.bodies()) == 2)
        await asyncio.sleep(0.4)
        assert sorted(b["groupLabels"]["alertname"] for b in receiver.bodies()) == ["Down", "Slow2"]
        st = {a["labels"]["alertname"]: a["status"] for a in (await c.get("/api/v2/alerts")).json()}
        assert st["Slow"]["state"] == "suppressed" and len(st["Slow"]["inhibitedBy"]) == 1
        assert st["Slow2"]["state"] == "active"


async def test_routes_continue_and_receivers(am_app: Any, receiver: Receiver,
                                             spec_definitions: dict[str, Any]) -> None:
    cfg = {
        "route": {"receiver": "default", "group_by": ["..."], "group_wait": "100ms", "routes": [
            {"receiver": "a", "matchers": ['team="x"'], "continue": True},
            {"receiver": "b", "match_re": {"team": "x|y"}},
        ]},
        "receivers": [{"name": "default", "webhook_configs": [{"url": receiver.url + "/default"}]},
                      {"name": "a", "webhook_configs": [{"url": receiver.url + "/a"}]},
                      {"name": "b", "webhook_configs": [{"url": receiver.url + "/b"}]}],
    }
    async with am_app(cfg) as c:
        await c.post("/api/v2/alerts", json=[{"labels": {"alertname": "T", "team": "x"}}])
        await _wait(lambda: len(receiver.bodies()) == 2)
        assert sorted(p for p, _, _ in receiver.posts) == ["/a", "/b"]
        b = receiver.bodies("/b")[0]
        assert b["groupKey"] == '{}/{team=~"x|y"}:{alertname="T", team="x"}'
        assert b["groupLabels"] == {"alertname": "T", "team": "x"}
        got = (await c.get("/api/v2/alerts")).json()
        assert got[0]["receivers"] == [{"name": "a"}, {"name": "b"}]
        recv = (await c.get("/api/v2/receivers")).json()
        assert recv == [{"name": "default"}, {"name": "a"}, {"name": "b"}]
        status = (await c.get("/api/v2/status")).json()
        validate(spec_definitions, "alertmanagerStatus", status)
        assert "receiver: default" in status["config"]["original"]


async def test_rule_notify_func_feeds_the_pipeline(am_app: Any, receiver: Receiver) -> None:
    async with am_app(webhook_config(receiver.url, group_wait="100ms")) as c:
        parts = c.app.state.components.notifications  # type: ignore[attr-defined]
        now = datetime.now(UTC)
        await parts.notify([Alert(labels={"alertname": "FromRule", "severity": "page"},
                                  annotations={"summary": "x"}, starts_at=now, ends_at=now + timedelta(minutes=4),
                                  generator_url="http://pitwall/graph")])
        await _wait(lambda: len(receiver.bodies()) == 1)
        assert receiver.bodies()[0]["alerts"][0]["generatorURL"] == "http://pitwall/graph"


async def test_reload_rejects_bad_config_and_keeps_old(am_app: Any, receiver: Receiver, tmp_path: Any) -> None:
    async with am_app(webhook_config(receiver.url)) as c:
        (tmp_path / "alertmanager.yml").write_text("route: {receiver: missing}\nreceivers: [{name: r}]\n")
        r = await c.post("/-/reload")
        assert r.status_code == 500 and 'undefined receiver "missing"' in r.text
        assert (await c.get("/api/v2/receivers")).json() == [{"name": "hook"}]
        (tmp_path / "alertmanager.yml").write_text("route: {receiver: r}\nreceivers: [{name: r}]\n")
        assert (await c.post("/-/reload")).status_code == 200
        assert (await c.get("/api/v2/receivers")).json() == [{"name": "r"}]


async def test_alert_limit_answers_429(am_app: Any, receiver: Receiver) -> None:
    async with am_app(webhook_config(receiver.url), max_alerts=2) as c:
        ok = await c.post("/api/v2/alerts", json=[{"labels": {"alertname": "a"}}, {"labels": {"alertname": "b"}}])
        assert ok.status_code == 200
        r = await c.post("/api/v2/alerts", json=[{"labels": {"alertname": "c"}}])
        assert r.status_code == 429 and "too many alerts" in r.json()
        assert (await c.post("/api/v2/alerts", json=[{"labels": {"alertname": "a"}}])).status_code == 200


async def test_no_alertmanager_config_still_serves_api(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v2/alerts", json=[{"labels": {"alertname": "x"}}])
    assert r.status_code == 200
    assert (await client.get("/api/v2/receivers")).json() == [{"name": "default"}]


async def test_stop_awaits_deliveries_in_flight(am_app: Any) -> None:
    """A delivery hanging on a silent receiver is cancelled and awaited on stop: no task
    of the pipeline outlives it (deliveries were once started with no reference)."""
    accepted = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        try:
            await reader.read()  # never answers; ends when the client hangs up
        finally:
            writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with am_app(webhook_config(f"http://127.0.0.1:{port}/hook", group_wait="50ms")) as c:
            r = await c.post("/api/v2/alerts", json=[{"labels": {"alertname": "Hang"}}])
            assert r.status_code == 200
            await asyncio.wait_for(accepted.wait(), 10)
            pipeline = c.app.state.components.notifications.pipeline  # type: ignore[attr-defined]
            assert pipeline.tasks.running >= 3  # the two loops and the delivery
        assert pipeline.tasks.running == 0
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("notifications/")]
        assert pipeline.tasks.healthy
    finally:
        server.close()
        await server.wait_closed()
