"""Chaos Mesh's Workflow run by pitwall: Serial, Parallel, Task with conditional branches, Suspend and a chaos
template with its deadline, on real pods run by pitwall's node."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pitwall.chaos.branches import ExprError, eval_bool
from tests.chaos.pod_env import SLEEPER, Env
from tests.node.conftest import PY, until

pytestmark = pytest.mark.timeout(120)

API = "chaos-mesh.org/v1alpha1"


def workflow() -> dict[str, Any]:
    pod_failure = {"action": "pod-failure", "mode": "all", "selector": {"labelSelectors": {"app": "victim"}}}
    return {"apiVersion": API, "kind": "Workflow", "metadata": {"name": "drill", "namespace": "default"},
            "spec": {"entry": "the-entry", "templates": [
                {"name": "the-entry", "templateType": "Serial", "deadline": "60s",
                 "children": ["decide", "together"]},
                {"name": "decide", "templateType": "Task",
                 "task": {"container": {"name": "main", "image": "busybox",
                                        "command": [PY, "-c", "print('branch-b')"]}},
                 "conditionalBranches": [
                     {"target": "wait-a", "expression": 'exitCode == 0 && stdout == "branch-a"'},
                     {"target": "wait-b", "expression": 'exitCode == 0 && stdout == "branch-b"'},
                     {"target": "wait-a", "expression": "stdout + 1"}]},
                {"name": "wait-a", "templateType": "Suspend", "deadline": "1s"},
                {"name": "wait-b", "templateType": "Suspend", "deadline": "1s"},
                {"name": "together", "templateType": "Parallel", "children": ["break-pod", "pause"]},
                {"name": "break-pod", "templateType": "PodChaos", "deadline": "3s", "podChaos": pod_failure},
                {"name": "pause", "templateType": "Suspend", "deadline": "1s"}]}}


async def nodes(env: Env) -> dict[str, dict[str, Any]]:
    items = (await env.client.list(API, "WorkflowNode", "default")).items
    return {o["spec"]["templateName"]: o for o in items}


def conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}


async def test_a_workflow_runs_its_templates_in_order(env: Env) -> None:
    await env.client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "victim", "namespace": "default",
                                                                             "labels": {"app": "victim"}},
                             "spec": {"containers": [{"name": "c", "image": "x", "command": [PY, "-c", SLEEPER]}]}})
    await env.client.create(workflow())
    chaos_seen: list[str] = []

    async def chaos_running() -> bool:
        items = (await env.client.list(API, "PodChaos", "default")).items
        chaos_seen.extend(o["metadata"]["name"] for o in items)
        return bool(items)
    await until(chaos_running, timeout=60)
    wf = await until(lambda: _accomplished(env), timeout=60)
    assert conditions(wf) == {"Scheduled": "True", "Accomplished": "True"}
    assert wf["status"]["entryNode"].startswith("the-entry-") and wf["status"]["endTime"]
    got = await nodes(env)
    assert set(got) == {"the-entry", "decide", "wait-b", "together", "break-pod", "pause"}  # wait-a not chosen
    decide = got["decide"]["status"]
    assert decide["conditionalBranchesStatus"]["branches"] == [
        {"target": "wait-a", "evaluationResult": "False"}, {"target": "wait-b", "evaluationResult": "True"},
        {"target": "wait-a", "evaluationResult": "Unknown"}]
    assert json.loads(decide["conditionalBranchesStatus"]["context"][0]) == {"exitCode": 0, "stdout": "branch-b"}
    assert conditions(got["decide"])["Accomplished"] == "True"
    # the Serial entry ran "together" only after "decide" finished
    assert got["together"]["metadata"]["creationTimestamp"] >= got["wait-b"]["metadata"]["creationTimestamp"]
    chaos_node = got["break-pod"]
    assert conditions(chaos_node)["DeadlineExceed"] == "True" and conditions(chaos_node)["ChaosInjected"] == "True"
    assert chaos_node["status"]["chaosResource"]["name"] == chaos_seen[0]
    assert chaos_seen[0].startswith(chaos_node["metadata"]["name"] + "-")
    await until(lambda: _none(env, "PodChaos"), timeout=30)  # deleted at the deadline: the pod recovers
    # deleting the workflow deletes its nodes (owner references)
    await env.client.delete(API, "Workflow", "drill", "default")
    await until(lambda: _none(env, "WorkflowNode"), timeout=30)


async def _accomplished(env: Env) -> dict[str, Any] | None:
    wf = await env.client.get(API, "Workflow", "drill", "default")
    return wf if conditions(wf).get("Accomplished") == "True" else None


async def _none(env: Env, kind: str) -> bool:
    return not (await env.client.list(API, kind, "default")).items


async def test_an_unknown_entry_is_reported(env: Env) -> None:
    wf = workflow()
    wf["spec"]["entry"] = "nope"
    await env.client.create(wf)

    async def event() -> bool:
        items = (await env.client.list("v1", "Event", "default")).items
        return any(e.get("reason") == "InvalidEntry" and "nope" in e.get("message", "") for e in items)
    await until(event, timeout=30)
    assert not (await env.client.list(API, "WorkflowNode", "default")).items


@pytest.mark.parametrize(("expr", "want"), [
    ('exitCode == 0 && stdout == "ok"', True),
    ("exitCode != 0 || stdout == 'ok'", True),
    ("not (exitCode > 0) and stdout startsWith 'o'", True),
    ('stdout contains "k" && exitCode <= 0', True),
    ('stdout matches "^o+k$"', True),
    ("exitCode == 1", False),
    ("!true", False),
])
def test_branch_expressions(expr: str, want: bool) -> None:
    assert eval_bool(expr, {"exitCode": 0, "stdout": "ok"}) is want


@pytest.mark.parametrize("expr", ["", "exitCode", "stdout == 1 &&", "missing == 1", "exitCode < 'a'", "(true"])
def test_bad_branch_expressions(expr: str) -> None:
    with pytest.raises(ExprError):
        eval_bool(expr, {"exitCode": 0, "stdout": "ok"})
