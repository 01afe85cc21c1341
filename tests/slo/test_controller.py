"""The PrometheusServiceLevel controller: CRD built in, rules handed to the rule manager, Sloth's status."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitwall.controllers import ControllerRunner
from pitwall.incidents import ChangeLog
from pitwall.kube import Invalid, KubeAPI
from pitwall.slo.controller import SLOController

EXAMPLE = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "wave2" / "sloth" / "examples" / \
    "k8s-getting-started.yml"
pytestmark = [pytest.mark.timeout(30),
              pytest.mark.skipif(not EXAMPLE.exists(), reason="../shared is not beside the repo")]


class Sink:
    def __init__(self) -> None:
        self.groups: dict[str, Any] = {}
        self.calls = 0

    async def set_rule_groups(self, source: str, text: str) -> None:
        self.calls += 1
        self.groups[source] = yaml.safe_load(text)

    async def remove_rule_groups(self, source: str) -> None:
        self.groups.pop(source, None)


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(500):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


def _obj() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))


async def _namespace(kube: KubeAPI) -> None:
    await kube.client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "monitoring"}})


async def test_object_becomes_rules_and_status(kube: KubeAPI) -> None:
    sink = Sink()
    changes = ChangeLog(kube.store)
    runner = ControllerRunner(kube.client, SLOController(kube.client, sink, changes=changes))
    await runner.start()
    try:
        await _namespace(kube)
        await kube.client.create(_obj())
        src = "slo:monitoring/sloth-slo-my-service"

        async def loaded() -> bool:
            o = await kube.client.get("sloth.slok.dev/v1", "PrometheusServiceLevel", "sloth-slo-my-service",
                                      "monitoring")
            return src in sink.groups and bool((o.get("status") or {}).get("promOpRulesGenerated"))

        await eventually(loaded)
        names = [g["name"] for g in sink.groups[src]["groups"]]
        assert names == ["sloth-slo-sli-recordings-myservice-requests-availability",
                         "sloth-slo-meta-recordings-myservice-requests-availability",
                         "sloth-slo-alerts-myservice-requests-availability"]
        info = sink.groups[src]["groups"][1]["rules"][-1]["labels"]
        assert info["sloth_mode"] == "ctrl-gen-k8s" and info["sloth_spec"] == "sloth.slok.dev/v1"
        o = await kube.client.get("sloth.slok.dev/v1", "PrometheusServiceLevel", "sloth-slo-my-service", "monitoring")
        st = o["status"]
        assert st["processedSLOs"] == 1 and st["promOpRulesGeneratedSLOs"] == 1
        assert st["observedGeneration"] == o["metadata"]["generation"]
        assert st["lastPromOpRulesSuccessfulGenerated"].endswith("Z")
        async def changed() -> bool:
            return bool(await changes.between(0, 2**62))

        await eventually(changed)  # recorded right after the status
        events = await changes.between(0, 2**62)
        assert [e.kind for e in events] == ["config"] and events[0].service == "monitoring/myservice"

        # An invalid change keeps the previous rules, flags the status and says why in an Event.
        o["spec"]["slos"][0]["objective"] = 101
        await kube.client.update(o)

        async def flagged() -> bool:
            cur = await kube.client.get("sloth.slok.dev/v1", "PrometheusServiceLevel", "sloth-slo-my-service",
                                        "monitoring")
            return (cur.get("status") or {}).get("promOpRulesGenerated") is False

        async def warned() -> bool:
            evs = (await kube.client.list("v1", "Event", "monitoring")).items
            return any(e["reason"] == "InvalidSLO" and "objective: must be >0 and <=100, got 101" in e["message"]
                       for e in evs)

        await eventually(flagged)
        await eventually(warned)  # the Event follows the status write
        assert src in sink.groups

        await kube.client.delete("sloth.slok.dev/v1", "PrometheusServiceLevel", "sloth-slo-my-service", "monitoring")

        async def removed() -> bool:
            return src not in sink.groups

        await eventually(removed)
    finally:
        await runner.stop()


async def test_crd_schema_rejects_a_wrong_type(kube: KubeAPI) -> None:
    obj = _obj()
    obj["spec"]["slos"][0]["objective"] = "very high"
    await _namespace(kube)
    with pytest.raises(Invalid):
        await kube.client.create(obj)
