"""TimeChaos and IOChaos through the controller on real pods: the chaos shim in their processes sees the
faults while the experiments run and not after (duration end, deletion), without restarting them."""

from __future__ import annotations

import shutil
import time
from typing import Any

import pytest

from pitwall.node import Kubelet
from pitwall.node.chaosshim import is_static
from pitwall.node.podconfig import chaos_shim_library
from tests.chaos.pod_env import SLEEPER, Env
from tests.chaos.test_podchaos import _gone, _injected, _recovered, chaos
from tests.node.conftest import FAST, NODE, PY, until

pytestmark = [pytest.mark.timeout(120), pytest.mark.skipif(not chaos_shim_library(),
                                                          reason="pitwall.node._chaosshim was not built")]

CLOCK = "while true; do date +%s; sleep 0.2; done"
# Every 0.2 s: append to and read back a file on the volume; print the read's time or the errno.
FILES = """
import os, time
path = os.path.join(os.environ["PITWALL_POD_ROOT"], "data", "f.txt")
while True:
    try:
        with open(path, "a") as f:
            f.write("x")
        t0 = time.monotonic()
        with open(path) as f:
            f.read()
        print("ok", round(time.monotonic() - t0, 3), flush=True)
    except OSError as e:
        print("err", e.errno, flush=True)
    time.sleep(0.2)
"""


