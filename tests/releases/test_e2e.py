"""Flagger's Canary on a live `pitwall server` with real pods: traffic through the mesh from the test, the
analysis judged from the mesh's own Istio metrics, a good revision promoted, a bad one (half its answers 5xx)
rolled back with the primary untouched, every webhook received in order by a local HTTP sink."""

from __future__ import annotations

import http.server
import itertools
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port, pod_subnets, start_pitwall_process, stop_pitwall_process, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# Answers 500 to every other request when FAIL=1 (a bad version), else 200; the body names the version.
APP = """
import http.server, os, itertools
fail = os.environ.get("FAIL") == "1"
n = itertools.count()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        status = 500 if fail and next(n) % 2 else 200
        body = os.environ["VERSION"].encode()
        self.send_response(status); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((os.environ["POD_IP"], 8080), H).serve_forever()
"""
API = "/apis/flagger.app/v1beta1/namespaces/default/canaries"
DEPLOY = "/apis/apps/v1/namespaces/default/deployments"


class Sink:
    """The webhook receiver: records (type, body) of each POST in a thread of its own."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                sink.received.append((self.path.strip("/"), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def types(self) -> list[str]:
        return [t for t, _ in self.received if t != "event"]


class Load:
    """Requests to the apex Service all the time (the canary has no traffic of its own)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = headers or {}
        self.stop = threading.Event()
        self.answers: list[tuple[int, str]] = []
        self.timed: list[tuple[float, str]] = []  # (monotonic time, body) of each 200
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=5) as c:
            while not self.stop.is_set():
                try:
                    r = c.get(self.url, headers=self.headers)
                    self.answers.append((r.status_code, r.text))
                    if r.status_code == 200:
                        self.timed.append((time.monotonic(), r.text))
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)


TOKEN = "e2e-admin-token-0123456789"


def _serve(tmp_path: Path, extra: dict[str, Any] | None = None,
           headers: dict[str, str] | None = None) -> Iterator[httpx.Client]:
    cfg = tmp_path / "pitwall.yaml"
    # Pods of a server take addresses from 127.42.0.2 up by default: other servers on this machine (other
    # tests) use the same ones, and a pod that cannot bind its address never becomes available. A /24 of our own.
    pod_cidr = pod_subnets()[0]
    cfg.write_text(yaml.safe_dump({"storage": {"fsync": False}, "kube": {"pod_cidr": pod_cidr}, **(extra or {})}))
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    proc = start_pitwall_process(data, port, config=cfg)
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout=60, proc=proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, headers=headers) as c:
            yield c
    finally:
        stop_pitwall_process(proc)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[httpx.Client]:
    yield from _serve(tmp_path)


@pytest.fixture
def secured_server(tmp_path: Path) -> Iterator[httpx.Client]:
    """A server with ``auth_tokens``: every route needs the token (the client sends it)."""
    yield from _serve(tmp_path, {"auth_tokens": [{"token": TOKEN, "scopes": ["admin"]}]},
                      {"Authorization": f"Bearer {TOKEN}"})


def _deployment(version: str, fail: bool) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "podinfo"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "podinfo"}},
                     "template": {"metadata": {"labels": {"app": "podinfo"}}, "spec": {
                         "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "app", "image": f"podinfo:{version}",
                                         "command": [sys.executable, "-u", "-c", APP],
                                         "env": [{"name": "VERSION", "value": version},
                                                 {"name": "FAIL", "value": "1" if fail else "0"}],
                                         "ports": [{"name": "http", "containerPort": 8080}]}]}}}}


def _story(c: httpx.Client) -> str:
    """The Canary's status and its Events, for a failure's message."""
    events = c.get("/api/v1/namespaces/default/events").json()["items"]
    lines = [f"{e['lastTimestamp']} x{e.get('count')} {e['message']}" for e in events
             if e["involvedObject"]["kind"] == "Canary"]
    return f"status {_status(c)}\n" + "\n".join(sorted(lines)[-25:])


def _until(check: Any, timeout: float, what: str, story: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, KeyError, IndexError) as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.25)
    raise AssertionError(f"{what}: not reached in {timeout}s; last: {last!r}\n{story() if story else ''}")


