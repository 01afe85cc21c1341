"""Metric checks as Flagger runs them: the Istio observer's queries, template variables, thresholdRange,
"no values" as a failure, MetricTemplates in process and over the Prometheus HTTP API, the provider seam
(kayenta), the minimum-request guard; webhooks' payload, refusals and retries."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from pitwall.kube import Invalid, KubeAPI
from pitwall.metrics import PromQLParseError
from pitwall.releases.checks import (
    ISTIO_QUERIES,
    MetricContext,
    ProviderUnavailable,
    provider_for,
    render_query,
    run_checks,
)
from pitwall.releases.model import CanaryView
from pitwall.releases.webhooks import WebhookError, call_webhook, default_http, payload
from tests.releases.harness import Answers, FakeResult, Sink

pytestmark = pytest.mark.timeout(30)


def _cd(metrics: list[dict[str, Any]], annotations: dict[str, str] | None = None) -> CanaryView:
    return CanaryView({"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
                       "metadata": {"name": "podinfo", "namespace": "test", "annotations": annotations or {}},
                       "spec": {"targetRef": {"kind": "Deployment", "name": "podinfo"},
                                "service": {"port": 9898, "name": "podinfo-svc"},
                                "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10,
                                             "metrics": metrics}}})


def test_istio_queries_are_flaggers_with_the_canary_filled_in() -> None:
    cd = _cd([])
    q = render_query(ISTIO_QUERIES["request-success-rate"], cd, "1m", None)
    assert q == ('sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="test",'
                 'destination_workload=~"podinfo",response_code!~"5.*"}[1m])) / sum(rate(istio_requests_total{'
                 'reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo"}[1m]))'
                 ' * 100')
    d = render_query(ISTIO_QUERIES["request-duration"], cd, "30s", None)
    assert d.startswith("histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{")
    assert d.endswith('destination_workload=~"podinfo"}[30s])) by (le))')


def test_template_functions_and_variables() -> None:
    cd = _cd([])
    text = '{{ name }}/{{ namespace }}/{{ target }}/{{ service }}/{{ ingress }}/{{ interval }}/{{ variables.dir }}'
    assert render_query(text, cd, "2m", {"dir": "inbound"}) == "podinfo/test/podinfo/podinfo-svc/podinfo/2m/inbound"
    from pitwall.core.gotemplate import TemplateError

    with pytest.raises(TemplateError):
        render_query("{{ variables.missing }}", cd, "1m", {})


async def test_threshold_range_and_legacy_threshold(mesh_kube: KubeAPI) -> None:
    answers = Answers(success_rate=98.5, duration_ms=250.0)
    ctx = MetricContext(instant=answers, client=mesh_kube.client)
    sr = {"name": "request-success-rate", "thresholdRange": {"min": 99}}
    res = await run_checks(ctx, _cd([sr]))
    assert not res.ok and res.events == [("Warning", "Halt podinfo.test advancement success rate 98.50% < 99%")]
    assert (await run_checks(ctx, _cd([{**sr, "thresholdRange": {"min": 98}}]))).ok
    dur = {"name": "request-duration", "thresholdRange": {"max": 200}}
    res = await run_checks(ctx, _cd([dur]))
    assert res.events == [("Warning", "Halt podinfo.test advancement request duration 250ms > 200ms")]
    assert (await run_checks(ctx, _cd([{"name": "request-duration", "threshold": 300}]))).ok
    assert not (await run_checks(ctx, _cd([{"name": "request-success-rate", "threshold": 99}]))).ok
    inline = {"name": "errors", "query": 'sum(x{ns="{{ namespace }}"})', "thresholdRange": {"max": 0.5}}
    res = await run_checks(ctx, _cd([inline]))
    assert res.events == [("Warning", "Halt podinfo.test advancement errors 1.00 > 0.5")]
    assert answers.seen[-1] == 'sum(x{ns="test"})'


async def test_no_values_and_nan_fail_the_check(mesh_kube: KubeAPI) -> None:
    answers = Answers(success_rate=None)
    ctx = MetricContext(instant=answers, client=mesh_kube.client)
    res = await run_checks(ctx, _cd([{"name": "request-success-rate", "thresholdRange": {"min": 99}}]))
    assert not res.ok and not res.wait
    assert res.events[0][1].startswith("Halt advancement no values found for istio metric request-success-rate "
                                       "probably podinfo.test is not receiving traffic")
    answers.success_rate = math.nan  # 0/0: no requests in the window
    assert not (await run_checks(ctx, _cd([{"name": "request-success-rate", "thresholdRange": {"min": 99}}]))).ok


async def test_minimum_request_guard_policies(mesh_kube: KubeAPI) -> None:
    answers = Answers(success_rate=None, requests=3.0)
    ctx = MetricContext(instant=answers, client=mesh_kube.client)
    sr = [{"name": "request-success-rate", "interval": "30s", "thresholdRange": {"min": 99}}]
    guard = "releases.pitwall.dev/min-requests"
    policy = "releases.pitwall.dev/no-traffic"
    fail = await run_checks(ctx, _cd(sr, {guard: "10"}))
    assert not fail.ok and not fail.wait
    assert fail.events[0][1] == ("Halt podinfo.test advancement: 3 requests to podinfo in 30s < 10 "
                                 "(releases.pitwall.dev/no-traffic: fail)")
    wait = await run_checks(ctx, _cd(sr, {guard: "10", policy: "wait"}))
    assert not wait.ok and wait.wait
    passed = await run_checks(ctx, _cd(sr, {guard: "10", policy: "pass"}))
    assert passed.ok and passed.events[0][1].startswith("Passing podinfo.test advancement: 3 requests")
    answers.requests = 10.0  # enough traffic: the metric itself decides (no values: failed)
    assert not (await run_checks(ctx, _cd(sr, {guard: "10", policy: "wait"}))).wait
    assert 'increase(istio_requests_total{reporter="destination"' in answers.seen[-2]
    assert '[30s]' in answers.seen[-2]


async def _template(kube: KubeAPI, name: str, provider: dict[str, Any], query: str) -> None:
    await kube.client.create({"apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
                              "metadata": {"name": name, "namespace": "test"},
                              "spec": {"provider": provider, "query": query}})


async def _ns(kube: KubeAPI) -> None:
    await kube.client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "test"}})


async def test_metric_template_in_process_for_an_empty_or_own_address(mesh_kube: KubeAPI) -> None:
    await _ns(mesh_kube)
    answers = Answers(other=0.2)
    ctx = MetricContext(instant=answers, client=mesh_kube.client,
                        self_addresses=frozenset({"http://127.0.0.1:9090"}))
    await _template(mesh_kube, "errors", {"type": "prometheus"},
                    'sum(rate(errors{app="{{ target }}",d="{{ variables.d }}"}[{{ interval }}]))')
    await _template(mesh_kube, "own", {"type": "prometheus", "address": "http://127.0.0.1:9090/"}, "vector(1)")
    m = {"name": "errs", "templateRef": {"name": "errors"}, "templateVariables": {"d": "in"},
         "thresholdRange": {"max": 0.5}, "interval": "2m"}
    assert (await run_checks(ctx, _cd([m]))).ok
    assert answers.seen[-1] == 'sum(rate(errors{app="podinfo",d="in"}[2m]))'
    answers.other = 0.7
    res = await run_checks(ctx, _cd([m]))
    assert res.events == [("Warning", "Halt podinfo.test advancement errs 0.70 > 0.5")]
    own = {"name": "own", "templateRef": {"name": "own", "namespace": "test"}, "thresholdRange": {"min": 0}}
    assert (await run_checks(ctx, _cd([own]))).ok and answers.seen[-1] == "vector(1)"
    missing = await run_checks(ctx, _cd([{"name": "x", "templateRef": {"name": "nope"}}]))
    assert missing.events == [("Warning", 'Metric template nope.test error: metrictemplate.flagger.app "nope" '
                                          'not found')]


async def test_metric_template_over_the_prometheus_http_api(mesh_kube: KubeAPI) -> None:
    await _ns(mesh_kube)
    seen: list[httpx.Request] = []

    def prometheus(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        q = req.url.params["query"]
        result = [] if "empty" in q else [{"metric": {}, "value": [1700000000, "NaN" if "nan" in q else "0.25"]}]
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": result}})

    ctx = MetricContext(instant=None, client=mesh_kube.client,
                        http=lambda: httpx.AsyncClient(transport=httpx.MockTransport(prometheus)))
    await mesh_kube.client.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "prom", "namespace": "test"},
                                   "data": {"username": "dXNlcg==", "password": "cGFzcw=="}})
    await _template(mesh_kube, "remote", {"type": "prometheus", "address": "http://prom.example:9090",
                                          "secretRef": {"name": "prom"}}, 'ratio{ns="{{ namespace }}"}')
    m = {"name": "ratio", "templateRef": {"name": "remote"}, "thresholdRange": {"max": 0.5}}
    assert (await run_checks(ctx, _cd([m]))).ok
    assert str(seen[-1].url).startswith("http://prom.example:9090/api/v1/query?query=")
    assert seen[-1].url.params["query"] == 'ratio{ns="test"}'
    assert seen[-1].headers["authorization"] == "Basic dXNlcjpwYXNz"
    await _template(mesh_kube, "empty", {"type": "prometheus", "address": "http://prom.example:9090"}, "empty")
    res = await run_checks(ctx, _cd([{"name": "e", "templateRef": {"name": "empty"}, "thresholdRange": {"max": 1}}]))
    assert res.events[0][1].startswith("Halt advancement no values found for custom metric: e")
    await _template(mesh_kube, "nan", {"type": "prometheus", "address": "http://prom.example:9090"}, "nan")
    assert not (await run_checks(ctx, _cd([{"name": "n", "templateRef": {"name": "nan"},
                                            "thresholdRange": {"max": 1}}]))).ok


async def test_providers_are_told_apart_in_one_place(mesh_kube: KubeAPI) -> None:
    ctx = MetricContext(instant=Answers(), client=mesh_kube.client)
    with pytest.raises(ProviderUnavailable, match="provider kayenta not available"):
        await provider_for(ctx, {"type": "kayenta"}, "test")
    with pytest.raises(ProviderUnavailable, match="provider datadog not available"):
        await provider_for(ctx, {"type": "datadog"}, "test")
    # Flagger's CRD (vendored unchanged) has no kayenta in its provider enum: such a template is refused
    await _ns(mesh_kube)
    with pytest.raises(Invalid, match=r'spec\.provider\.type: Unsupported value: "kayenta"'):
        await _template(mesh_kube, "judge", {"type": "kayenta"}, "x")


async def test_a_query_that_does_not_parse_fails_the_check(mesh_kube: KubeAPI) -> None:
    def broken(expr: str, at_ms: int, tenant: str = "default") -> FakeResult:
        raise PromQLParseError("unexpected end of input")

    ctx = MetricContext(instant=broken, client=mesh_kube.client)
    res = await run_checks(ctx, _cd([{"name": "q", "query": "sum(", "thresholdRange": {"max": 1}}]))
    assert not res.ok and "unexpected end of input" in res.events[0][1]


async def test_webhook_payload_refusal_and_retries() -> None:
    cd = CanaryView({"metadata": {"name": "podinfo", "namespace": "test"},
                     "status": {"lastAppliedSpec": "abc", "phase": "Progressing"}})
    body = payload(cd, "Progressing", {"cmd": "hey -z 1m"})
    assert body == {"name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": body["checksum"],
                    "metadata": {"cmd": "hey -z 1m"}}
    assert body["checksum"] == payload(cd, "Waiting", None)["checksum"]
    async with Sink() as sink:
        await call_webhook(default_http, cd, "Progressing", {"name": "ok", "url": f"{sink.url}/ok"})
        assert sink.received == [("/ok", {k: v for k, v in body.items() if k != "metadata"})]
        sink.refuse["/no"] = 403
        with pytest.raises(WebhookError, match="refused"):
            await call_webhook(default_http, cd, "Progressing", {"name": "no", "url": f"{sink.url}/no"})
        sink.refuse["/flaky"] = 500
        with pytest.raises(WebhookError):
            await call_webhook(default_http, cd, "Progressing",
                               {"name": "flaky", "url": f"{sink.url}/flaky", "retries": 1})
        assert [p for p, _ in sink.received].count("/flaky") == 2  # 5xx retried once
        assert [p for p, _ in sink.received].count("/no") == 1  # 4xx not retried
    with pytest.raises(WebhookError):
        await call_webhook(default_http, cd, "Progressing", {"name": "gone", "url": "http://127.0.0.1:9/x",
                                                              "timeout": "1s"})
    with pytest.raises(WebhookError, match="not http"):
        await call_webhook(default_http, cd, "Progressing", {"name": "bad", "url": "file:///etc/passwd"})


def _latency(expr: str, at_ms: int, tenant: str = "default") -> FakeResult:
    """A canary ("podinfo") 40% slower than its primary ("podinfo-primary"), with a little deterministic noise."""
    noise = ((at_ms // 1000) * 7919 % 13) / 13.0
    base = 100.0 + 5 * noise
    v = base * 1.4 if 'app="podinfo"' in expr else base
    return FakeResult("vector", [[v]])


async def test_kayenta_judge_on_an_annotated_template(mesh_kube: KubeAPI) -> None:
    await _ns(mesh_kube)
    await mesh_kube.client.create({
        "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
        "metadata": {"name": "latency", "namespace": "test",
                     "annotations": {"releases.pitwall.dev/judge": "kayenta",
                                     "releases.pitwall.dev/judge-direction": "increase"}},
        "spec": {"provider": {"type": "prometheus"}, "query": 'latency_ms{app="{{ target }}"}'}})
    metric = {"name": "latency", "templateRef": {"name": "latency"}, "interval": "1m"}
    slower = await run_checks(MetricContext(instant=_latency, client=mesh_kube.client), _cd([metric]))
    assert not slower.ok
    msg = slower.events[0][1]
    assert msg.startswith("Halt podinfo.test advancement judge latency score 0 Fail: latency High")

    seen: list[str] = []

    def same(expr: str, at_ms: int, tenant: str = "default") -> FakeResult:
        seen.append(expr)
        return _latency(expr.replace('app="podinfo"', 'app="x"'), at_ms)

    assert (await run_checks(MetricContext(instant=same, client=mesh_kube.client), _cd([metric]))).ok
    assert {'latency_ms{app="podinfo"}', 'latency_ms{app="podinfo-primary"}'} == set(seen)  # canary vs primary
    assert len(seen) == 60  # 30 samples a side over the interval

    def empty(expr: str, at_ms: int, tenant: str = "default") -> FakeResult:
        return FakeResult("vector", [])

    res = await run_checks(MetricContext(instant=empty, client=mesh_kube.client), _cd([metric]))
    assert not res.ok and "judge latency" in res.events[0][1]  # nothing to judge never passes


def _dep(generation: int, observed: int, conds: list[dict[str, str]], available: int = 0) -> dict[str, object]:
    return {"metadata": {"name": "web-primary", "generation": generation}, "spec": {"replicas": 2},
            "status": {"observedGeneration": observed, "availableReplicas": available, "conditions": conds}}


def test_progress_deadline_follows_flaggers_rule() -> None:
    from datetime import UTC, datetime, timedelta

    from pitwall.releases import workload

    old = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    unavailable = {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                   "lastUpdateTime": old}
    done = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "lastUpdateTime": old}
    # the controller has not seen the new template yet: the status is the old one's, never "stuck"
    assert workload.readiness(_dep(3, 2, [done, unavailable]), 60)[2] is True
    # unavailable for 10 minutes against a 60 s deadline, on the observed generation: stuck
    assert workload.readiness(_dep(3, 3, [done, unavailable]), 60)[2] is False
    assert workload.readiness(_dep(3, 3, [done, unavailable]), 900)[2] is True
    # a long-finished rollout (old Progressing time) with replicas coming up is not stuck
    assert workload.readiness(_dep(3, 3, [done, {**unavailable, "status": "True",
                                                 "reason": "MinimumReplicasAvailable"}]), 60)[2] is True
    timed_out = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    assert workload.readiness(_dep(3, 3, [timed_out]), 60)[:3:2] == (False, False)