def pod(name: str, command: list[str], *, volume: bool = False, env: dict[str, str] | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"name": "main", "image": "busybox", "command": command}
    spec: dict[str, Any] = {"terminationGracePeriodSeconds": 1, "containers": [c]}
    if volume:
        c["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
        spec["volumes"] = [{"name": "data", "emptyDir": {}}]
    if env:
        c["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                                           "labels": {"app": name}}, "spec": spec}


def last_line(env: Env, name: str) -> str:
    w = env.kubelet.worker_for("default", name)
    run = w.containers[0] if w is not None else None
    lines = run.logs.after(0) if run is not None and run.logs is not None else []
    return lines[-1][2] if lines else ""


async def printed(env: Env, name: str, ok: Any) -> str | None:
    line = last_line(env, name)
    return line if line and ok(line) else None


def restarts(env: Env, name: str) -> int:
    w = env.kubelet.worker_for("default", name)
    assert w is not None
    return w.containers[0].restart_count


def skew(line: str) -> float:
    return float(line) - time.time()


async def pause(env: Env, name: str, value: str) -> None:
    await env.client.patch("chaos-mesh.org/v1alpha1", "TimeChaos", name, {"metadata": {"annotations": {
        "experiment.chaos-mesh.org/pause": value}}}, namespace="default")


async def test_time_offset_while_running_gone_at_duration_end_pause_and_delete(env: Env) -> None:
    await env.client.create(pod("clock", ["sh", "-c", CLOCK]))
    await until(lambda: printed(env, "clock", lambda s: abs(skew(s)) < 5), 30)
    sel = {"labelSelectors": {"app": "clock"}}
    await env.client.create(chaos("TimeChaos", "past", {"mode": "all", "selector": sel, "timeOffset": "-1h",
                                                        "duration": "4s"}))
    obj = await until(lambda: _injected(env, "TimeChaos", "past"), 20)
    assert obj["status"]["experiment"]["containerRecords"][0]["id"] == "default/clock/main"
    await until(lambda: printed(env, "clock", lambda s: -3610 < skew(s) < -3590), 10)
    await until(lambda: _recovered(env, "TimeChaos", "past"), 20)  # the duration is over
    await until(lambda: printed(env, "clock", lambda s: abs(skew(s)) < 5), 10)
    await env.client.create(chaos("TimeChaos", "future", {"mode": "one", "selector": sel, "timeOffset": "1h2m3s"}))
    await until(lambda: _injected(env, "TimeChaos", "future"), 20)
    await until(lambda: printed(env, "clock", lambda s: 3713 < skew(s) < 3733), 10)
    await pause(env, "future", "true")  # recovered while paused, applied again when resumed
    await until(lambda: printed(env, "clock", lambda s: abs(skew(s)) < 5), 10)
    await pause(env, "future", "false")
    await until(lambda: printed(env, "clock", lambda s: 3713 < skew(s) < 3733), 10)
    await env.client.delete("chaos-mesh.org/v1alpha1", "TimeChaos", "future", "default")
    await until(lambda: _gone(env, "TimeChaos", "future"), 20)
    await until(lambda: printed(env, "clock", lambda s: abs(skew(s)) < 5), 10)
    assert restarts(env, "clock") == 0, "applied and recovered without restarting the process"
    changes = await env.changes.between(0, 2**62)
    assert any(c.kind == "chaos" and "TimeChaos" in c.summary for c in changes)


async def test_io_fault_and_latency_on_a_volume(env: Env) -> None:
    await env.client.create(pod("files", [PY, "-u", "-c", FILES], volume=True))
    await until(lambda: printed(env, "files", lambda s: s.startswith("ok")), 30)
    sel = {"labelSelectors": {"app": "files"}}
    await env.client.create(chaos("IOChaos", "eio", {"action": "fault", "mode": "all", "selector": sel,
                                                     "volumePath": "/data", "path": "/data/**", "errno": 5}))
    await until(lambda: _injected(env, "IOChaos", "eio"), 20)
    await until(lambda: printed(env, "files", lambda s: s == "err 5"), 10)
    await env.client.delete("chaos-mesh.org/v1alpha1", "IOChaos", "eio", "default")
    await until(lambda: _gone(env, "IOChaos", "eio"), 20)
    await until(lambda: printed(env, "files", lambda s: s.startswith("ok")), 10)
    await env.client.create(chaos("IOChaos", "slow", {"action": "latency", "mode": "all", "selector": sel,
                                                      "volumePath": "/data", "delay": "300ms", "methods": ["read"],
                                                      "duration": "5s"}))
    await until(lambda: _injected(env, "IOChaos", "slow"), 20)
    # Python's read of a small file is two read calls (the data, then end of file): 2 x 300 ms at least
    await until(lambda: printed(env, "files", lambda s: s.startswith("ok") and float(s.split()[1]) >= 0.6), 10)
    await until(lambda: _recovered(env, "IOChaos", "slow"), 20)
    await until(lambda: printed(env, "files", lambda s: s.startswith("ok") and float(s.split()[1]) < 0.3), 10)
    assert restarts(env, "files") == 0


async def test_processes_without_the_shim_are_refused_with_the_reason(env: Env) -> None:
    await env.client.create(pod("optout", [PY, "-u", "-c", SLEEPER], env={"LD_PRELOAD": ""}))
    busybox = shutil.which("busybox")
    static = busybox is not None and is_static(busybox)
    if static:
        await env.client.create(pod("static", [str(busybox), "sleep", "60"]))
    for name in ("optout", "static") if static else ("optout",):
        await env.client.create(chaos("TimeChaos", f"t-{name}", {"mode": "all", "timeOffset": "1h",
                                                                  "selector": {"labelSelectors": {"app": name}}}))

    async def failed(name: str, why: str) -> bool:
        """The reason in the record's events and in a Warning Event."""
        obj = await env.chaos("TimeChaos", f"t-{name}")
        recs = (obj.get("status") or {}).get("experiment", {}).get("containerRecords") or []
        in_record = any(e["type"] == "Failed" and why in e.get("message", "") for e in recs[0].get("events") or []) \
            if recs else False
        events = (await env.client.list("v1", "Event", "default")).items
        return in_record and any(e.get("reason") == "Failed" and e["involvedObject"]["name"] == f"t-{name}"
                                 and why in e.get("message", "") for e in events)

    await until(lambda: failed("optout", "did not load the chaos shim"), 30)
    if static:
        await until(lambda: failed("static", "is a static executable"), 30)
    assert (await env.cond("TimeChaos", "t-optout")).get("AllInjected") == "False"


async def test_a_node_without_the_shim_says_so(env: Env) -> None:
    env.kubelet.chaos_preload = False
    await env.client.create(pod("plain", [PY, "-u", "-c", SLEEPER]))
    await env.client.create(chaos("IOChaos", "off", {"action": "fault", "mode": "all", "volumePath": "/data",
                                                     "errno": 5, "selector": {"labelSelectors": {"app": "plain"}}}))

    async def reason() -> str | None:
        obj = await env.chaos("IOChaos", "off")
        conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
        return str(conds.get("AllInjected", {}).get("reason") or "") or None

    assert "kube.chaos_preload" in await until(reason, 20)


async def test_a_restarted_node_gets_the_fault_again_and_loses_it_on_delete(env: Env) -> None:
    await env.client.create(pod("clock", ["sh", "-c", CLOCK]))
    await env.client.create(chaos("TimeChaos", "skew", {"mode": "all", "timeOffset": "-1h",
                                                        "selector": {"labelSelectors": {"app": "clock"}}}))
    await until(lambda: _injected(env, "TimeChaos", "skew"), 30)
    await until(lambda: printed(env, "clock", lambda s: -3610 < skew(s) < -3590), 10)
    # pitwall restarts: its containers are started again and its node forgot every control file
    await env.stop_chaos()
    await env.kubelet.stop()
    env.kubelet = Kubelet(env.kube, data_dir=env.tmp / "node", logs=env.sinks, metrics=env.sinks, node_name=NODE,
                          pod_cidr=env.pod_cidr, **FAST)
    await env.kubelet.start()
    await env.kubelet.wait_synced()
    await env.start_chaos()
    await until(lambda: printed(env, "clock", lambda s: -3610 < skew(s) < -3590), 30)

    async def counts() -> tuple[int, int] | None:  # found no longer in place, recovered and applied again
        rec = (await env.chaos("TimeChaos", "skew"))["status"]["experiment"]["containerRecords"][0]
        return (rec["injectedCount"], rec["recoveredCount"]) if rec["injectedCount"] > 1 else None

    assert await until(counts, 10) == (2, 1)
    await env.client.delete("chaos-mesh.org/v1alpha1", "TimeChaos", "skew", "default")
    await until(lambda: _gone(env, "TimeChaos", "skew"), 20)
    await until(lambda: printed(env, "clock", lambda s: abs(skew(s)) < 5), 10)


# Every 0.2 s: look up three names and print what each gave ("E<errno>" or the address).
LOOKUPS = """
import socket, time
while True:
    out = []
    for n in ("api.example.test", "chaos-mesh.org", "localhost"):
        try:
            out.append(socket.getaddrinfo(n, 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])
        except socket.gaierror as e:
            out.append("E%d" % e.errno)
    print(" ".join(out), flush=True)
    time.sleep(0.2)
"""


async def test_dns_error_and_random_answers_on_matching_names(env: Env) -> None:
    await env.client.create(pod("dns", [PY, "-u", "-c", LOOKUPS]))
    await until(lambda: printed(env, "dns", lambda s: s.split()[2] == "127.0.0.1"), 30)
    sel = {"labelSelectors": {"app": "dns"}}
    bad = await env.client.create(chaos("DNSChaos", "bad", {"action": "error", "mode": "all", "selector": sel,
                                                           "patterns": ["chaos-*"]}))
    assert bad["kind"] == "DNSChaos"
    await until(lambda: _injected(env, "DNSChaos", "bad"), 20)
    # SERVFAIL as glibc reports it (EAI_AGAIN) for the matching name only; the others as before
    line = await until(lambda: printed(env, "dns", lambda s: s.split()[1] == "E-3"), 10)
    assert line is not None and line.split()[2] == "127.0.0.1" and not line.split()[0].startswith("127.")
    await env.client.delete("chaos-mesh.org/v1alpha1", "DNSChaos", "bad", "default")
    await until(lambda: _gone(env, "DNSChaos", "bad"), 20)
    await until(lambda: printed(env, "dns", lambda s: s.split()[1] != "E-3"), 10)
    # random: a name that resolves to loopback gets another address while the experiment runs
    await env.client.create(chaos("DNSChaos", "random", {"action": "random", "mode": "all", "selector": sel,
                                                         "patterns": ["localhos?"], "duration": "3s"}))
    await until(lambda: printed(env, "dns", lambda s: s.split()[2] not in ("127.0.0.1", "E-3")), 20)
    await until(lambda: _recovered(env, "DNSChaos", "random"), 20)
    await until(lambda: printed(env, "dns", lambda s: s.split()[2] == "127.0.0.1"), 10)
    assert restarts(env, "dns") == 0


def test_dns_patterns_refused_as_chaos_mesh_does() -> None:
    from pitwall.chaos.model import ChaosSpecError
    from pitwall.chaos.shimfaults import dns_line

    assert dns_line({"action": "random"}) == "dns r"
    assert dns_line({"patterns": ["google.com", "github.*", "chaos-mes?.org"]}) == \
        "dns e google.com github.* chaos-mes?.org"
    for bad in ({"patterns": ["chaos-*.org"]}, {"patterns": ["a b"]}, {"action": "delay"}):
        with pytest.raises(ChaosSpecError):
            dns_line(bad)
