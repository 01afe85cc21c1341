"""Flagger's own metrics (pkg/metrics/recorder.go): recorded by the controller tick by tick, written as series
with Flagger's names, labels and types, and answered by the PromQL engine."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from pitwall.kube import KubeAPI
from pitwall.metrics import Exemplar, MetricMetadata, SampleBatch
from pitwall.metrics.memory import MemoryQuerier
from pitwall.metrics.promql.engine import Engine
from pitwall.releases.recorder import BUCKETS, FlaggerMetrics
from tests.releases.harness import Answers, Driver, canary, deployment, set_image

pytestmark = pytest.mark.timeout(60)

T0 = 1_800_000_000_000


class MemoryAppender:
    """Batches into a MemoryQuerier (what the engine reads); metadata kept."""

    def __init__(self) -> None:
        self.querier = MemoryQuerier()
        self.metadata: list[MetricMetadata] = []
        self.batches = 0

    async def append(self, tenant: str, batch: SampleBatch) -> None:
        self.batches += 1
        for i, t, v in zip(batch.series_idx, batch.ts, batch.values, strict=True):
            self.querier.add(batch.series[int(i)], int(t), float(v))

    async def append_metadata(self, tenant: str, metadata: Sequence[MetricMetadata]) -> None:
        self.metadata += metadata

    async def append_exemplars(self, tenant: str, exemplars: Sequence[Exemplar]) -> None:
        return None


def query(app: MemoryAppender, expr: str, at: int = T0 + 1000) -> dict[tuple[tuple[str, str], ...], float]:
    res = Engine().instant(app.querier, expr, at)
    return {tuple((k, v) for k, v in s if k != "__name__"): float(vals[-1])
            for s, vals in zip(res.series, res.values, strict=True)}


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> float:
        self.ms += 1
        return self.ms / 1000


async def test_the_recorder_writes_flaggers_series() -> None:
    app = MemoryAppender()
    rec = FlaggerMetrics(app, clock=Clock())
    for s in (0.003, 0.2, 7.0, 30.0):
        rec.set_duration("podinfo", "test", s)
    rec.set_analysis("podinfo", "test", "request-success-rate", 99.5)
    rec.set_analysis("podinfo", "test", "request-success-rate", 98.0)  # the last value counts
    rec.inc_successes("podinfo", "test", "canary", "completed")
    rec.inc_failures("podinfo", "test", "blue-green", "completed")
    rec.inc_failures("podinfo", "test", "blue-green", "completed")
    await rec.flush()
    assert query(app, "flagger_info") == {(("job", "flagger"), ("mesh_provider", "istio"),
                                           ("version", "1.44.0")): 1.0}
    base = (("job", "flagger"), ("name", "podinfo"), ("namespace", "test"))
    buckets = query(app, "flagger_canary_duration_seconds_bucket")
    assert len(buckets) == len(BUCKETS) + 1
    by_le = {dict(k)["le"]: v for k, v in buckets.items()}
    assert by_le["0.005"] == 1 and by_le["0.25"] == 2 and by_le["5"] == 2 and by_le["10"] == 3
    assert by_le["+Inf"] == 4 and by_le["2.5"] == 2 and "1" in by_le
    assert query(app, "flagger_canary_duration_seconds_count") == {base: 4.0}
    assert query(app, "flagger_canary_duration_seconds_sum")[base] == pytest.approx(37.203)
    # the engine's histogram_quantile over Flagger's buckets: the median is in (0.005, 0.25]
    q = query(app, "histogram_quantile(0.5, flagger_canary_duration_seconds_bucket)")
    assert 0.005 < q[base] <= 0.25
    assert query(app, "flagger_canary_metric_analysis") == {(*base[:1], ("metric", "request-success-rate"),
                                                             *base[1:]): 98.0}
    assert query(app, "flagger_canary_successes_total") == {
        (("analysis_status", "completed"), ("deployment_strategy", "canary"), *base): 1.0}
    assert query(app, "sum(flagger_canary_failures_total)") == {(): 2.0}
    assert {(m.metric, m.type) for m in app.metadata} >= {("flagger_canary_duration_seconds", "histogram"),
                                                           ("flagger_canary_successes_total", "counter"),
                                                           ("flagger_info", "gauge")}
    # a deleted Canary's series end with a staleness marker
    rec.forget("podinfo", "test")
    await rec.flush()
    assert query(app, "flagger_canary_successes_total", T0 + 2000) == {}
    assert list(query(app, "flagger_info", T0 + 2000).values()) == [1.0]
    # nothing changed: nothing written
    n = app.batches
    await rec.flush()
    assert app.batches == n


async def test_the_controller_records_checks_durations_and_outcomes(mesh_kube: KubeAPI) -> None:
    app = MemoryAppender()
    answers = Answers(success_rate=99.5, duration_ms=250.0)
    d = Driver(mesh_kube, answers)
    d.ctl.recorder = rec = FlaggerMetrics(app)
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
               {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "1m"}]
    await d.client.create(deployment())
    await d.client.create(canary({"interval": "1s", "threshold": 1, "maxWeight": 20, "stepWeight": 10,
                                  "metrics": metrics}))
    for _ in range(3):
        await d.tick()
    assert rec.durations == {}  # initialisation runs no analysis
    await set_image(mesh_kube, "v2")
    for _ in range(10):
        if (await d.tick())["status"]["phase"] == "Succeeded":
            break
    assert rec.analysis == {("podinfo", "default", "request-success-rate"): 99.5,
                            ("podinfo", "default", "request-duration"): 0.25}  # seconds, as Flagger records it
    # the ticks that ran checks: weight 0 (pre-rollout, then 10), 10 (then 20), 20 (promotion starts); the
    # Promoting and Finalising ticks return before Flagger's deferred SetDuration
    h = rec.durations[("podinfo", "default")]
    assert h.total == 3 and h.sum > 0
    assert rec.successes == {("podinfo", "default", "canary", "completed"): 1.0}
    # a bad revision: the success rate falls, the canary is rolled back and counted as a failure
    answers.success_rate = 50.0
    await set_image(mesh_kube, "v3")
    for _ in range(6):
        if (await d.tick())["status"]["phase"] == "Failed":
            break
    assert rec.analysis[("podinfo", "default", "request-success-rate")] == 50.0
    assert rec.failures == {("podinfo", "default", "canary", "completed"): 1.0}
    seen = {dict(k).get("__name__") for k in app.querier._pending}
    assert {"flagger_canary_metric_analysis", "flagger_canary_duration_seconds_bucket",
            "flagger_canary_successes_total", "flagger_canary_failures_total"} <= seen
    assert not any(math.isnan(v) for k, pts in app.querier._pending.items()
                   if dict(k).get("__name__") == "flagger_canary_metric_analysis" for v in pts.values())
    # skipAnalysis: a success with analysis_status skipped, for the strategy Flagger reports
    cd = await d.client.get("flagger.app/v1beta1", "Canary", "podinfo", "default")
    cd["spec"]["skipAnalysis"] = True
    await d.client.update(cd)
    await set_image(mesh_kube, "v4")
    for _ in range(4):
        if (await d.tick())["status"]["phase"] == "Succeeded":
            break
    assert rec.successes[("podinfo", "default", "canary", "skipped")] == 1.0
