"""The releases pages: view functions on Canary objects, and the routes over a real KubeAPI (SQLite) with
Flagger's and Istio's CRDs through ``ReleasesConsole``, with the change events of a ``ChangeLog``."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from tests.kube_fixture import started_kube
from tests.ui.app import ui_client, ui_deps

from pitwall.incidents import ChangeEvent, ChangeLog
from pitwall.kube import KubeAPI, KubeClient
from pitwall.releases import JudgeConfig, MetricInput, ReleasesConsole, flagger_crds, judge
from pitwall.releases.verdicts import JUDGEMENT, judged_condition, judgement_annotation
from pitwall.traffic.istio_crds import istio_crds
from pitwall.ui.releases_view import canary_charts, canary_row, change_rows, metric_rows, plan, verdicts
from pitwall.ui.timerange import TimeRange

pytestmark = pytest.mark.timeout(30)

NOW = "2026-01-01T10:00:00Z"


def canary(**status: Any) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                     "service": {"port": 9898},
                     "analysis": {"interval": "10s", "threshold": 5, "maxWeight": 50, "stepWeight": 10,
                                  "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99},
                                               "interval": "1m"},
                                              {"name": "latency", "templateRef": {"name": "latency-judge"},
                                               "thresholdRange": {"max": 1}}]}},
            "status": status}


def _judgement() -> tuple[Any, str]:
    good = [100.0 + i % 5 for i in range(30)]
    bad = [200.0 + i % 5 for i in range(30)]
    r = judge([MetricInput("latency", bad, good, direction="increase"),
               MetricInput("errors", good, good, direction="increase")], JudgeConfig())
    return r, judgement_annotation([("latency-judge", r)], NOW, 20)


def test_row_and_plan_follow_the_status() -> None:
    c = canary(phase="Progressing", canaryWeight=20, failedChecks=1, iterations=0, lastTransitionTime=NOW,
               conditions=[{"type": "Promoted", "status": "Unknown", "reason": "Progressing",
                            "message": "New revision detected, progressing canary analysis."},
                           {"type": "Judged", "status": "False", "reason": "Fail", "message": "x"}])
    row = canary_row(c)
    assert (row.phase, row.weight, row.max_weight, row.failed_checks, row.threshold) == ("Progressing", 20, 50, 1, 5)
    assert row.target == "Deployment/podinfo" and row.strategy == "Canary" and row.judged == "Fail"
    assert row.message.startswith("New revision detected")
    steps = plan(c)
    assert [s.label for s in steps] == ["weight 10%", "weight 20%", "weight 30%", "weight 40%", "weight 50%",
                                        "promote"]
    assert [s.state for s in steps] == ["done", "current", "next", "next", "next", "next"]
    c["spec"]["analysis"] = {"stepWeights": [5, 25, 80], "interval": "1m"}
    c["status"]["canaryWeight"] = 80
    assert [(s.label, s.state) for s in plan(c)] == [("weight 5%", "done"), ("weight 25%", "done"),
                                                     ("weight 80%", "current"), ("promote", "next")]
    c["status"]["phase"] = "Succeeded"
    assert {s.state for s in plan(c)} == {"done"}
    ab = canary(phase="Progressing", iterations=2)
    ab["spec"]["analysis"] = {"iterations": 3, "match": [{"headers": {"x-canary": {"exact": "insider"}}}]}
    assert canary_row(ab).strategy == "A/B testing"
    assert [(s.label, s.state) for s in plan(ab)] == [("iteration 1", "done"), ("iteration 2", "done"),
                                                      ("iteration 3", "current"), ("promote", "next")]
    invalid = canary(phase="Initializing", conditions=[{"type": "Ready", "status": "False", "reason": "TargetNotFound",
                                                        "message": "deployments.apps \"podinfo\" not found"}])
    assert canary_row(invalid).message.startswith("TargetNotFound: deployments.apps")
    assert canary_row(invalid).phase_class == "h-unknown" and canary_row(canary(phase="Failed")).phase_class == "h-err"


def test_metric_rows_take_the_last_failure_from_events() -> None:
    events = [{"type": "Warning", "message": "Halt advancement no values found for istio metric request-success-rate"},
              {"type": "Warning", "message": "Halt podinfo.test advancement request-success-rate 50.00 < 99"},
              {"type": "Normal", "message": "Advance podinfo.test canary weight 20"}]
    rows = metric_rows(canary(), events)
    assert [(r.name, r.source, r.threshold) for r in rows] == [
        ("request-success-rate", "built-in (Istio metrics)", "min 99"), ("latency", "template test/latency-judge", "max 1")]
    assert rows[0].last_failure == "Halt podinfo.test advancement request-success-rate 50.00 < 99"
    assert rows[1].last_failure == ""


def test_verdicts_explain_each_metric_and_the_score() -> None:
    r, text = _judgement()
    v = verdicts(json.loads(text))
    assert len(v) == 1 and v[0]["name"] == "latency-judge"
    assert v[0]["score"] == r.score == 50.0 and v[0]["classification"] == "Fail"
    by = {m["name"]: m for m in v[0]["metrics"]}
    assert by["latency"]["classification"] == "High" and by["errors"]["classification"] == "Pass"
    assert "30 canary vs 30 primary samples" in by["latency"]["explain"]
    assert "estimate 100" in by["latency"]["explain"] and "98% interval" in by["latency"]["explain"]
    assert verdicts(None) == [] and verdicts({"metrics": {"x": "junk"}}) == []


def test_charts_query_the_mesh_for_canary_and_primary() -> None:
    tr = TimeRange.parse("now-1h", "now", None, "1h")
    charts = canary_charts(canary(), tr)
    assert [c["title"] for c in charts] == ["Weight set (%)", "Canary share of requests (%)",
                                            "Request success rate (%)", "p99 latency (ms)"]
    weights = parse_qs(urlparse(charts.pop(0)["src"]).query)
    assert weights["expr"] == ['flagger_canary_weight{namespace="test",workload="podinfo"}',
                               'flagger_canary_weight{namespace="test",workload="podinfo-primary"}']
    q = parse_qs(urlparse(charts[1]["src"]).query)
    assert q["legend"] == ["canary", "primary"] and q["from"] == ["now-1h"]
    assert 'destination_workload="podinfo-primary"' in q["expr"][1] and 'response_code!~"5.*"' in q["expr"][0]
    share = parse_qs(urlparse(charts[0]["src"]).query)["expr"][0]
    assert share.startswith('100 * sum(rate(istio_requests_total{reporter="destination",'
                            'destination_workload_namespace="test",destination_workload="podinfo"}[1m]))')


def test_change_rows() -> None:
    ev = ChangeEvent(kind="release", summary="Canary podinfo.test: canary weight 20", source="flagger", ts_ns=10**18,
                     details={"canary": "test/podinfo", "phase": "Progressing", "canaryWeight": 20})
    assert change_rows([ev]) == [{"time": "2001-09-09 01:46:40Z", "kind": "release", "phase": "Progressing",
                                  "weight": "20", "summary": ev.summary, "who": "flagger"}]


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    async with started_kube(tmp_path, [*flagger_crds(), *istio_crds()]) as api:
        yield api


def _client(releases: ReleasesConsole | None, changes: ChangeLog | None = None) -> httpx.AsyncClient:
    return ui_client(ui_deps(releases=releases, changes=changes))


async def seed(c: KubeClient, changes: ChangeLog) -> None:
    """A Canary at weight 20 with the judge's result, its VirtualService split 80/20, an Event and change
    events, as the releases controller leaves them."""
    r, text = _judgement()
    await c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "test"}})
    obj = canary()
    obj["metadata"]["annotations"] = {JUDGEMENT: text}
    del obj["status"]
    made = await c.create(obj)
    made["status"] = {"phase": "Progressing", "canaryWeight": 20, "failedChecks": 1, "iterations": 0,
                      "lastTransitionTime": NOW,
                      "conditions": [{"type": "Promoted", "status": "Unknown", "reason": "Progressing",
                                      "message": "New revision detected, progressing canary analysis.",
                                      "lastUpdateTime": NOW, "lastTransitionTime": NOW},
                                     judged_condition([("latency-judge", r)], NOW, None)]}
    await c.update_status(made)
    await c.create({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                    "metadata": {"name": "podinfo", "namespace": "test"},
                    "spec": {"hosts": ["podinfo"], "http": [{"route": [
                        {"destination": {"host": "podinfo-primary"}, "weight": 80},
                        {"destination": {"host": "podinfo-canary"}, "weight": 20}]}]}})
    await c.create({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "podinfo.1", "namespace": "test"},
                    "involvedObject": {"kind": "Canary", "name": "podinfo", "namespace": "test",
                                       "apiVersion": "flagger.app/v1beta1"},
                    "reason": "Synced", "type": "Warning", "source": {"component": "flagger"}, "lastTimestamp": NOW,
                    "message": "Halt podinfo.test advancement request-success-rate 50.00 < 99"})
    now = time.time_ns()
    for i, (phase, w) in enumerate((("Progressing", 10), ("Progressing", 20))):
        await changes.record(ChangeEvent(kind="release", summary=f"Canary podinfo.test: canary weight {w}",
                                         source="flagger", service="test/podinfo", ts_ns=now - (60 - i) * 10**9,
                                         details={"canary": "test/podinfo", "phase": phase, "canaryWeight": w}))
    await changes.record(ChangeEvent(kind="release", summary="Canary other.test: canary weight 30", source="flagger",
                                     service="test/podinfo", ts_ns=now - 10**9,
                                     details={"canary": "test/other", "canaryWeight": 30}))


async def test_releases_list_and_detail(kube: KubeAPI) -> None:
    changes = ChangeLog(kube.store)
    await seed(kube.client, changes)
    async with _client(ReleasesConsole(kube.client), changes) as client:
        r = await client.get("/releases")
        d = await client.get("/releases/test/podinfo")
        missing = await client.get("/releases/test/nope")
    assert r.status_code == 200, r.text
    row = r.text.split('class="data canaries"')[1].split("</table>")[0]
    assert "/releases/test/podinfo" in row and ">Progressing<" in row and "20%" in row and ">Fail<" in row
    assert 'href="/releases?' in r.text and 'data-key="r" aria-current="page"' in r.text
    assert d.status_code == 200, d.text
    t = d.text
    split = t.split('data-testid="split"')[1].split("</table>")[0]
    assert "podinfo-primary</span> <strong>80%" in split and "podinfo-canary</span> <strong>20%" in split
    steps = t.split('data-testid="steps"')[1].split("</ol>")[0]
    assert steps.index("done") < steps.index("weight 10%") < steps.index("current") < steps.index("weight 20%")
    assert 'data-testid="score">50<' in t and ">High<" in t and "30 canary vs 30 primary samples" in t
    assert "Halt podinfo.test advancement request-success-rate 50.00 &lt; 99" in t.split('class="data metrics"')[1]
    ch = t.split('class="data changes"')[1].split("</table>")[0]
    assert "canary weight 10" in ch and "canary weight 20" in ch and "other.test" not in ch
    assert "istio_requests_total" in t and "flagger_canary_weight" in t and t.count('class="pw-chart"') == 4
    assert missing.status_code == 404 and "not found" in missing.text


async def test_without_the_pillar_the_pages_say_so() -> None:
    async with _client(None) as client:
        r = await client.get("/releases")
        d = await client.get("/releases/a/b")
    assert r.status_code == d.status_code == 200 and "is not available" in r.text and "is not available" in d.text


async def test_an_empty_cluster_lists_none(kube: KubeAPI) -> None:
    async with _client(ReleasesConsole(kube.client)) as client:
        r = await client.get("/releases")
    assert r.status_code == 200 and "No Canaries." in r.text
