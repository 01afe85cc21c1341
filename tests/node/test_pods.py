"""Pods as processes: start, address, probes, restarts, back-off, limits, deletion (real child processes)."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from pitwall.node.podconfig import preload_env
from tests.node.conftest import (
    HTTP_SERVER,
    IGNORE_TERM,
    MEMORY_HOG,
    NODE,
    Node,
    alive,
    free_port,
    pod,
    pod_children,
    py,
    until,
)


def ready(status: dict[str, object]) -> bool:
    conds = status.get("conditions") or []
    assert isinstance(conds, list)
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


@pytest.mark.timeout(60)
async def test_http_pod_binds_its_ip_gets_ready_and_deletion_leaves_no_process(node: Node) -> None:
    port = free_port()
    c = py("web", HTTP_SERVER, env=[{"name": "PORT", "value": str(port)}],
           ports=[{"name": "http", "containerPort": port}],
           readinessProbe={"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1})
    await node.client.create(pod("web", c))
    st = await until(lambda: _if(node.status("web"), ready))
    assert (await node.get("web"))["spec"]["nodeName"] == NODE  # bound by the node
    assert st["phase"] == "Running"
    ip = st["podIP"]
    assert ip.startswith("127.42.") and st["podIPs"] == [{"ip": ip}]
    async with httpx.AsyncClient(trust_env=False) as h:
        r = await h.get(f"http://{ip}:{port}/")
    assert r.text == f"hello from {ip}"
    pids = node.pids("web")
    assert pids and all(alive(p) for p in pids)
    await node.client.delete("v1", "Pod", "web", "default")
    await until(lambda: _gone(node, "web"))
    assert not any(alive(p) for p in pids)
    assert pod_children(os.getpid()) == []
    assert "listening on " + ip + f" {port}" in node.sinks.lines(pod="web", container="web", app="web",
                                                                    namespace="default", job="default/web")


async def _if(coro: object, pred: object) -> object:
    v = await coro  # type: ignore[misc]
    return v if pred(v) else None  # type: ignore[operator]


async def _gone(node: Node, name: str) -> bool:
    from pitwall.kube import NotFoundError
    try:
        await node.get(name)
    except NotFoundError:
        return True
    return False


PRINT_ENV = """
import os, pathlib
root = pathlib.Path(os.environ["PITWALL_POD_ROOT"])
for k in ("GREETING", "POD_NAME", "POD_NS", "APP", "MY_IP", "NODE", "FROM_CM", "FROM_SECRET", "CFG_color",
          "MIXED", "WEB_SERVICE_HOST", "WEB_SERVICE_PORT", "WEB_PORT_80_TCP_ADDR"):
    print(f"{k}={os.environ.get(k)}", flush=True)
print("argv", " ".join(__import__("sys").argv[1:]), flush=True)
print("cwd", os.getcwd() == str(root), flush=True)
print("file", (root / "etc/config/color").read_text(), flush=True)
print("mountenv", open(os.environ["PITWALL_MOUNT_CONFIG"] + "/color").read(), flush=True)
print("secretfile", (root / "etc/secret/token").read_text(), flush=True)
print("mode", oct(os.stat(root / "etc/secret/token").st_mode & 0o777), flush=True)
import time
last = None
for _ in range(400):
    v = (root / "etc/config/color").read_text()
    if v != last:
        print("watch", v, flush=True)
        last = v
    time.sleep(0.05)
