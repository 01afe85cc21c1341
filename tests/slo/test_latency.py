"""Latency SLIs from histograms: exact on a bucket boundary, interpolated (and said so) between two.

Data (per 10 s, for 10 minutes) of ``http_request_duration_seconds`` for job "api":
le=0.1 +50, le=0.25 +80, le=0.5 +90, le=1 +100, +Inf +100, _count +100.
Threshold 0.25 (a boundary): good 80 of 100, error ratio 0.2.
Threshold 0.3 (between 0.25 and 0.5): good = 80 + (90 - 80) * (0.3 - 0.25) / (0.5 - 0.25) = 82,
error ratio 0.18. Threshold 0.05 (below 0.1): good = 50 * 0.05 / 0.1 = 25, error ratio 0.75.
"""

from __future__ import annotations

import pytest

from pitwall.core.labels import labels_from_dict
from pitwall.metrics.memory import MemoryQuerier
from pitwall.metrics.promql.engine import Engine
from pitwall.slo.errors import SpecError
from pitwall.slo.generate import GenerateOptions, generate_group
from pitwall.slo.latency import histogram_latency_sli
from pitwall.slo.spec import load_documents
from pitwall.slo.validate import render_window

pytestmark = pytest.mark.timeout(30)

BUCKETS = ["0.1", "0.25", "0.5", "1", "+Inf"]
PER_STEP = {"0.1": 50, "0.25": 80, "0.5": 90, "1": 100, "+Inf": 100}


def _querier() -> MemoryQuerier:
    q = MemoryQuerier()
    for i in range(61):
        ts = i * 10_000
        for le, n in PER_STEP.items():
            q.add(labels_from_dict({"__name__": "http_request_duration_seconds_bucket", "job": "api", "le": le}),
                  ts, float(n * i))
        q.add(labels_from_dict({"__name__": "http_request_duration_seconds_count", "job": "api"}), ts, float(100 * i))
    return q


def _error_ratio(threshold: float) -> tuple[float, bool, str]:
    lat = histogram_latency_sli("http_request_duration_seconds", threshold, BUCKETS, 'job="api"')
    expr = render_window(f"({lat.sli.error_query})\n/\n({lat.sli.total_query})", "5m")
    res = Engine().instant(_querier(), expr, 600_000)
    [values] = res.values
    return float(values[-1]), lat.interpolated, lat.note


def test_on_a_boundary_is_exact() -> None:
    ratio, interpolated, note = _error_ratio(0.25)
    assert ratio == pytest.approx(0.2, rel=1e-12)
    assert not interpolated and "is a bucket boundary" in note


def test_between_boundaries_is_interpolated_and_says_so() -> None:
    ratio, interpolated, note = _error_ratio(0.3)
    assert ratio == pytest.approx(0.18, rel=1e-12)
    assert interpolated
    assert "0.3s is not a bucket boundary" in note and "le=0.25 and le=0.5" in note


def test_below_the_first_bucket_interpolates_from_zero() -> None:
    ratio, interpolated, _ = _error_ratio(0.05)
    assert ratio == pytest.approx(0.75, rel=1e-12) and interpolated


def test_above_the_last_finite_bucket_is_refused() -> None:
    with pytest.raises(SpecError, match=r"threshold: 2s is above the largest finite bucket \(1s\)"):
        histogram_latency_sli("http_request_duration_seconds", 2.0, BUCKETS)


def test_in_a_sloth_spec() -> None:
    spec = """
version: prometheus/v1
service: api
slos:
  - name: latency-300ms
    objective: 99
    sli:
      plugin:
        id: pitwall/histogram-latency/v1
        options: {metric: http_request_duration_seconds, threshold: "0.3", buckets: "0.1,0.25,0.5,1,+Inf",
                  filter: 'job="api"'}
    alerting: {page_alert: {disable: true}, ticket_alert: {disable: true}}
"""
    [g] = load_documents([("s.yaml", spec)])
    [slo] = g.slos
    assert slo.notes and "interpolated" in slo.notes[0]
    [r] = generate_group(g, GenerateOptions())
    assert 'le="0.25"' in r.rules.sli.rules[0].expr and "[5m]" in r.rules.sli.rules[0].expr
    with pytest.raises(SpecError, match=r"slos\[0\]\.sli\.plugin\.id: SLI plugin 'other' is not available"):
        load_documents([("s.yaml", spec.replace("pitwall/histogram-latency/v1", "other"))])
    with pytest.raises(SpecError, match=r"slos\[0\]\.sli\.plugin\.options\.threshold: not a number"):
        load_documents([("s.yaml", spec.replace('threshold: "0.3"', "threshold: slow"))])