def _status(c: httpx.Client) -> dict[str, Any]:
    r = c.get(f"{API}/podinfo")
    r.raise_for_status()
    st: dict[str, Any] = r.json().get("status") or {}
    return st


def _set_version(c: httpx.Client, version: str, fail: bool) -> None:
    """Replace the pod template, read again on a 409 (the controllers write the Deployment's status between
    our read and our write), as client-go's RetryOnConflict does."""
    for _ in range(10):
        d = c.get(f"{DEPLOY}/podinfo").json()
        d["spec"]["template"] = _deployment(version, fail)["spec"]["template"]
        r = c.put(f"{DEPLOY}/podinfo", json=d)
        if r.status_code != 409:
            assert r.status_code == 200, r.text
            return
    raise AssertionError("the Deployment kept changing under the update")


def _check_shares(steps: list[tuple[float, int, str]], answers: list[tuple[float, str]], canary: str) -> None:
    """The share of ``canary`` answers while each weight held in the analysis is the weight, within
    statistical tolerance (from promotion on, the primary answers as the canary too).

    A step's window leaves out 0.5 s at each end: the status is polled every 0.25 s and the proxy applies a
    new route moments after the controller writes it. Each step with 15+ answers is within 4 standard
    deviations of a binomial (plus 5 points for the edges); all of them pooled within 4 deviations."""
    seen = expected = variance = 0.0
    checked = []
    for (t0, w, phase), (t1, _, _) in itertools.pairwise(steps):
        if phase != "Progressing" or not 0 < w < 100:
            continue
        got = [body == canary for t, body in answers if t0 + 0.5 <= t <= t1 - 0.5]
        if len(got) < 15:
            continue
        p, n, k = w / 100, len(got), sum(got)
        sd = (n * p * (1 - p)) ** 0.5
        assert abs(k - n * p) <= 4 * sd + 0.05 * n, f"weight {w}: {k} of {n} answers from the canary"
        seen, expected, variance = seen + k, expected + n * p, variance + sd * sd
        checked.append((w, k, n))
    assert len(checked) >= 2, f"too few answers per step to judge the split: {checked} of steps {steps}"
    assert abs(seen - expected) <= 4 * variance ** 0.5, f"pooled: {seen} canary answers, {expected:.1f} expected; {checked}"


def _primary_image(c: httpx.Client) -> str:
    return str(c.get(f"{DEPLOY}/podinfo-primary").json()["spec"]["template"]["spec"]["containers"][0]["image"])


