"""Chaos Mesh's modes and selectors, as pure functions and over the kube API."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pitwall.chaos.model import ChaosSpecError, parse_go_duration
from pitwall.chaos.selector import filter_by_mode, select_pods, target_ids
from pitwall.kube import KubeAPI

pytestmark = pytest.mark.timeout(30)

ITEMS = [{"metadata": {"name": f"p{i}"}} for i in range(10)]


@pytest.mark.parametrize(("mode", "value", "count"), [
    ("one", "", 1), ("all", "", 10), ("fixed", "3", 3), ("fixed", "30", 10), ("fixed-percent", "25", 3),
    ("fixed-percent", "100", 10)])
def test_mode_counts(mode: str, value: str, count: int) -> None:
    picked = filter_by_mode(ITEMS, mode, value)
    assert len(picked) == count and len({p["metadata"]["name"] for p in picked}) == count


def test_random_max_percent_stays_within_bounds() -> None:
    sizes = {len(filter_by_mode(ITEMS, "random-max-percent", "50")) for _ in range(200)}
    assert sizes <= set(range(6)) and len(sizes) > 1


@pytest.mark.parametrize(("mode", "value", "message"), [
    ("fixed", "0", "cannot select any object as value below or equal 0"),
    ("fixed", "x", 'strconv.Atoi: parsing "x": invalid syntax'),
    ("fixed-percent", "101", "Must be (0,100]"),
    ("sometimes", "", "mode sometimes not supported")])
def test_bad_modes(mode: str, value: str, message: str) -> None:
    with pytest.raises(ChaosSpecError) as e:
        filter_by_mode(ITEMS, mode, value)
    assert message in str(e.value)


def test_empty_list_is_an_error() -> None:
    with pytest.raises(ChaosSpecError, match="cannot generate objects from empty list"):
        filter_by_mode([], "all", "")


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("1m30s", 90), ("1.5h", 5400), ("300ms", 0.3), ("0", 0)])
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


def test_bad_duration() -> None:
    with pytest.raises(ChaosSpecError, match=re.escape('spec.duration: invalid duration "5 minutes"')):
        parse_go_duration("5 minutes")


async def test_selectors_over_the_api(kube: KubeAPI) -> None:
    await kube.client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})

    def pod(name: str, ns: str = "default", **meta: Any) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, **meta},
                "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "x"}]}}

    await kube.client.create(pod("web-1", labels={"app": "web", "tier": "front"}, annotations={"team": "shop"}))
    await kube.client.create(pod("web-2", labels={"app": "web", "tier": "back"}))
    await kube.client.create(pod("db-1", labels={"app": "db"}))
    await kube.client.create(pod("web-9", "other", labels={"app": "web"}))

    async def names(sel: dict[str, Any]) -> list[str]:
        return [p["metadata"]["name"] for p in await select_pods(kube.client, "default", sel)]

    assert await names({"labelSelectors": {"app": "web"}}) == ["web-1", "web-2"]  # own namespace by default
    assert await names({"namespaces": ["default", "other"], "labelSelectors": {"app": "web"}}) == \
        ["web-1", "web-2", "web-9"]
    assert await names({"expressionSelectors": [{"key": "tier", "operator": "In", "values": ["back"]}]}) == ["web-2"]
    assert await names({"expressionSelectors": [{"key": "tier", "operator": "DoesNotExist"}]}) == ["db-1"]
    assert await names({"annotationSelectors": {"team": "shop"}}) == ["web-1"]
    assert await names({"pods": {"other": ["web-9"]}}) == ["web-9"]
    assert await names({"fieldSelectors": {"metadata.name": "db-1"}}) == ["db-1"]
    pods = await select_pods(kube.client, "default", {"labelSelectors": {"app": "db"}})
    assert target_ids(pods, None) == ["default/db-1"]
    assert target_ids(pods, []) == ["default/db-1/a", "default/db-1/b"]
    assert target_ids(pods, ["b"]) == ["default/db-1/b"]
