"""Through the HTTP API: the pods/log subresource (follow, tail, previous, timestamps, limits) and real kubectl."""

from __future__ import annotations

import json
import os
import subprocess
import time

import httpx
import pytest

from tests.kube.conftest import KUBECTL
from tests.node.conftest import PY, NodeServer, alive, pod_children

TICKER = "import time\nfor i in range(1000):\n    print('tick', i, flush=True)\n    time.sleep(0.2)"


def _wait(pred: object, timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()  # type: ignore[operator]
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def _pod_yaml(name: str, code: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
                       "spec": {"terminationGracePeriodSeconds": 2, "containers": [
                           {"name": "main", "image": "python:3.11", "command": [PY, "-u", "-c", code]}]}})


def _get(s: NodeServer, path: str, **params: str) -> httpx.Response:
    return httpx.get(s.url + path, params=params, headers=s.headers(), verify=False, timeout=10)


@pytest.mark.timeout(90)
def test_log_subresource_over_http(node_server: NodeServer) -> None:
    s = node_server
    r = httpx.post(s.url + "/api/v1/namespaces/default/pods", content=_pod_yaml("ticker", TICKER),
                   headers={**s.headers(), "Content-Type": "application/json"}, verify=False)
    assert r.status_code == 201, r.text
    base = "/api/v1/namespaces/default/pods/ticker/log"
    _wait(lambda: "tick 3" in _get(s, base).text)
    assert _get(s, base, tailLines="1").text.count("\n") == 1
    assert len(_get(s, base, limitBytes="5").content) == 5
    stamped = _get(s, base, timestamps="true", tailLines="1").text
    assert stamped[:4].isdigit() and stamped.split(" ", 1)[0].endswith("Z")
    assert _get(s, base, sinceSeconds="1").text.count("\n") <= _get(s, base).text.count("\n")
    assert _get(s, base, previous="true").status_code == 400
    assert _get(s, base, container="nope").status_code == 400
    assert _get(s, "/api/v1/namespaces/default/pods/nope/log").status_code == 404
    seen: list[str] = []
    with httpx.stream("GET", s.url + base, params={"follow": "true", "tailLines": "0"}, headers=s.headers(),
                      verify=False, timeout=10) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            seen.append(line)
            if len(seen) >= 3:
                break
    nums = [int(x.split()[1]) for x in seen]
    assert nums == sorted(nums) and len(set(nums)) == 3


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_kubectl_apply_get_logs_follow_delete(node_server: NodeServer) -> None:
    if not os.path.exists(KUBECTL):
        pytest.skip(f"kubectl is not installed at {KUBECTL}")
    s = node_server
    code = ("import os, time\nprint('hello from', os.environ['POD_IP'], flush=True)\n"
            "for i in range(5):\n    print('line', i, flush=True)\n    time.sleep(0.3)\ntime.sleep(120)")
    s.kubectl("apply", "-f", "-", input=_pod_yaml("hello", code))

    def running() -> str | None:
        out = s.kubectl("get", "pods", "hello", "--no-headers").stdout
        return out if "Running" in out and " 1/1 " in out else None

    _wait(running)
    wide = s.kubectl("get", "pods", "-o", "wide").stdout
    assert "127.42." in wide and "test-node" in wide
    nodes = s.kubectl("get", "nodes", "-o", "wide").stdout
    assert "test-node" in nodes and "Ready" in nodes and "127.0.0.1" in nodes
    described = s.kubectl("describe", "node", "test-node").stdout
    assert "KubeletReady" in described and "hello" in described  # the node's non-terminated pods
    follow = subprocess.Popen([KUBECTL, f"--cache-dir={s.cache}", "logs", "-f", "hello"], stdout=subprocess.PIPE,
                              text=True, env={**{k: v for k, v in os.environ.items() if not k.startswith("KUBE")},
                                              "KUBECONFIG": str(s.kubeconfig), "HOME": str(s.kubeconfig.parent)})
    try:
        assert follow.stdout is not None
        lines = [follow.stdout.readline().strip() for _ in range(6)]
    finally:
        follow.kill()
        follow.wait()
        if follow.stdout is not None:
            follow.stdout.close()
    assert lines[0].startswith("hello from 127.42.") and lines[-1] == "line 4"
    desc = s.kubectl("describe", "pod", "hello").stdout
    assert "Started" in desc and "Scheduled" in desc
    w = s.kubelet.worker_for("default", "hello")
    pids = [c.proc.pid for c in w.containers if c.proc is not None] if w is not None else []
    assert pids
    s.kubectl("delete", "pod", "hello", timeout=60)
    assert not any(alive(p) for p in pids)
    assert "hello" not in s.kubectl("get", "pods").stdout
    assert pod_children(os.getpid()) == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_kubectl_shows_crash_loop_and_top(node_server: NodeServer) -> None:
    if not os.path.exists(KUBECTL):
        pytest.skip(f"kubectl is not installed at {KUBECTL}")
    s = node_server
    s.kubectl("apply", "-f", "-", input=_pod_yaml("crasher", "print('oops', flush=True); raise SystemExit(1)"))
    s.kubectl("apply", "-f", "-", input=_pod_yaml("steady", "import time; time.sleep(120)"))
    _wait(lambda: "CrashLoopBackOff" in s.kubectl("get", "pods", "crasher", "--no-headers").stdout)
    assert "oops" in s.kubectl("logs", "crasher", "--previous").stdout
    top = _wait(lambda: (lambda p: p.stdout if p.returncode == 0 and "steady" in p.stdout else None)(
        s.kubectl("top", "pods", check=False)))
    assert "MEMORY" in str(top)
    assert "test-node" in str(_wait(lambda: (lambda p: p.stdout if p.returncode == 0 else None)(
        s.kubectl("top", "nodes", check=False))))
    s.kubectl("delete", "pod", "crasher", "steady", timeout=60)
    assert pod_children(os.getpid()) == []
