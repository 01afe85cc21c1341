"""The HPA arithmetic as pure functions: ratio and tolerance, unready/missing pods, stabilisation, policies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pitwall.controllers.autoscale import (
    Behavior,
    History,
    PodSample,
    limited,
    per_pod_replicas,
    ratio_replicas,
    stabilize,
    total_replicas,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def pods(n: int, request: float = 1.0, **kw: object) -> list[PodSample]:
    return [PodSample(f"p{i}", request=request, **kw) for i in range(n)]  # type: ignore[arg-type]


def util(current: int, samples: list[PodSample], usage: dict[str, float], target: float) -> int:
    return per_pod_replicas(current, samples, usage, target, utilization=True).replicas


def test_ratio_and_tolerance() -> None:
    three = pods(3)
    assert util(3, three, {"p0": 1.05, "p1": 1.05, "p2": 1.05}, 100) == 3  # 5% off: within 0.1
    assert util(3, three, {"p0": 1.09, "p1": 1.09, "p2": 1.09}, 100) == 3  # 9% off
    assert util(3, three, {"p0": 0.91, "p1": 0.91, "p2": 0.91}, 100) == 3
    assert util(3, three, {"p0": 1.2, "p1": 1.2, "p2": 1.2}, 100) == 4  # ceil(3 * 1.2)
    assert util(3, three, {"p0": 0.1, "p1": 0.1, "p2": 0.1}, 50) == 1  # ceil(3 * 0.2)
    prop = per_pod_replicas(3, three, {"p0": 0.5, "p1": 0.5, "p2": 0.5}, 25, utilization=True)
    assert prop.replicas == 6 and prop.utilization == 50
    avg = per_pod_replicas(2, pods(2), {"p0": 30, "p1": 10}, 10, utilization=False)
    assert avg.replicas == 4 and avg.value == 20


def test_unready_pods_count_as_zero_on_scale_up() -> None:
    samples = [PodSample("p0", request=1), PodSample("p1", request=1), PodSample("p2", phase="Pending", request=1)]
    # ready pods at 200% of a 100% target; the Pending one at 0: (2+2+0)/3 = 133% -> ceil(1.33 * 3) = 4
    assert util(3, samples, {"p0": 2, "p1": 2}, 100) == 4
    # an unready cpu sample is not trusted either
    samples[2] = PodSample("p2", unready=True, request=1)
    assert util(3, samples, {"p0": 2, "p1": 2, "p2": 9}, 100) == 4
    # ignored: being deleted or Failed
    gone = [*pods(2), PodSample("x", deleting=True, request=1), PodSample("y", phase="Failed", request=1)]
    assert util(4, gone, {"p0": 2, "p1": 2, "x": 100, "y": 100}, 100) == 4


def test_missing_pods_count_as_full_request_on_scale_down_and_zero_on_scale_up() -> None:
    four = pods(4)
    # 3 pods at 10% of a 50% target, one without a sample: counted at 100% -> (30+100)/4 = 32.5% -> 0.65 -> 3
    assert util(4, four, {"p0": 0.1, "p1": 0.1, "p2": 0.1}, 50) == 3
    # scale up: the missing pod at 0: (3 * 100%)/4 = 75% of 50 -> 1.5 -> 6
    assert util(4, four, {"p0": 1, "p1": 1, "p2": 1}, 50) == 6
    # the missing pod reverses the direction: no change
    assert util(2, pods(2), {"p0": 0.9}, 100) == 2
    with pytest.raises(ValueError, match="no pods"):
        util(1, [], {}, 50)
    with pytest.raises(ValueError, match="did not receive metrics"):
        util(1, pods(1), {}, 50)


def test_object_and_external_targets() -> None:
    assert ratio_replicas(2, 2, 300, 100).replicas == 6
    assert ratio_replicas(2, 2, 105, 100).replicas == 2
    assert ratio_replicas(0, 0, 250, 100).replicas == 3
    prop = total_replicas(2, 2, 500, 100)
    assert prop.replicas == 5 and prop.value == 250
    assert total_replicas(5, 5, 520, 100).replicas == 5


def test_default_behavior() -> None:
    b = Behavior.of(None)
    assert b.up.window_s == 0 and b.down.window_s == 300
    assert {(p.type, p.value, p.period_s) for p in b.up.policies} == {("Percent", 100, 15), ("Pods", 4, 15)}
    assert [(p.type, p.value, p.period_s) for p in b.down.policies] == [("Percent", 100, 15)]
    custom = Behavior.of({"scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Min"}})
    assert custom.down.window_s == 0 and custom.down.select == "Min" and custom.up.window_s == 0


def test_scale_down_stabilization_window() -> None:
    h, b = History(), Behavior.of(None)
    assert stabilize(h, 5, 5, b, T0)[0] == 5
    got, reason, _ = stabilize(h, 5, 2, b, T0 + timedelta(seconds=60))
    assert (got, reason) == (5, "ScaleDownStabilized")  # 5 was recommended within 300 s
    assert stabilize(h, 5, 2, b, T0 + timedelta(seconds=301))[0] == 2  # the 5 left the window
    # scale up is immediate by default, and a window on it takes the lowest recent
    assert stabilize(History(), 2, 8, b, T0)[0] == 8
    up = Behavior.of({"scaleUp": {"stabilizationWindowSeconds": 60}})
    h2 = History()
    stabilize(h2, 2, 3, up, T0)
    assert stabilize(h2, 2, 8, up, T0 + timedelta(seconds=30))[:2] == (3, "ScaleUpStabilized")


def test_policies_min_max() -> None:
    b = Behavior.of(None)
    # up: the larger of +100% and +4 pods per 15 s
    assert limited(History(), 1, 10, b, 1, 100, T0)[:2] == (5, "ScaleUpLimit")
    assert limited(History(), 10, 50, b, 1, 100, T0)[0] == 20
    assert limited(History(), 10, 50, b, 1, 15, T0)[:2] == (15, "TooManyReplicas")
    assert limited(History(), 10, 12, b, 1, 100, T0)[:2] == (12, "DesiredWithinRange")
    lowest = Behavior.of({"scaleUp": {"selectPolicy": "Min"}})
    assert limited(History(), 10, 50, lowest, 1, 100, T0)[0] == 14
    off = Behavior.of({"scaleUp": {"selectPolicy": "Disabled"}, "scaleDown": {"selectPolicy": "Disabled"}})
    assert limited(History(), 3, 9, off, 1, 100, T0)[0] == 3
    assert limited(History(), 3, 1, off, 1, 100, T0)[0] == 3
    # down: 100% per 15 s by default, floored at minReplicas
    assert limited(History(), 10, 0, b, 2, 100, T0)[:2] == (2, "TooFewReplicas")
    # a slow scale-down policy remembers what it already did within its period
    slow = Behavior.of({"scaleDown": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}})
    h = History()
    assert limited(h, 5, 1, slow, 1, 10, T0)[:2] == (4, "ScaleDownLimit")
    h.record_scale(-1, T0, 60)
    assert limited(h, 4, 1, slow, 1, 10, T0 + timedelta(seconds=10))[0] == 4
    assert limited(h, 4, 1, slow, 1, 10, T0 + timedelta(seconds=61))[0] == 3
    pct = Behavior.of({"scaleUp": {"policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}]}})
    h = History()
    h.record_scale(2, T0, 60)  # 4 -> 6 a moment ago: the period started at 4, so 6 is already +50%
    assert limited(h, 6, 20, pct, 1, 100, T0 + timedelta(seconds=5))[0] == 6