def test_canary_promotes_a_good_version_and_rolls_back_a_bad_one(server: httpx.Client) -> None:
    c = server
    sink = Sink()
    hooks = [{"name": t, "type": t, "url": f"{sink.url}/{t}", "timeout": "5s"}
             for t in ("confirm-rollout", "pre-rollout", "rollout", "confirm-promotion", "post-rollout")]
    hooks.append({"name": "timeline", "type": "event", "url": f"{sink.url}/event"})
    assert c.post(DEPLOY, json=_deployment("v1", False)).status_code == 201
    canary = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
              "metadata": {"name": "podinfo", "annotations": {"releases.pitwall.dev/min-requests": "5",
                                                              "releases.pitwall.dev/no-traffic": "wait"}},
              "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                       "progressDeadlineSeconds": 120,
                       "service": {"port": 80, "targetPort": 8080},
                       "analysis": {"interval": "2s", "threshold": 2, "maxWeight": 50, "stepWeight": 10,
                                    "metrics": [{"name": "request-success-rate", "interval": "15s",
                                                 "thresholdRange": {"min": 99}},
                                                {"name": "request-duration", "interval": "15s",
                                                 "thresholdRange": {"max": 500}}],
                                    "webhooks": hooks}}}
    assert c.post(API, json=canary).status_code == 201
    _until(lambda: _status(c).get("phase") == "Initialized", 90, "Initialized")
    assert c.get(f"{DEPLOY}/podinfo").json()["spec"]["replicas"] == 0
    ip = c.get("/api/v1/namespaces/default/services/podinfo").json()["spec"]["clusterIP"]
    load = Load(f"http://{ip}/")
    try:
        _until(lambda: load.answers and load.answers[-1] == (200, "v1"), 60, "v1 answering through the apex")
        # a good version: promoted
        _set_version(c, "v2", fail=False)
        _until(lambda: _status(c).get("phase") == "Progressing", 30, "Progressing")
        steps: list[tuple[float, int, str]] = []  # (when first seen, weight, phase)

        def promoted() -> bool:
            st = _status(c)
            now = (int(st.get("canaryWeight") or 0), str(st.get("phase")))
            if not steps or steps[-1][1:] != now:
                steps.append((time.monotonic(), *now))
            return now[1] == "Succeeded"

        _until(promoted, 150, "Succeeded", lambda: _story(c))
        assert {10, 20, 30, 40, 50} <= {w for _, w, _ in steps}
        _check_shares(steps, load.timed, canary="v2")
        assert _primary_image(c) == "podinfo:v2"
        _until(lambda: load.answers[-1] == (200, "v2"), 30, "v2 answering from the primary")
        # post-rollout hooks run just after the phase is written, as in Flagger
        _until(lambda: sink.types()[-1] == "post-rollout", 20, "post-rollout after Succeeded")
        assert sink.types()[:2] == ["confirm-rollout", "pre-rollout"]
        assert sink.types()[-2:] == ["confirm-promotion", "post-rollout"]
        assert set(sink.types()[2:-2]) == {"rollout"}
        good_hooks = len(sink.types())
        # Let the metric window (15s, plus the mesh's 5s flush) pass: the canary workload's samples from v2
        # must not count for v3 (the queries select by workload, as Flagger's do). Steps of 10 give the
        # 5xx series time to show: a new series' first sample counts for nothing in rate(), as in Prometheus.
        time.sleep(20)
        # a bad version: half its answers 500, rolled back
        _set_version(c, "v3", fail=True)
        _until(lambda: _status(c).get("phase") == "Failed", 150, "Failed", lambda: _story(c))
        assert _primary_image(c) == "podinfo:v2"
        assert c.get(f"{DEPLOY}/podinfo").json()["spec"]["replicas"] == 0
        vs = c.get("/apis/networking.istio.io/v1/namespaces/default/virtualservices/podinfo").json()
        assert [d["weight"] for d in vs["spec"]["http"][0]["route"]] == [100, 0]
        _until(lambda: sink.types()[-1] == "post-rollout", 20, "post-rollout after Failed")
        bad = sink.types()[good_hooks:]
        assert bad[:2] == ["confirm-rollout", "pre-rollout"] and bad[-1] == "post-rollout"
        post = [b for t, b in sink.received if t == "post-rollout"]
        assert [p["phase"] for p in post] == ["Succeeded", "Failed"]
        _until(lambda: load.answers[-1] == (200, "v2"), 30, "v2 answering again")
    finally:
        load.stop.set()
        sink.server.shutdown()
        sink.server.server_close()
    events = c.get("/api/v1/namespaces/default/events").json()["items"]
    msgs = [e["message"] for e in events if e["involvedObject"]["kind"] == "Canary"]
    assert any(m.startswith("Halt podinfo.default advancement success rate") for m in msgs)
    assert "Rolling back podinfo.default failed checks threshold reached 2" in msgs
    assert any(b["metadata"]["eventMessage"] == "Promotion completed! Scaling down podinfo.default"
               for t, b in sink.received if t == "event")


