"""Chaos Monkey's schedule: its documented defaults, p = 1/mean per work day, groups, exceptions, the minimum
time between kills, leashed and outage skips, and kills of real pods through the Kubernetes API."""

from __future__ import annotations

import datetime as dt
import random
import re
import tomllib
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from pitwall.chaos.monkey import (
    ANNOTATION,
    AppConfig,
    ChaosMonkey,
    Cluster,
    app_config,
    plan_day,
    workdays_between,
)
from pitwall.chaos.settings import MonkeySettings
from pitwall.incidents import ChangeEvent
from pitwall.kube import KubeAPI
from tests.conftest import SHARED
from tests.kube_fixture import started_kube

pytestmark = pytest.mark.timeout(60)
DOCS = SHARED / "conformance" / "wave2" / "chaosmonkey" / "docs"
MONDAY = dt.date(2026, 12, 7)


def test_an_empty_config_is_chaos_monkeys_documented_defaults() -> None:
    text = (DOCS / "Configuration-file-format.md").read_text()
    block = re.search(r"### Defaults.*?```\n(.*?)```", text, re.S)
    assert block is not None
    documented = tomllib.loads(block.group(1))["chaosmonkey"]
    ours = {k: v for k, v in documented.items() if k in MonkeySettings.model_fields}
    assert len(ours) == 8  # enabled, leashed, schedule_enabled, accounts, hours, time_zone, max_apps
    assert MonkeySettings(**ours) == MonkeySettings() == MonkeySettings(**tomllib.loads("[chaosmonkey]")["chaosmonkey"])
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        MonkeySettings(time_zone="Mars/Olympus")


def test_p_is_one_over_the_mean_on_work_days_only() -> None:
    s = MonkeySettings(enabled=True, schedule_enabled=True)
    apps = [(Cluster("shop", "web", {"app": "web"}), AppConfig(enabled=True, mean_days=5))]
    rng = random.Random(7)
    days = [MONDAY + dt.timedelta(days=i) for i in range(2800)]
    plans = {d: plan_day(d, apps, s, rng) for d in days}
    workdays = [d for d in days if d.weekday() < 5]
    assert all(not plans[d] for d in days if d.weekday() >= 5)
    share = sum(1 for d in workdays if plans[d]) / len(workdays)
    assert 0.17 < share < 0.23  # 2000 work days, p = 0.2: three standard deviations is ±0.027
    la = ZoneInfo("America/Los_Angeles")
    for d in workdays:
        for t in plans[d]:
            at = dt.datetime.fromtimestamp(t.at, la)
            assert at.date() == d and 9 <= at.hour < 15
    always = [(Cluster("shop", "web", {}), AppConfig(enabled=True, mean_days=1))]
    assert all(plan_day(d, always, s, rng) for d in workdays[:50])  # mean 1: p = 1, a kill every work day


def test_groups_exceptions_and_opt_in() -> None:
    s = MonkeySettings(enabled=True, schedule_enabled=True)
    rng = random.Random(1)
    clusters = [Cluster("prod", "shop-api-v1", {}), Cluster("prod", "shop-api-v2", {}),
                Cluster("prod", "shop-web", {}), Cluster("test", "shop-api", {})]

    def groups(cfg: AppConfig) -> list[str]:
        return sorted(t.group for t in plan_day(MONDAY, [(c, cfg) for c in clusters], s, rng))

    assert groups(AppConfig(enabled=True, grouping="cluster", mean_days=1)) == [
        "prod/pitwall/shop-api-v1", "prod/pitwall/shop-api-v2", "prod/pitwall/shop-web", "test/pitwall/shop-api"]
    assert groups(AppConfig(enabled=True, grouping="stack", mean_days=1)) == [
        "prod/pitwall/shop-api", "prod/pitwall/shop-web", "test/pitwall/shop-api"]
    assert groups(AppConfig(enabled=True, grouping="app", mean_days=1)) == ["prod/pitwall/shop", "test/pitwall/shop"]
    # Spinnaker's example: prod's staging stack with a blank detail, and all of test
    exc = (("prod", "pitwall", "web", ""), ("test", "*", "*", "*"))
    assert groups(AppConfig(enabled=True, mean_days=1, exceptions=exc)) == [
        "prod/pitwall/shop-api-v1", "prod/pitwall/shop-api-v2"]
    assert groups(AppConfig(enabled=False, mean_days=1)) == []
    only_test = MonkeySettings(enabled=True, accounts=["test"])
    assert [t.group for t in plan_day(MONDAY, [(c, AppConfig(enabled=True, mean_days=1)) for c in clusters],
                                      only_test, rng)] == ["test/pitwall/shop-api"]


