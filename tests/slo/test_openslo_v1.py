"""OpenSLO v1: SLO + SLI (by reference or inline), ratioMetric and thresholdMetric, AlertPolicy/AlertCondition."""

from __future__ import annotations

import pytest

from pitwall.slo.errors import SpecError
from pitwall.slo.generate import GenerateOptions, generate_group
from pitwall.slo.spec import load_documents

pytestmark = pytest.mark.timeout(30)

GOOD = 'sum(rate(http_request_duration_seconds_count{job="myservice",code!~"(5..|429)"}[{{.window}}]))'
TOTAL = 'sum(rate(http_request_duration_seconds_count{job="myservice"}[{{.window}}]))'

V1 = f"""
apiVersion: openslo/v1
kind: SLI
metadata:
  name: availability
spec:
  ratioMetric:
    counter: true
    good:
      metricSource:
        type: Prometheus
        spec:
          query: {GOOD}
    total:
      metricSource:
        type: Prometheus
        spec:
          query: {TOTAL}
---
apiVersion: openslo/v1
kind: AlertCondition
metadata:
  name: fast-burn
spec:
  severity: page
  condition:
    kind: burnrate
    op: gte
    threshold: 14.4
    lookbackWindow: 1h
    alertAfter: 5m
---
apiVersion: openslo/v1
kind: AlertPolicy
metadata:
  name: SvcBurn
spec:
  conditions:
    - conditionRef: fast-burn
---
apiVersion: openslo/v1
kind: SLO
metadata:
  name: slo1
spec:
  service: svc01
  description: this is SLO1.
  indicatorRef: availability
  budgetingMethod: Occurrences
  timeWindow:
    - duration: 30d
      isRolling: true
  objectives:
    - target: 0.999
  alertPolicies:
    - alertPolicyRef: SvcBurn
"""

V1ALPHA = f"""
apiVersion: openslo/v1alpha
kind: SLO
metadata:
  name: slo1
spec:
  service: svc01
  description: this is SLO1.
  budgetingMethod: Occurrences
  objectives:
    - ratioMetrics:
        good: {{source: prometheus, queryType: promql, query: '{GOOD}'}}
        total: {{source: prometheus, queryType: promql, query: '{TOTAL}'}}
      target: 0.999
  timeWindows:
    - count: 30
      unit: Day
"""


def test_v1_ratio_equals_sloths_v1alpha_mapping() -> None:
    [v1] = load_documents([("v1.yaml", V1)])
    [alpha] = load_documents([("alpha.yaml", V1ALPHA)])
    r1, ra = generate_group(v1)[0], generate_group(alpha)[0]
    assert r1.slo.id == "svc01-slo1-0"
    assert r1.rules.sli.rules == ra.rules.sli.rules
    info = r1.rules.meta.rules[-1].labels
    assert info["sloth_spec"] == "openslo/v1" and info["sloth_mode"] == "cli-gen-openslo"
    # The policy's page condition enables the page alert only, named after the policy.
    [alert] = r1.rules.alerts.rules
    assert alert.alert == "SvcBurn"
    assert alert.labels == {"sloth_severity": "page", "severity": "page"}
    assert "(14.4 * 0.0009999999999999432)" in alert.expr


def test_threshold_metric_and_bad_total() -> None:
    text = """
apiVersion: openslo/v1
kind: SLO
metadata: {name: latency}
spec:
  service: api
  indicator:
    metadata: {name: p99}
    spec:
      thresholdMetric:
        metricSource:
          type: Prometheus
          spec:
            query: histogram_quantile(0.99, sum by (le) (rate(http_duration_seconds_bucket[5m])))
  timeWindow: [{duration: 28d, isRolling: true}]
  objectives:
    - {op: lte, value: 0.3, targetPercent: 99}
"""
    [g] = load_documents([("t.yaml", text)])
    [r] = generate_group(g)
    assert r.slo.period_ms == 28 * 86_400_000 and r.slo.objective == 99
    rec = r.rules.sli.rules[0]
    assert rec.record == "slo:sli_error:ratio_rate5m"
    assert rec.expr == ("(1 - avg_over_time(((histogram_quantile(0.99, sum by (le) "
                        "(rate(http_duration_seconds_bucket[5m])))) <= bool 0.3)[5m:]))")
    assert r.rules.alerts.rules == ()  # no alert policy: no alerts


@pytest.mark.parametrize(("patch", "message"), [
    (("indicatorRef: availability", "indicatorRef: nope"), "spec.indicatorRef: SLI 'nope' is not defined"),
    (("type: Prometheus\n        spec:\n          query: sum(rate(http_request_duration_seconds_count{job=\"myservice\",code!",
      "type: Datadog\n        spec:\n          query: sum(rate(http_request_duration_seconds_count{job=\"myservice\",code!"),
     "spec.ratioMetric.good.metricSource.type: only Prometheus metric sources are supported, got 'Datadog'"),
    (("- target: 0.999", "- target: lots"), "spec.objectives[0].target: not a number: 'lots'"),
    (("duration: 30d", "duration: 1M"), "spec.timeWindow[0].duration: not a valid duration string"),
    (("conditionRef: fast-burn", "conditionRef: slow"), "AlertCondition 'slow' is not defined"),
])
def test_errors_name_the_field(patch: tuple[str, str], message: str) -> None:
    text = V1.replace(*patch)
    assert text != V1
    with pytest.raises(SpecError) as e:
        groups = load_documents([("v1.yaml", text)])
        generate_group(groups[0], GenerateOptions())
    assert message in e.value.message