def test_ab_testing_sends_only_matching_requests_to_the_canary(server: httpx.Client) -> None:
    c = server
    assert c.post(DEPLOY, json=_deployment("v1", False)).status_code == 201
    canary = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
              "metadata": {"name": "podinfo", "annotations": {"releases.pitwall.dev/min-requests": "5",
                                                              "releases.pitwall.dev/no-traffic": "wait"}},
              "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                       "service": {"port": 80, "targetPort": 8080},
                       "analysis": {"interval": "2s", "threshold": 3, "iterations": 4,
                                    "match": [{"headers": {"x-canary": {"exact": "insider"}}}],
                                    "metrics": [{"name": "request-success-rate", "interval": "15s",
                                                 "thresholdRange": {"min": 99}}]}}}
    assert c.post(API, json=canary).status_code == 201
    _until(lambda: _status(c).get("phase") == "Initialized", 90, "Initialized", lambda: _story(c))
    ip = c.get("/api/v1/namespaces/default/services/podinfo").json()["spec"]["clusterIP"]
    plain, insider = Load(f"http://{ip}/"), Load(f"http://{ip}/", {"x-canary": "insider"})
    try:
        _until(lambda: plain.answers and insider.answers and insider.answers[-1] == (200, "v1"), 60, "v1 answering")
        _set_version(c, "v2", fail=False)
        _until(lambda: int(_status(c).get("iterations") or 0) >= 1, 60, "the first iteration", lambda: _story(c))
        _until(lambda: insider.answers[-1] == (200, "v2"), 30, "insiders on the canary")
        mark = len(plain.answers), len(insider.answers)
        _until(lambda: len(plain.answers) > mark[0] + 30 and len(insider.answers) > mark[1] + 30, 30, "traffic")
        assert _status(c)["phase"] == "Progressing"
        assert {v for _, v in plain.answers[mark[0]:]} == {"v1"}  # everyone else on the primary
        assert {v for _, v in insider.answers[mark[1]:]} == {"v2"}
        _until(lambda: _status(c).get("phase") == "Succeeded", 120, "Succeeded", lambda: _story(c))
        _until(lambda: plain.answers[-1] == (200, "v2"), 30, "v2 for everyone after promotion")
    finally:
        plain.stop.set()
        insider.stop.set()


def test_load_tester_webhooks_on_a_server_with_tokens_are_the_only_traffic_and_the_canary_is_promoted(
        secured_server: httpx.Client) -> None:
    """Flagger's pre-rollout and load-test webhooks pointed at pitwall's own load tester on a server with
    ``auth_tokens``: the hooks carry no token, as Flagger's do, and the controller serves them in process. Nothing
    else calls the service, so the minimum-request guard (wait) holds the analysis until hey's requests reach the
    mesh's metrics."""
    c = secured_server
    base = str(c.base_url).rstrip("/")
    # over the network the load tester stays behind the token like every other route
    assert httpx.post(f"{base}/flagger-loadtester/gate/open", json={"name": "x", "namespace": "y"}).status_code == 401
    assert c.post(DEPLOY, json=_deployment("v1", False)).status_code == 201
    pre = {"name": "acceptance-test", "type": "pre-rollout", "url": f"{base}/flagger-loadtester/", "timeout": "30s",
           "metadata": {"type": "bash", "cmd": "hey -n 10 -c 2 http://podinfo-canary.default/"}}
    hook = {"name": "load-test", "type": "rollout", "url": f"{base}/flagger-loadtester/", "timeout": "5s",
            "metadata": {"type": "cmd", "cmd": "hey -z 1m -q 10 -c 2 http://podinfo-canary.default/",
                         "logCmdOutput": "true"}}
    canary = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
              "metadata": {"name": "podinfo", "annotations": {"releases.pitwall.dev/min-requests": "5",
                                                              "releases.pitwall.dev/no-traffic": "wait"}},
              "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                       "progressDeadlineSeconds": 120,
                       "service": {"port": 80, "targetPort": 8080},
                       "analysis": {"interval": "2s", "threshold": 2, "maxWeight": 30, "stepWeight": 10,
                                    "metrics": [{"name": "request-success-rate", "interval": "15s",
                                                 "thresholdRange": {"min": 99}}],
                                    "webhooks": [pre, hook]}}}
    assert c.post(API, json=canary).status_code == 201
    _until(lambda: _status(c).get("phase") == "Initialized", 90, "Initialized", lambda: _story(c))
    _set_version(c, "v2", fail=False)
    _until(lambda: _status(c).get("phase") == "Succeeded", 150, "Succeeded", lambda: _story(c))
    assert _primary_image(c) == "podinfo:v2"
    events = c.get("/api/v1/namespaces/default/events").json()["items"]
    assert "Pre-rollout check acceptance-test passed" in {e["message"] for e in events}
    # the metrics the analysis read: the canary workload's requests, all sent by the load tester
    q = c.get("/api/v1/query", params={"query": 'sum(istio_requests_total{reporter="destination",'
                                                'destination_workload="podinfo"})'}).json()
    assert float(q["data"]["result"][0]["value"][1]) >= 10