def test_app_config_is_spinnakers_json_with_clear_errors() -> None:
    cfg = app_config('{"enabled": true, "grouping": "app", "meanTimeBetweenKillsInWorkDays": 3, '
                     '"minTimeBetweenKillsInWorkDays": 2, "exceptions": [{"account": "prod", "region": "*", '
                     '"stack": "*", "detail": "*"}]}')
    assert (cfg.enabled, cfg.grouping, cfg.mean_days, cfg.min_days) == (True, "app", 3, 2)
    assert cfg.exceptions == (("prod", "*", "*", "*"),)
    assert app_config("{}") == AppConfig()  # Spinnaker's defaults: off, cluster, mean 2, min 1
    for raw, msg in (('{"grouping": "region"}', "grouping must be one of app, stack, cluster"),
                     ('{"meanTimeBetweenKillsInWorkDays": 0}', "at least 1"),
                     ("nope", "not JSON")):
        with pytest.raises(ValueError, match=msg):
            app_config(raw)


def test_workdays_between() -> None:
    friday = MONDAY - dt.timedelta(days=3)
    assert workdays_between(friday, MONDAY) == 1 and workdays_between(MONDAY, MONDAY) == 0
    assert workdays_between(MONDAY, MONDAY + dt.timedelta(days=7)) == 5


class _Changes:
    def __init__(self) -> None:
        self.events: list[ChangeEvent] = []

    async def record(self, event: ChangeEvent) -> ChangeEvent:
        self.events.append(event)
        return event


async def _shop(kube: KubeAPI, cfg: dict[str, Any]) -> None:
    await kube.client.create({"apiVersion": "apps/v1", "kind": "Deployment",
                              "metadata": {"name": "shop-api", "namespace": "default",
                                           "annotations": {ANNOTATION: orjson.dumps(cfg).decode()}},
                              "spec": {"selector": {"matchLabels": {"app": "shop"}},
                                       "template": {"metadata": {"labels": {"app": "shop"}},
                                                    "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
    for i in range(2):
        pod = await kube.client.create({"apiVersion": "v1", "kind": "Pod",
                                        "metadata": {"name": f"shop-api-{i}", "namespace": "default",
                                                     "labels": {"app": "shop"}},
                                        "spec": {"containers": [{"name": "c", "image": "x"}]}})
        pod["status"] = {"phase": "Running"}
        await kube.client.update_status(pod)


async def _pods(kube: KubeAPI) -> list[str]:
    return sorted(p["metadata"]["name"] for p in (await kube.client.list("v1", "Pod", "default")).items)


async def test_kills_a_pod_once_per_group_and_respects_min_time_leash_and_outage(tmp_path: Path) -> None:
    la = dt.timezone(dt.timedelta(hours=-8))
    clock = {"now": dt.datetime(2026, 12, 7, 16, 0, tzinfo=la).timestamp()}  # Monday, after 15:00: all due
    changes = _Changes()
    async with started_kube(tmp_path) as kube:
        await _shop(kube, {"enabled": True, "meanTimeBetweenKillsInWorkDays": 1, "minTimeBetweenKillsInWorkDays": 2})
        s = MonkeySettings(enabled=True, schedule_enabled=True, leashed=False)
        monkey = ChaosMonkey(kube.client, kube.store, s, changes, clock=lambda: clock["now"], rng=random.Random(3))
        plan = await monkey.tick()
        assert [t.done for t in plan] == [f"killed pod default/{(set(['shop-api-0', 'shop-api-1']) - set(await _pods(kube))).pop()}"]
        assert len(await _pods(kube)) == 1
        assert (await monkey.tick())[0].done == plan[0].done and len(await _pods(kube)) == 1  # once a day
        clock["now"] += 86400  # Tuesday: 1 work day since the kill, under the minimum of 2
        assert (await monkey.tick())[0].done.startswith("skipped: last kill in this group on 2026-12-07")
        clock["now"] += 86400  # Wednesday: 2 work days, but an outage is going on
        async def outage() -> str | None:
            return "open incidents #4"
        monkey.outage = outage
        assert (await monkey.tick())[0].done == "skipped: outage (open incidents #4)"
        monkey.outage = None
        clock["now"] += 86400  # Thursday, leashed: only recorded
        monkey.settings = MonkeySettings(enabled=True, schedule_enabled=True, leashed=True)
        assert (await monkey.tick())[0].done == "leashed: would kill pod default/" + (await _pods(kube))[0]
        assert len(await _pods(kube)) == 1
        # a restart keeps the day's schedule: nothing happens twice
        again = ChaosMonkey(kube.client, kube.store, s, changes, clock=lambda: clock["now"], rng=random.Random(9))
        assert (await again.tick())[0].done.startswith("leashed") and len(await _pods(kube)) == 1
    summaries = [e.summary for e in changes.events]
    assert summaries[0].startswith("Chaos Monkey killed pod default/shop-api-") and len(summaries) == 4
    assert all(e.kind == "chaos" and e.service == "default/shop-api" for e in changes.events)
