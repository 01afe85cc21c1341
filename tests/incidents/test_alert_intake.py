"""pitwall's alerting into its incidents in process: ``pitwall_incident_configs`` end to end.

A real rule group (evaluated at chosen timestamps: the rule clock is fake) sends its alerts to the real
notification pipeline of an in-process pitwall (``create_app``, no control plane), whose receiver hands
events to the incidents capability wired at the composition root. The service's ``alert_dedup`` decides
whether a notification group is one alert (``group``) or each alert is one (``alert``). Waits poll the
state until it changes; nothing asserts on durations.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pitwall.alerting.notify.notifiers.pagerduty import group_dedup_key
from pitwall.alerting.notify.pipeline import NotificationPipeline
from pitwall.alerting.rules.alerting_rule import AlertingRule
from pitwall.alerting.rules.base import OutSample, Vector
from pitwall.alerting.rules.group import Group
from pitwall.config import load_settings
from pitwall.core.errors import ConfigError
from pitwall.incidents import AlertIntake, IncidentService
from pitwall.incidents.errors import InvalidEvent, NotFoundError
from pitwall.incidents.model import Alert, Incident
from tests.incidents.conftest import ROUTING_KEY, incidents_config

pytestmark = [pytest.mark.timeout(120)]

MIN = 60_000
HOUR = 60 * MIN
GROUP_KEY = '{}:{alertname="DiskFull"}'  # the root route grouping by alertname


def _am_config() -> dict[str, Any]:
    return {
        "route": {"receiver": "incidents", "group_by": ["alertname"], "group_wait": "50ms",
                  "group_interval": "100ms", "repeat_interval": "1h"},
        "receivers": [{"name": "incidents", "pitwall_incident_configs": [{"service": "web", "severity": "critical"}]}],
    }


@dataclass
class World:
    """The rule group (``fire(t, hosts)`` evaluates it at minute ``t`` with those hosts' disks full), the
    pipeline and the incidents service of one in-process pitwall."""

    group: Group
    data: Vector
    pipeline: NotificationPipeline
    incidents: IncidentService
    t0_ms: int

    async def fire(self, minute: int, *hosts: str) -> None:
        self.data[:] = [((("__name__", "disk_full"), ("instance", h)), 1.0) for h in hosts]
        await self.group.eval(self.t0_ms + minute * MIN)

    async def all(self) -> list[Incident]:
        return await self.incidents.store.incidents()

    async def alerts(self, inc: Incident) -> list[Alert]:
        return await self.incidents.store.alerts(inc.id)

    async def until(self, what: str, check: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            assert time.monotonic() < deadline, f"not reached: {what}"
            await asyncio.sleep(0.02)

    async def delivered(self, n: int) -> None:
        """Wait until the pipeline has delivered ``n`` notifications in all (and retried none)."""
        await self.until(f"{n} notifications delivered", lambda: _true(self.pipeline.delivered >= n))
        assert self.pipeline.failed == 0


async def _true(v: bool) -> bool:
    return v


@asynccontextmanager
async def world(tmp_path: Path, alert_dedup: str, t0_ms: int | None = None) -> AsyncIterator[World]:
    from pitwall.server import create_app

    am = tmp_path / "alertmanager.yml"
    am.write_text(yaml.safe_dump(_am_config()))
    cfg = incidents_config()
    cfg["services"][0]["alert_dedup"] = alert_dedup
    settings = load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                             kube={"enabled": False}, incidents=cfg, alertmanager_config=am)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        comps = app.state.components
        data: Vector = []

        async def discard(samples: list[OutSample]) -> None:
            return None

        # The rule's evaluation interval is long, so a firing alert stays valid (endsAt = eval + 4 h) while
        # its timestamps lie in the past: a resolved one (endsAt = its eval) has ended by the real clock.
        rule = AlertingRule("DiskFull", "disk_full > 0", hold_ms=0, keep_firing_for_ms=0, labels={},
                            annotations={"summary": "disk full on {{ $labels.instance }}"},
                            query=lambda expr, at: list(data))
        group = Group("disk", "disk.yml", [rule], interval_ms=HOUR, append=discard,
                      notify=comps.notifications.notify, offload=False)
        start = t0_ms if t0_ms is not None else (int(time.time() * 1000) // MIN - 50) * MIN
        yield World(group, data, comps.notifications.pipeline, comps.incidents.service, start)


async def test_group_dedup_one_alert_per_notification_group(tmp_path: Path) -> None:
    async with world(tmp_path, "group") as w:
        await w.fire(0, "db1", "db2")
        await w.delivered(1)
        (inc,) = await w.all()
        (alert,) = await w.alerts(inc)
        assert inc.incident_key == alert.dedup_key == group_dedup_key(GROUP_KEY)
        assert inc.urgency == "high" and alert.severity == "critical" and inc.title.startswith("[FIRING:2] DiskFull")

        await w.fire(10, "db1")  # db2 resolves: the group is still firing, so is its one alert
        await w.delivered(2)
        (inc,) = await w.all()
        assert inc.status == "triggered" and [a.status for a in await w.alerts(inc)] == ["triggered"]

        await w.fire(20)  # both resolved: the group resolves, so does the incident
        await w.delivered(3)
        (inc,) = await w.all()
        assert inc.status == "resolved"

        await w.fire(30, "db1")  # the same group fires again: a new incident, the resolved one absorbs nothing
        await w.delivered(4)
        old, new = await w.all()
        assert (old.id, old.status, new.status) == (inc.id, "resolved", "triggered")
        assert new.incident_key == inc.incident_key and len(await w.alerts(new)) == 1


async def test_alert_dedup_one_incident_one_alert_each(tmp_path: Path) -> None:
    async with world(tmp_path, "alert") as w:
        await w.fire(0, "db1", "db2")
        await w.delivered(1)
        (inc,) = await w.all()
        alerts = await w.alerts(inc)
        assert inc.incident_key == group_dedup_key(GROUP_KEY)
        assert sorted(a.summary for a in alerts) == ["[FIRING:1] DiskFull (db1)", "[FIRING:1] DiskFull (db2)"]
        assert all(len(a.dedup_key) == 16 for a in alerts)  # the alerts' fingerprints
        by_host = {a.summary.split("(")[1].rstrip(")"): a for a in alerts}
        assert inc.alert_counts == {"all": 2, "triggered": 2, "resolved": 0}

        await w.fire(10, "db1")  # db2 resolves: its alert resolves, the incident stays open with db1's
        await w.delivered(2)
        (inc,) = await w.all()
        status = {a.id: a.status for a in await w.alerts(inc)}
        assert inc.status == "triggered" and inc.alert_counts == {"all": 2, "triggered": 1, "resolved": 1}
        assert (status[by_host["db1"].id], status[by_host["db2"].id]) == ("triggered", "resolved")

        await w.fire(20)  # db1 resolves too: the incident resolves with its last alert
        await w.delivered(3)
        (inc,) = await w.all()
        assert inc.status == "resolved" and {a.status for a in await w.alerts(inc)} == {"resolved"}

        await w.fire(30, "db2")  # fires again under the same keys: a new incident
        await w.delivered(4)
        old, new = await w.all()
        assert (old.id, old.status, new.status) == (inc.id, "resolved", "triggered")
        (again,) = await w.alerts(new)
        assert again.dedup_key == by_host["db2"].dedup_key and new.incident_key == inc.incident_key


async def test_a_restart_sends_nothing_twice(tmp_path: Path) -> None:
    """The notification log holds for this receiver as for the others: the same alerts re-sent by a restarted
    rule manager notify nothing; a new alert in the group still does."""
    async with world(tmp_path, "alert") as w:
        t0 = w.t0_ms
        await w.fire(0, "db1", "db2")
        await w.delivered(1)
        (inc,) = await w.all()
        entries = len(await w.incidents.store.log_entries(inc.id))
    async with world(tmp_path, "alert", t0) as w:
        flushes = 0
        dispatcher = w.pipeline.rt.dispatcher
        inner = dispatcher.notify

        async def counted(*args: Any) -> bool:  # the groups made from here on flush through this
            nonlocal flushes
            ok = await inner(*args)
            flushes += 1
            return ok

        dispatcher.notify = counted
        await w.fire(0, "db1", "db2")
        await w.until("the group flushed after the restart",
                      lambda: _true(flushes >= 1 and w.pipeline.state.count_pending() == 0))
        assert w.pipeline.delivered == 0
        (same,) = await w.all()
        assert len(await w.incidents.store.log_entries(inc.id)) == entries and same.alert_counts["all"] == 2
        await w.fire(5, "db1", "db2", "db3")
        await w.delivered(1)
        (same,) = await w.all()
        assert same.id == inc.id and same.alert_counts == {"all": 3, "triggered": 3, "resolved": 0}


async def test_intake_finds_services_and_names_each_problem(tmp_path: Path) -> None:
    async with world(tmp_path, "group") as w:
        intake = AlertIntake(w.incidents)
        for ref in ("PWEB001", "web", ROUTING_KEY):
            assert (await intake.find(ref)).id == "PWEB001"
        assert await intake.alert_dedup("api") == "group"
        with pytest.raises(NotFoundError, match="no incidents service with id, integration key or name 'nope'"):
            await intake.alert_dedup("nope")
        with pytest.raises(InvalidEvent) as e:
            await intake.enqueue("web", [
                {"event_action": "trigger", "payload": {"summary": "ok", "source": "x", "severity": "error"}},
                {"event_action": "trigger", "payload": {"source": "x", "severity": "fatal"}}])
        assert "'payload.summary' is missing or blank" in e.value.message
        assert "'payload.severity' is invalid" in e.value.message and "routing_key" not in e.value.message
        assert await w.all() == []  # one invalid event refuses the batch: the valid one opened nothing


async def test_alert_dedup_is_a_field_of_the_rest_service(pd: httpx.AsyncClient) -> None:
    r = await pd.get("/pagerduty/services/PWEB001")
    assert r.json()["service"]["alert_dedup"] == "group"  # Alertmanager's way by default
    r = await pd.put("/pagerduty/services/PWEB001", json={"service": {"alert_dedup": "alert"}})
    assert r.status_code == 200 and r.json()["service"]["alert_dedup"] == "alert"
    r = await pd.put("/pagerduty/services/PWEB001", json={"service": {"description": "kept"}})
    assert r.json()["service"]["alert_dedup"] == "alert"  # a PUT without it keeps it
    r = await pd.put("/pagerduty/services/PWEB001", json={"service": {"alert_dedup": "incident"}})
    assert r.status_code == 400 and "alert_dedup" in str(r.json()["error"]["errors"])
    r = await pd.put("/pagerduty/services/PWEB001", json={"service": {"alert_creation": "create_incidents"}})
    assert r.status_code == 400
    assert "alert_dedup: dedup per alert requires alert_creation create_alerts_and_incidents" in str(r.json())


def test_alert_dedup_in_settings_names_the_key(tmp_path: Path) -> None:
    cfg = incidents_config()
    cfg["services"][0].update(alert_dedup="alert", alert_creation="create_incidents")
    with pytest.raises(ConfigError, match="alert_dedup: dedup per alert requires alert_creation"):
        load_settings(data_dir=tmp_path, incidents=cfg)
    cfg["services"][0].update(alert_dedup="per-alert", alert_creation="create_alerts_and_incidents")
    with pytest.raises(ConfigError, match=r"incidents\.services\[0\]\.alert_dedup: Input should be .group. or .alert."):
        load_settings(data_dir=tmp_path, incidents=cfg)
