"""LogQL rules (Loki ruler format) evaluated over the logs pillar, configured by rules.logql_rule_files."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from pitwall.config import load_settings
from pitwall.server import create_app

LOGQL_RULES = """groups:
  - name: logs
    rules:
      - record: app:errors:count5m
        expr: sum by (app) (count_over_time({app="api"} |= "error" [5m]))
      - alert: ManyErrors
        expr: sum by (app) (count_over_time({app="api"} |= "error" [5m])) > 1
        annotations:
          summary: "{{ $labels.app }} logged {{ $value }} errors"
"""


async def test_logql_rules_fire_from_pushed_logs(tmp_path: Path) -> None:
    (tmp_path / "logs.yml").write_text(LOGQL_RULES)
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text("rules:\n  logql_rule_files: ['logs.yml']\n")
    settings = load_settings(cfg, data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            now_ns = time.time_ns() // 1_000_000 * 1_000_000  # rules evaluate at millisecond times
            values = [[str(now_ns - i * 1_000_000_000), line] for i, line in
                      enumerate(["error: a", "ok", "error: b", "error: c"])]
            r = await client.post("/loki/api/v1/push", json={"streams": [{"stream": {"app": "api"},
                                                                          "values": values}]})
            assert r.status_code == 204, r.text
            c = app.state.components
            (group,) = c.rules.manager.rule_groups()
            await group.eval(now_ns // 1_000_000)
            rec, alert = group.rules
            assert rec.health == "ok" and alert.health == "ok", (rec.last_error, alert.last_error)
            (a,) = alert.active_alerts()
            assert dict(a.labels) == {"alertname": "ManyErrors", "app": "api"}
            assert a.annotations == {"summary": "api logged 3 errors"}
            r = await client.get("/api/v1/query", params={"query": "app:errors:count5m",
                                                          "time": now_ns / 1e9})
            assert r.json()["data"]["result"][0]["value"][1] == "3"


def test_log_query_is_rejected_in_rules(tmp_path: Path) -> None:
    from pitwall.alerting.rules.base import logql_check
    from pitwall.alerting.rules.rulefmt import parse_rules

    _g, errs = parse_rules("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: '{app=\"x\"}'\n",
                           "f.yml", logql_check)
    assert errs == ['5:15: group "g", rule 1, "A": could not parse expression: '
                    "rule expressions must be LogQL metric queries"]
