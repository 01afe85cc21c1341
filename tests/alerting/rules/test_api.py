"""/api/v1/rules and /api/v1/alerts through the app, rule_files from pitwall.yaml, and reload."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from pitwall.config import load_settings
from pitwall.metrics.model import SampleBatch
from pitwall.server import create_app

RULES = """groups:
  - name: node
    interval: 1m
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: InstanceDown
        expr: up == 0
        labels: {severity: page}
        annotations: {summary: "{{ $labels.instance }} is down"}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "rules.yml").write_text(RULES)
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text("rule_files: ['*.yml']\nglobal: {external_labels: {cluster: c1}}\n")
    return cfg


async def _app_client(config: Path, tmp_path: Path) -> tuple[object, httpx.AsyncClient]:
    settings = load_settings(config, data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False})
    app = create_app(settings)
    return app, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


async def test_rules_api_shape_and_filters(config: Path, tmp_path: Path) -> None:
    app, client = await _app_client(config, tmp_path)
    async with app.router.lifespan_context(app), client:  # type: ignore[attr-defined]
        c = app.state.components  # type: ignore[attr-defined]
        # This test drives evaluation by hand: the group's own loop, had it run twice first (1-2 intervals,
        # then one more), would restore the 'for' state and write ALERTS before the check below expects it.
        # So the interval is a minute (it was 1 s, and a loaded CI machine got there before the stop below).
        await c.rules.manager.stop()
        now = int(time.time() * 1000)
        await c.metrics.store.append("default", SampleBatch.from_rows(
            [((("__name__", "up"), ("instance", "a"), ("job", "node")), now, 0.0)]))
        (group,) = c.rules.manager.rule_groups()
        await group.eval(now)
        r = await client.get("/api/v1/rules")
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success"
        (g,) = body["data"]["groups"]
        assert (g["name"], g["file"], g["interval"], g["limit"]) == ("node", str(tmp_path / "rules.yml"), 60, 0)
        rec, alert = g["rules"]
        assert (rec["type"], rec["name"], rec["health"]) == ("recording", "job:up:sum", "ok")
        assert alert["type"] == "alerting" and alert["state"] == "firing" and alert["duration"] == 0
        (a,) = alert["alerts"]
        assert a["labels"] == {"alertname": "InstanceDown", "instance": "a", "job": "node", "severity": "page"}
        assert a["annotations"] == {"summary": "a is down"} and a["value"] == "0e+00"
        r = await client.get("/api/v1/rules", params={"type": "record"})
        assert [x["name"] for x in r.json()["data"]["groups"][0]["rules"]] == ["job:up:sum"]
        r = await client.get("/api/v1/rules", params={"rule_name[]": "nope"})
        assert r.json()["data"]["groups"] == []
        r = await client.get("/api/v1/rules", params={"type": "alert", "exclude_alerts": "true"})
        assert "alerts" not in r.json()["data"]["groups"][0]["rules"][0]
        r = await client.get("/api/v1/rules", params={"type": "bogus"})
        assert r.status_code == 400
        assert r.json() == {"status": "error", "errorType": "bad_data",
                            "error": 'invalid parameter "type": not supported value "bogus"'}
        r = await client.get("/api/v1/alerts")
        (a2,) = r.json()["data"]["alerts"]
        assert a2["state"] == "firing" and a2["labels"]["instance"] == "a"
        # The recording rule and ALERTS were written back through the store.
        r = await client.get("/api/v1/query", params={"query": "job:up:sum", "time": now / 1000})
        assert r.json()["data"]["result"][0]["value"][1] == "0"
        # As in Prometheus, ALERTS is written only once 'for' state has been restored after startup.
        r = await client.get("/api/v1/query", params={"query": "ALERTS", "time": now / 1000})
        assert r.json()["data"]["result"] == []
        group.restore_for_state(now, c.metrics.store.querier(), 600_000, 3_600_000)
        await group.eval(now + 1000)
        r = await client.get("/api/v1/query", params={"query": "ALERTS", "time": now / 1000 + 1})
        assert r.json()["data"]["result"][0]["metric"]["alertstate"] == "firing"


async def test_reload_swaps_rules_and_keeps_old_on_error(config: Path, tmp_path: Path) -> None:
    app, client = await _app_client(config, tmp_path)
    async with app.router.lifespan_context(app), client:  # type: ignore[attr-defined]
        (tmp_path / "rules.yml").write_text(RULES.replace("job:up:sum", "job:up:count"))
        assert (await client.post("/-/reload")).status_code == 200
        r = await client.get("/api/v1/rules", params={"type": "record"})
        assert r.json()["data"]["groups"][0]["rules"][0]["name"] == "job:up:count"
        (tmp_path / "rules.yml").write_text(RULES.replace("up == 0", "up =="))
        r = await client.post("/-/reload")
        assert r.status_code == 500 and "could not parse expression" in r.text
        r = await client.get("/api/v1/rules", params={"type": "record"})
        assert r.json()["data"]["groups"][0]["rules"][0]["name"] == "job:up:count"


def test_bad_rule_file_fails_startup(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: 'up =='\n")
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text("rule_files: [bad.yml]\n")
    settings = load_settings(cfg, data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False})
    with pytest.raises(Exception, match="could not parse expression"):
        create_app(settings)


def test_alerting_section_is_typed(tmp_path: Path) -> None:
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text("alerting:\n  alertmanagers:\n    - static_configs: [{targets: ['am:9093']}]\n"
                   "      path_prefix: /am\n")
    s = load_settings(cfg, data_dir=tmp_path / "d", listen="127.0.0.1:0")
    assert s.alerting.alertmanagers[0].urls() == ["http://am:9093/am"]
    cfg.write_text("alerting:\n  alertmanagers:\n    - nope: 1\n")
    with pytest.raises(Exception, match="unknown setting"):
        load_settings(cfg, data_dir=tmp_path / "d", listen="127.0.0.1:0")


async def test_alertmanager_notify_posts_v2_alerts() -> None:
    import datetime as dt

    from pitwall.alerting.model import Alert
    from pitwall.alerting.rules.notifier import alertmanager_notify

    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as c:
        notify = alertmanager_notify("http://am:9093/", client=c)
        t = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        await notify([Alert({"alertname": "X"}, {"s": "y"}, t, t + dt.timedelta(minutes=4), "http://g")])
    (req,) = seen
    assert str(req.url) == "http://am:9093/api/v2/alerts"
    import json

    assert json.loads(req.content) == [{"labels": {"alertname": "X"}, "annotations": {"s": "y"},
                                        "startsAt": "2024-01-01T00:00:00.000Z", "endsAt": "2024-01-01T00:04:00.000Z",
                                        "generatorURL": "http://g"}]
    _ = np  # numpy is used by SampleBatch in the other tests
