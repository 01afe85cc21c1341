"""PodChaos and StressChaos through the controller, on real pods run by pitwall's node."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

import pytest

from tests.chaos.pod_env import SLEEPER, Env
from tests.node.conftest import PY, until

pytestmark = pytest.mark.timeout(90)


def deployment(name: str, replicas: int = 2) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"terminationGracePeriodSeconds": 1,
                                           "containers": [{"name": "main", "image": "python:3.11",
                                                           "command": [PY, "-u", "-c", SLEEPER]}]}}}}


def chaos(kind: str, name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    m: dict[str, Any] = {"name": name, "namespace": "default"}
    if annotations:
        m["annotations"] = annotations
    return {"apiVersion": "chaos-mesh.org/v1alpha1", "kind": kind, "metadata": m, "spec": spec}


async def running_pods(env: Env, app: str) -> list[dict[str, Any]]:
    items = (await env.client.list("v1", "Pod", "default", label_selector=f"app={app}")).items
    return [p for p in items if not p["metadata"].get("deletionTimestamp")
            and all("running" in (c.get("state") or {}) for c in (p.get("status") or {}).get("containerStatuses")
                    or [{}])]


async def test_pod_kill_replaced_by_the_deployment(env: Env) -> None:
    await env.client.create(deployment("web", 2))
    before = await until(lambda: _n(running_pods(env, "web"), 2), 30)
    await env.client.create(chaos("PodChaos", "kill-one", {"action": "pod-kill", "mode": "one",
                                                           "selector": {"labelSelectors": {"app": "web"}}}))
    obj = await until(lambda: _injected(env, "PodChaos", "kill-one"), 20)
    rec = obj["status"]["experiment"]["containerRecords"]
    assert len(rec) == 1 and rec[0]["phase"] == "Injected" and rec[0]["injectedCount"] == 1
    assert rec[0]["events"][0]["type"] == "Succeeded" and rec[0]["events"][0]["operation"] == "Apply"
    killed = rec[0]["id"].split("/")[1]
    assert killed in {p["metadata"]["name"] for p in before}
    after = await until(lambda: _n_without(running_pods(env, "web"), 2, killed), 30)
    assert killed not in {p["metadata"]["name"] for p in after}
    changes = await env.changes.between(0, 2**62)
    assert any(c.kind == "chaos" and "pod-kill injected" in c.summary for c in changes)
    assert env.report.injections[("PodChaos", "pod-kill")] == 1
    # deleting the experiment recovers its records and drops the finalizer
    await env.client.delete("chaos-mesh.org/v1alpha1", "PodChaos", "kill-one", "default")
    await until(lambda: _gone(env, "PodChaos", "kill-one"), 20)


async def test_selector_matching_nothing_is_reported(env: Env) -> None:
    await env.client.create(chaos("PodChaos", "nobody", {"action": "pod-kill", "mode": "all",
                                                         "selector": {"labelSelectors": {"app": "absent"}}}))

    async def reported() -> Any:
        st = (await env.chaos("PodChaos", "nobody")).get("status") or {}
        sel = [c for c in st.get("conditions") or [] if c["type"] == "Selected"]
        return sel and sel[0]["status"] == "False" and "no target" in sel[0].get("reason", "")
    await until(reported, 20)


async def test_pod_failure_reverted_after_duration(env: Env) -> None:
    await env.client.create(deployment("api", 1))
    [p] = await until(lambda: _n(running_pods(env, "api"), 1), 30)
    name = p["metadata"]["name"]
    await env.client.create(chaos("PodChaos", "fail", {"action": "pod-failure", "mode": "all", "duration": "4s",
                                                       "selector": {"labelSelectors": {"app": "api"}}}))
    await until(lambda: _injected(env, "PodChaos", "fail"), 20)

    async def failing() -> Any:
        st = (await env.client.get("v1", "Pod", name, "default")).get("status") or {}
        cs = (st.get("containerStatuses") or [{}])[0]
        return (cs.get("state") or {}).get("waiting", {}).get("reason") == "PodFailure" and not cs.get("ready")
    await until(failing, 20)
    assert env.kubelet.container_groups("default", name) == {}
    await until(lambda: _recovered(env, "PodChaos", "fail"), 30)
    await until(lambda: _n(running_pods(env, "api"), 1), 30)
    assert name in env.kubelet.container_groups("default", name) or env.kubelet.container_groups("default", name)
    assert not env.kubelet.is_held("default", name)


async def test_pause_annotation_recovers_and_resumes(env: Env) -> None:
    await env.client.create(deployment("pz", 1))
    [p] = await until(lambda: _n(running_pods(env, "pz"), 1), 30)
    name = p["metadata"]["name"]
    await env.client.create(chaos("PodChaos", "pf", {"action": "pod-failure", "mode": "one",
                                                     "selector": {"labelSelectors": {"app": "pz"}}}))
    await until(lambda: _injected(env, "PodChaos", "pf"), 20)
    assert env.kubelet.is_held("default", name)
    await env.client.patch("chaos-mesh.org/v1alpha1", "PodChaos", "pf",
                           {"metadata": {"annotations": {"experiment.chaos-mesh.org/pause": "true"}}},
                           namespace="default")
    await until(lambda: _conds(env, "PodChaos", "pf", Paused="True", AllRecovered="True"), 20)
    assert not env.kubelet.is_held("default", name)
    await env.client.patch("chaos-mesh.org/v1alpha1", "PodChaos", "pf",
                           {"metadata": {"annotations": {"experiment.chaos-mesh.org/pause": "false"}}},
                           namespace="default")
    await until(lambda: _conds(env, "PodChaos", "pf", Paused="False", AllInjected="True"), 20)
    assert env.kubelet.is_held("default", name)
    await env.client.delete("chaos-mesh.org/v1alpha1", "PodChaos", "pf", "default")
    await until(lambda: _gone(env, "PodChaos", "pf"), 20)
    assert not env.kubelet.is_held("default", name)


async def test_container_kill_restarts_the_container(env: Env) -> None:
    await env.client.create(deployment("ck", 1))
    [p] = await until(lambda: _n(running_pods(env, "ck"), 1), 30)
    name = p["metadata"]["name"]
    await env.client.create(chaos("PodChaos", "ck", {"action": "container-kill", "mode": "one",
                                                     "containerNames": ["main"],
                                                     "selector": {"labelSelectors": {"app": "ck"}}}))
    obj = await until(lambda: _injected(env, "PodChaos", "ck"), 20)
    assert obj["status"]["experiment"]["containerRecords"][0]["id"] == f"default/{name}/main"

    async def restarted() -> Any:
        cs = ((await env.client.get("v1", "Pod", name, "default")).get("status") or {}).get("containerStatuses")
        return cs and cs[0].get("restartCount", 0) >= 1
    await until(restarted, 30)


@pytest.mark.skipif(shutil.which("stress-ng") is None, reason="stress-ng not installed")
@pytest.mark.slow
async def test_stress_visible_in_pod_cpu_and_gone_after_controller_restart(env: Env) -> None:
    await env.client.create(deployment("cpu", 1))
    [p] = await until(lambda: _n(running_pods(env, "cpu"), 1), 30)
    name = p["metadata"]["name"]
    w = env.kubelet.worker_for("default", name)
    assert w is not None
    base = w.containers[0].cpu_total
    await env.client.create(chaos("StressChaos", "burn", {"mode": "one", "duration": "6s",
                                                          "selector": {"labelSelectors": {"app": "cpu"}},
                                                          "stressors": {"cpu": {"workers": 1, "load": 80}}}))
    await until(lambda: _injected(env, "StressChaos", "burn"), 20)
    kv = (await env.store.range("/pitwall/chaos/stressors/", limit=10)).kvs
    assert len(kv) == 1
    import orjson

    from pitwall.chaos.faults import _group_members

    pgid = orjson.loads(kv[0].value)["pgid"]
    assert _group_members(pgid)

    async def burning() -> Any:
        return w.containers[0].cpu_total - base > 1.0  # the sleeper alone uses ~0 CPU
    await until(burning, 20)
    # pitwall's chaos controller stops mid-fault (as in a crash); the duration ends while it is down
    await env.stop_chaos()
    await asyncio.sleep(6.5)
    assert _group_members(pgid), "the stressor outlives the controller until it is reconciled"
    await env.start_chaos()
    await until(lambda: _recovered(env, "StressChaos", "burn"), 30)
    await until(lambda: _none(_group_members(pgid)), 10)
    assert (await env.store.range("/pitwall/chaos/stressors/", limit=10)).kvs == []
    changes = await env.changes.between(0, 2**62)
    assert any("stress reverted" in c.summary for c in changes)


async def _n(coro: Any, n: int) -> Any:
    items = await coro
    return items if len(items) == n else None


async def _n_without(coro: Any, n: int, name: str) -> Any:
    items = await coro
    return items if len(items) == n and name not in {p["metadata"]["name"] for p in items} else None


async def _none(v: Any) -> bool:
    return not v


async def _conds(env: Env, kind: str, name: str, **want: str) -> bool:
    have = await env.cond(kind, name)
    return all(have.get(k) == v for k, v in want.items())


async def _injected(env: Env, kind: str, name: str) -> Any:
    if await _conds(env, kind, name, Selected="True", AllInjected="True"):
        return await env.chaos(kind, name)
    return None


async def _recovered(env: Env, kind: str, name: str) -> Any:
    return await _conds(env, kind, name, AllRecovered="True")


async def _gone(env: Env, kind: str, name: str) -> bool:
    try:
        await env.chaos(kind, name)
    except Exception:
        return True
    return False


@pytest.mark.skipif(shutil.which("stress-ng") is None, reason="stress-ng not installed")
async def test_stress_reverted_when_its_target_pod_goes_away(env: Env) -> None:
    await env.client.create(deployment("gone", 1))
    [p] = await until(lambda: _n(running_pods(env, "gone"), 1), 30)
    name = p["metadata"]["name"]
    await env.client.create(chaos("StressChaos", "orphan", {"mode": "one", "selector": {"labelSelectors": {"app": "gone"}},
                                                            "stressors": {"cpu": {"workers": 1, "load": 10}}}))
    await until(lambda: _injected(env, "StressChaos", "orphan"), 20)
    import orjson

    from pitwall.chaos.faults import _group_members

    [kv] = (await env.store.range("/pitwall/chaos/stressors/", limit=10)).kvs
    pgid = orjson.loads(kv.value)["pgid"]
    await env.client.delete("v1", "Pod", name, "default")  # the Deployment makes another; the stressor must go
    await until(lambda: _none(_group_members(pgid)), 30)

    async def reported() -> Any:
        obj = await env.chaos("StressChaos", "orphan")
        [r] = obj["status"]["experiment"]["containerRecords"]
        ops = [(e["type"], e["operation"]) for e in r.get("events") or []]
        return r["recoveredCount"] == 1 and ("Failed", "Apply") in ops and r["phase"] == "Not Injected"
    await until(reported, 20)
    failed = [c for c in await env.changes.between(0, 2**62) if "apply failed" in c.summary]
    messages = [c.details["message"] for c in failed]
    assert failed and len(messages) == len(set(messages)), messages  # a retry of the same failure: reported once


@pytest.mark.skipif(shutil.which("stress-ng") is None, reason="stress-ng not installed")
async def test_stress_is_not_applied_again_to_a_terminating_pod(env: Env) -> None:
    """A pod that takes its grace period to stop: the stressor goes with the delete and is not started again
    on the pod while it terminates (it would be recorded as injected into a pod about to vanish)."""
    stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(0.2)\n"
    dep = deployment("slowstop", 1)
    pod_spec = dep["spec"]["template"]["spec"]
    pod_spec["terminationGracePeriodSeconds"] = 4
    pod_spec["containers"][0]["command"] = [PY, "-u", "-c", stubborn]
    await env.client.create(dep)
    [p] = await until(lambda: _n(running_pods(env, "slowstop"), 1), 30)
    await env.client.create(chaos("StressChaos", "late", {"mode": "one",
                                                          "selector": {"labelSelectors": {"app": "slowstop"}},
                                                          "stressors": {"cpu": {"workers": 1, "load": 10}}}))
    await until(lambda: _injected(env, "StressChaos", "late"), 20)
    await env.client.delete("v1", "Pod", p["metadata"]["name"], "default")

    async def refused() -> Any:
        [r] = (await env.chaos("StressChaos", "late"))["status"]["experiment"]["containerRecords"]
        return r if any(e["type"] == "Failed" and e["operation"] == "Apply" for e in r.get("events") or []) else None
    r = await until(refused, 30)
    assert r["injectedCount"] == 1 and r["recoveredCount"] == 1 and r["phase"] == "Not Injected", r
    assert "terminating" in r["events"][-1]["message"] or "not found" in r["events"][-1]["message"]


async def test_pod_failure_on_a_never_restart_pod_runs_it_again(env: Env) -> None:
    await env.client.create({"apiVersion": "v1", "kind": "Pod",
                             "metadata": {"name": "once", "namespace": "default", "labels": {"app": "once"}},
                             "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                                      "containers": [{"name": "main", "image": "python:3.11",
                                                      "command": [PY, "-u", "-c", SLEEPER]}]}})
    await until(lambda: _n(running_pods(env, "once"), 1), 30)
    await env.client.create(chaos("PodChaos", "fail-once", {"action": "pod-failure", "mode": "all", "duration": "2s",
                                                            "selector": {"labelSelectors": {"app": "once"}}}))
    await until(lambda: _injected(env, "PodChaos", "fail-once"), 20)
    await until(lambda: _recovered(env, "PodChaos", "fail-once"), 20)
    await until(lambda: _n(running_pods(env, "once"), 1), 30)
    st = (await env.client.get("v1", "Pod", "once", "default"))["status"]
    assert st["phase"] == "Running" and st["containerStatuses"][0]["restartCount"] >= 1
