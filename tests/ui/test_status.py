"""The status page: build, redacted config, storage and WAL, cardinality, rule files, ingestion, limits hit."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from tests.ui.seed import RULES, _remote_write

from pitwall.config import Settings, load_settings
from pitwall.ui.status_view import REDACTED, cardinality, redact

pytestmark = pytest.mark.timeout(60)


def test_redact_by_key_and_url_userinfo() -> None:
    cfg = {"auth": {"tokens": [{"token": "s3cr3t", "name": "ci"}]}, "storage": {"etcd": {"password": "pw"}},
           "receivers": [{"slack_api_url": "https://user:pass@hooks.example/x", "routing_key": "rk"}],
           "key_file": "", "listen": "0.0.0.0:9900", "keyboard": "kept"}
    out = redact(cfg)
    assert out["auth"]["tokens"] == [{"token": REDACTED, "name": "ci"}]
    assert out["storage"]["etcd"]["password"] == REDACTED
    assert redact({"tokens": ["a", "b"]}) == {"tokens": [REDACTED, REDACTED]}
    assert out["receivers"][0]["slack_api_url"] == f"https://{REDACTED}@hooks.example/x"
    assert out["receivers"][0]["routing_key"] == REDACTED
    assert out["key_file"] == "" and out["listen"] == "0.0.0.0:9900" and out["keyboard"] == "kept"


def test_cardinality_counts() -> None:
    series = [(("__name__", "a"), ("job", "x"), ("i", str(k))) for k in range(5)]
    series += [(("__name__", "b"), ("job", "x"))]
    c = cardinality(series, top=2)
    assert (c.series, c.label_names) == (6, 3)
    assert c.by_metric == [("a", 5), ("b", 1)]
    assert c.by_label_values == [("i", 5), ("__name__", 2)]
    assert c.by_label_pair == [("job=x", 6), ("__name__=a", 5)]
    assert cardinality(series, max_series=3).truncated


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    rules = tmp_path / "ui.rules.yaml"
    rules.write_text(RULES)
    # No control plane: its own series (kube-state-metrics, the node's) would crowd the cardinality tops.
    return load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                         rule_files=[str(rules)], kube={"enabled": False})


async def test_status_page_and_api(client: httpx.AsyncClient, settings: Settings) -> None:
    now = int(time.time() * 1000)
    series = [({"__name__": "req_total", "job": "api", "instance": f"i{k}"}, [(now - 60_000, 1.0), (now, 2.0)])
              for k in range(4)]
    series.append(({"__name__": "up", "job": "api"}, [(now, 1.0)]))
    r = await client.post("/api/v1/write", content=_remote_write(series),
                          headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"})
    assert r.status_code == 204
    too_big = await client.post("/api/ui/v1/dashboards/import", content=b"x" * ((8 << 20) + 1))
    assert too_big.status_code == 413
    body = (await client.get("/api/ui/v1/status")).json()
    assert body["status"] == "success"
    s = body["data"]
    assert s["build"]["version"] and s["build"]["uptime_s"] >= 0
    card = s["cardinality"]
    # (the server's own series, such as its rules' ALERTS, are counted too)
    assert card["series"] >= 5 and ["req_total", 4] in card["by_metric"]
    assert ["job=api", 5] in card["by_label_pair"] and ["__name__=req_total", 4] in card["by_label_pair"]
    assert s["storage"]["data_dir"] == str(settings.data_dir.resolve())
    assert {w["name"] for w in s["storage"]["wal"]} >= {"metrics"}
    assert s["storage"]["head_series"] >= 5
    assert any(r["name"] == "metric samples" and r["total"] >= 9 for r in s["ingestion"]["rows"])
    assert any("413" in lim["what"] and "dashboards/import" in lim["what"] for lim in s["limits"])
    assert [(f["file"].endswith("ui.rules.yaml"), f["groups"], f["rules"]) for f in s["rule_files"]] == [(True, 1, 1)]
    assert "rule_files:" in s["config"] and "data_dir:" in s["config"]
    page = await client.get("/status")
    assert page.status_code == 200
    for testid in ("status-build", "status-storage", "status-cardinality", "status-rules", "status-config",
                   "status-ingestion", "status-limits"):
        assert f'data-testid="{testid}"' in page.text
    assert ">req_total</a>" in page.text