"""


@pytest.mark.timeout(60)
async def test_env_value_from_env_from_service_vars_volumes_and_configmap_update(node: Node) -> None:
    c = node.client
    await c.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "default"},
                    "data": {"color": "blue", "size": "L"}})
    await c.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec", "namespace": "default"},
                    "stringData": {"token": "s3cret"}})
    await c.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
    spec = py("app", PRINT_ENV, args=["$(GREETING)", "$$(GREETING)", "$(NOPE)"], env=[
        {"name": "GREETING", "value": "hello"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "size"}}},
        {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
        {"name": "MIXED", "value": "$(GREETING)-$(POD_NAME)"},
    ], envFrom=[{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        volumeMounts=[{"name": "config", "mountPath": "/etc/config"}, {"name": "secret", "mountPath": "/etc/secret"}])
    await c.create(pod("envpod", spec, restartPolicy="Never", volumes=[
        {"name": "config", "configMap": {"name": "cfg"}},
        {"name": "secret", "secret": {"secretName": "sec", "defaultMode": 0o400}}]))
    w = await until(lambda: _worker_line(node, "envpod", "watch blue"))
    ip = (await node.status("envpod"))["podIP"]
    svc_ip = (await c.get("v1", "Service", "web", "default"))["spec"]["clusterIP"]
    await c.patch("v1", "ConfigMap", "cfg", {"data": {"color": "green"}}, namespace="default")
    await until(lambda: _worker_line(node, "envpod", "watch green"))
    lines = [ln for _, _, ln in w]
    for want in ("GREETING=hello", "POD_NAME=envpod", "POD_NS=default", "APP=envpod", f"MY_IP={ip}",
                 f"NODE={NODE}", "FROM_CM=L", "FROM_SECRET=s3cret", "CFG_color=blue", "MIXED=hello-envpod",
                 f"WEB_SERVICE_HOST={svc_ip}", "WEB_SERVICE_PORT=80", f"WEB_PORT_80_TCP_ADDR={svc_ip}",
                 "argv hello $(GREETING) $(NOPE)", "cwd True", "file blue", "mountenv blue", "secretfile s3cret",
                 "mode 0o400"):
        assert want in lines, (want, lines)


async def _worker_line(node: Node, name: str, line: str) -> object:
    w = node.kubelet.worker_for("default", name)
    if w is None or w.containers[0].logs is None:
        return None
    entries = w.containers[0].logs.after(0)
    return entries if any(e[2] == line for e in entries) else None


@pytest.mark.timeout(60)
async def test_crash_loop_back_off_restart_count_and_last_state(node: Node) -> None:
    await node.client.create(pod("crash", py("c", "print('bye', flush=True); raise SystemExit(3)")))
    st = await until(lambda: _if(node.container("crash"),
                                 lambda s: (s.get("state") or {}).get("waiting", {}).get("reason") == "CrashLoopBackOff"
                                 and s.get("restartCount", 0) >= 2))
    term = st["lastState"]["terminated"]
    assert term["exitCode"] == 3 and term["reason"] == "Error" and term["startedAt"] and term["finishedAt"]
    assert "back-off" in st["state"]["waiting"]["message"]
    assert (await node.status("crash"))["phase"] == "Running"
    reasons = {e["reason"] for e in await node.events("crash")}
    assert {"Scheduled", "Created", "Started", "BackOff"} <= reasons
    w = node.kubelet.worker_for("default", "crash")
    assert w is not None and w.containers[0].backoff.current <= 1.2  # capped at the (tiny) maximum


@pytest.mark.timeout(60)
async def test_restart_policies_and_phases(node: Node) -> None:
    await node.client.create(pod("ok", py("c", "print('done')"), restartPolicy="Never"))
    await node.client.create(pod("bad", py("c", "raise SystemExit(2)"), restartPolicy="Never"))
    await node.client.create(pod("flaky", py("c", "import os,pathlib; p=pathlib.Path(os.environ['PITWALL_POD_ROOT'],"
                                              "'..','..','flag'); ok=p.exists(); p.touch(); raise SystemExit(0 if ok "
                                              "else 1)"), restartPolicy="OnFailure"))
    await until(lambda: _if(node.status("ok"), lambda s: s.get("phase") == "Succeeded"))
    await until(lambda: _if(node.status("bad"), lambda s: s.get("phase") == "Failed"))
    st = await until(lambda: _if(node.status("flaky"), lambda s: s.get("phase") == "Succeeded"))
    cs = st["containerStatuses"][0]
    assert cs["restartCount"] == 1 and cs["state"]["terminated"]["reason"] == "Completed"
    bad = await node.container("bad")
    assert bad["state"]["terminated"]["exitCode"] == 2 and bad["restartCount"] == 0
    assert not ready(await node.status("ok"))


@pytest.mark.timeout(60)
async def test_missing_command_and_args_without_command_are_reported(node: Node) -> None:
    await node.client.create(pod("nocmd", {"name": "c", "image": "x", "command": ["/no/such/binary"]},
                                 restartPolicy="Never"))
    await node.client.create(pod("argsonly", {"name": "c", "image": "nginx", "args": ["-g", "daemon off;"]}))
    st = await until(lambda: _if(node.container("nocmd"), lambda s: "terminated" in (s.get("state") or {})))
    assert st["state"]["terminated"]["reason"] == "StartError"
    assert "/no/such/binary" in st["state"]["terminated"]["message"]
    st = await until(lambda: _if(node.container("argsonly"), lambda s: (s.get("state") or {}).get("waiting", {})
                                 .get("reason") == "RunContainerError"))
    assert "command" in st["state"]["waiting"]["message"]
    evs = await until(lambda: _if(node.events("nocmd"), lambda es: any(e["reason"] == "Failed" for e in es)))
    assert any("/no/such/binary" in e["message"] for e in evs)


@pytest.mark.timeout(60)
async def test_liveness_failure_restarts_the_container(node: Node) -> None:
    port = free_port()
    c = py("web", HTTP_SERVER, env=[{"name": "PORT", "value": str(port)}, {"name": "FAILFILE", "value": "$(PITWALL_POD_ROOT)/fail"}],
           livenessProbe={"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 1, "failureThreshold": 2})
    await node.client.create(pod("live", c))
    await until(lambda: _if(node.container("live"), lambda s: "running" in (s.get("state") or {})))
    first = node.pids("live")
    w = node.kubelet.worker_for("default", "live")
    assert w is not None
    (w.root / "fail").touch()
    st = await until(lambda: _if(node.container("live"), lambda s: s.get("restartCount", 0) >= 1))
    assert st["lastState"]["terminated"]["exitCode"] in (137, 143)
    (w.root / "fail").unlink()
    evs = await node.events("live")
    assert any(e["reason"] == "Unhealthy" and e["message"].startswith("Liveness probe failed") for e in evs)
    assert any(e["reason"] == "Killing" and "failed liveness probe" in e["message"] for e in evs)
    assert not any(alive(p) for p in first)


@pytest.mark.timeout(60)
async def test_readiness_and_startup_probes(node: Node) -> None:
    c = py("c", "import time; time.sleep(60)",
           startupProbe={"exec": {"command": ["test", "-e", "started"]}, "periodSeconds": 1, "failureThreshold": 30},
           readinessProbe={"exec": {"command": ["test", "-e", "ready"]}, "periodSeconds": 1})
    await node.client.create(pod("probed", c))
    await until(lambda: _if(node.container("probed"), lambda s: "running" in (s.get("state") or {})))
    w = node.kubelet.worker_for("default", "probed")
    assert w is not None
    (w.root / "ready").touch()  # readiness passes but startup has not: not ready
    await asyncio.sleep(1.5)
    cs = await node.container("probed")
    assert cs["started"] is False and cs["ready"] is False
    (w.root / "started").touch()
    await until(lambda: _if(node.status("probed"), ready))
    (w.root / "ready").unlink()
    await until(lambda: _if(node.status("probed"), lambda s: not ready(s)))


@pytest.mark.timeout(60)
async def test_memory_limit_kills_with_oomkilled(node: Node) -> None:
    c = py("hog", MEMORY_HOG, resources={"limits": {"memory": "100Mi"}})
    await node.client.create(pod("hog", c, restartPolicy="Never"))
    st = await until(lambda: _if(node.container("hog"), lambda s: "terminated" in (s.get("state") or {})), 40)
    assert st["state"]["terminated"]["reason"] == "OOMKilled"
    assert st["state"]["terminated"]["exitCode"] == 137


@pytest.mark.timeout(60)
async def test_grace_period_then_sigkill_and_prestop_hook(node: Node) -> None:
    marker = node.data.parent / "prestop-ran"
    c = py("c", IGNORE_TERM, lifecycle={"preStop": {"exec": {"command": ["touch", str(marker)]}}})
    await node.client.create(pod("stubborn", c, terminationGracePeriodSeconds=1))
    await until(lambda: _if(node.container("stubborn"), lambda s: "running" in (s.get("state") or {})))
    await until(lambda: _worker_line(node, "stubborn", "sleeping " + str(node.pids("stubborn")[0])))
    pids = node.pids("stubborn")
    w = node.kubelet.worker_for("default", "stubborn")
    assert w is not None
    buf = w.containers[0].logs
    obj = await node.client.delete("v1", "Pod", "stubborn", "default")
    assert obj["metadata"]["deletionGracePeriodSeconds"] == 1
    await until(lambda: _gone(node, "stubborn"))
    assert not any(alive(p) for p in pids)
    assert buf is not None and any(e[2] == "got SIGTERM, ignoring" for e in buf.after(0))
    assert any(e["reason"] == "Killing" for e in await node.events("stubborn"))
    assert marker.exists()


@pytest.mark.timeout(60)
async def test_children_of_a_container_die_with_it(node: Node) -> None:
    code = ("import subprocess,sys,time; p=subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)']);"
            "print('child', p.pid, flush=True); time.sleep(60)")
    await node.client.create(pod("family", py("c", code)))
    entries = await until(lambda: _worker_prefix(node, "family", "child "))
    child = int(entries.split()[1])
    assert alive(child)
    await node.client.delete("v1", "Pod", "family", "default")
    await until(lambda: _gone(node, "family"))
    await until(lambda: _async(not alive(child)))


async def _async(v: object) -> object:
    return v


async def _worker_prefix(node: Node, name: str, prefix: str) -> str | None:
    w = node.kubelet.worker_for("default", name)
    if w is None or w.containers[0].logs is None:
        return None
    return next((e[2] for e in w.containers[0].logs.after(0) if e[2].startswith(prefix)), None)


@pytest.mark.timeout(60)
async def test_restart_of_pitwall_recreates_pods_and_kills_leftovers(node: Node) -> None:
    await node.client.create(pod("keep", py("c", "import time; print('up', flush=True); time.sleep(60)")))
    await until(lambda: _if(node.container("keep"), lambda s: "running" in (s.get("state") or {})))
    old = node.pids("keep")
    await node.kubelet.stop()
    n = await node.client.get("v1", "Node", NODE)
    assert any(c["type"] == "Ready" and c["status"] == "False" for c in n["status"]["conditions"])
    assert not any(alive(p) for p in old)
    assert pod_children(os.getpid()) == []
    # a leftover from a "crashed" run: a process group recorded in a pid file
    import json
    import subprocess
    import sys
    w_dir = node.data / "pods" / "leftover-uid" / "containers"
    w_dir.mkdir(parents=True)
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        from pitwall.node.runtime import proc_start_ticks
        (w_dir / "c.pid").write_text(json.dumps({"pid": stray.pid, "start_ticks": proc_start_ticks(stray.pid)}))
        await node.restart_kubelet()
        assert stray.wait(timeout=5) == -9
    finally:
        stray.kill()
    st = await until(lambda: _if(node.container("keep"), lambda s: "running" in (s.get("state") or {})
                                 and s.get("restartCount") == 1))
    assert st["ready"] is True
    assert node.pids("keep") and node.pids("keep") != old
    assert not (node.data / "pods" / "leftover-uid").exists()


@pytest.mark.timeout(60)
async def test_metrics_and_top(node: Node) -> None:
    await node.client.create(pod("busy", py("c", "import time\nwhile True: sum(range(10000)); time.sleep(0.001)")))
    await until(lambda: _if(node.container("busy"), lambda s: "running" in (s.get("state") or {})))
    await until(lambda: _async({"kube_pod_status_phase", "kube_pod_container_status_restarts_total",
                                "container_cpu_usage_seconds_total", "container_memory_working_set_bytes"}
                               <= node.sinks.metric_names()))
    pm = await until(lambda: node.kubelet.stats.pod_metrics("default"))
    usage = pm[0]["containers"][0]["usage"]
    assert usage["cpu"].endswith("n") and usage["memory"].endswith("Ki")
    assert pm[0]["metadata"]["labels"] == {"app": "busy"}
    nm = await node.kubelet.stats.node_metrics()
    assert nm[0]["metadata"]["name"] == NODE


@pytest.mark.timeout(30)
async def test_node_and_lease_are_registered(node: Node) -> None:
    n = await node.client.get("v1", "Node", NODE)
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    lease = await node.client.get("coordination.k8s.io/v1", "Lease", NODE, "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == NODE


@pytest.mark.timeout(30)
async def test_node_part_follows_the_wiring_contract(node: Node) -> None:
    from pitwall.core.selfmetrics import SelfMetrics
    from pitwall.node import NodePart, build_node_part

    part = build_node_part(node.kube, data_dir=node.data / "other", logs=node.sinks, metrics=node.sinks,
                           node_name="other-node")
    assert isinstance(part, NodePart) and part.components() == [part.kubelet] and part.mounts(lambda: True) == []
    part.register_metrics(SelfMetrics())


@pytest.mark.timeout(60)
async def test_empty_dir_shared_by_two_containers_and_host_path(node: Node) -> None:
    host = node.data.parent / "hostdir"
    writer = py("writer", "import os,time; open(os.environ['PITWALL_MOUNT_SHARED'] + '/msg', 'w').write('hi');"
                "open('host/h.txt', 'w').write('on host'); time.sleep(60)",
                volumeMounts=[{"name": "shared", "mountPath": "/data"}, {"name": "host", "mountPath": "/host"}])
    reader = py("reader", "import os,time\nfor _ in range(200):\n    p='data/msg'\n    if os.path.exists(p):\n"
                "        print('read', open(p).read(), flush=True); break\n    time.sleep(0.05)\ntime.sleep(60)",
                volumeMounts=[{"name": "shared", "mountPath": "/data"}])
    await node.client.create(pod("shared", writer, reader, volumes=[
        {"name": "shared", "emptyDir": {}},
        {"name": "host", "hostPath": {"path": str(host), "type": "DirectoryOrCreate"}}]))
    w = await until(lambda: _async(node.kubelet.worker_for("default", "shared")))
    await until(lambda: _async(w.containers[1].logs is not None
                               and any(e[2] == "read hi" for e in w.containers[1].logs.after(0))))
    await until(lambda: _async((host / "h.txt").exists()))
    assert (host / "h.txt").read_text() == "on host"


@pytest.mark.timeout(60)
async def test_init_containers_run_first_in_order(node: Node) -> None:
    mounts = [{"name": "work", "mountPath": "/work"}]
    init1 = py("init1", "open('work/order', 'a').write('1')", volumeMounts=mounts)
    init2 = py("init2", "import os,pathlib; p=pathlib.Path('work/tries'); n=int(p.read_text() if p.exists() else 0);"
               "p.write_text(str(n+1)); open('work/order','a').write('2'); raise SystemExit(0 if n else 1)",
               volumeMounts=mounts)
    app = py("app", "import time; print('order', open('work/order').read(), flush=True); time.sleep(60)",
             volumeMounts=mounts)
    await node.client.create(pod("inits", app, initContainers=[init1, init2], volumes=[{"name": "work",
                                                                                        "emptyDir": {}}]))
    st = await until(lambda: _if(node.status("inits"), lambda s: s.get("phase") == "Running"))
    ics = st["initContainerStatuses"]
    assert [c["state"]["terminated"]["reason"] for c in ics] == ["Completed", "Completed"]
    assert ics[1]["restartCount"] == 1
    assert any(c["type"] == "Initialized" and c["status"] == "True" for c in st["conditions"])
    await until(lambda: _worker_line(node, "inits", "order 122"))
    await node.client.create(pod("initfail", py("app", "print('never')"), restartPolicy="Never",
                                 initContainers=[py("boom", "raise SystemExit(4)")]))
    st = await until(lambda: _if(node.status("initfail"), lambda s: s.get("phase") == "Failed"))
    assert st["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 4
    assert st["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}


@pytest.mark.timeout(60)
async def test_watch_expired_relists(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    from collections.abc import AsyncIterator
    from typing import Any

    from pitwall.kube import Gone, WatchEvent

    real = node.client.watch
    calls: list[int] = []

    def watch(*args: Any, **kwargs: Any) -> AsyncIterator[WatchEvent]:
        calls.append(1)
        if len(calls) == 1:
            async def expired() -> AsyncIterator[WatchEvent]:
                raise Gone.too_old(1, 2)
                yield  # pragma: no cover
            return expired()
        return real(*args, **kwargs)

    monkeypatch.setattr(node.client, "watch", watch)
    await node.restart_kubelet()
    await node.client.create(pod("after-gone", py("c", "import time; time.sleep(60)")))
    await until(lambda: _if(node.container("after-gone"), lambda s: "running" in (s.get("state") or {})))
    assert len(calls) >= 2


async def test_a_pods_connections_leave_from_its_own_address(node: Node) -> None:
    """Connections to loopback addresses come from POD_IP (the preloaded library), not 127.0.0.1."""
    if "PITWALL_POD_SOURCE_IP" not in preload_env("127.42.0.9"):
        pytest.skip("pitwall.node._podsource was not built (no C compiler)")
    seen: list[str] = []

    async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen.append(w.get_extra_info("peername")[0])
        w.close()
    srv = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    code = (f"import socket, time\nsocket.create_connection(('127.0.0.1', {port})).close()\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.connect(('127.0.0.1', %d)); s.close()\n"
            "time.sleep(30)\n" % port)
    await node.client.create(pod("caller", py("c", code)))
    async with srv:
        await until(lambda: _ready_when(len(seen) == 2), timeout=30)
    ip = (await node.status("caller"))["podIP"]
    assert seen == [ip, "127.0.0.1"]  # a socket the program bound itself keeps its address


async def _ready_when(v: bool) -> bool:
    return v
