"""End to end: the resilience report of Chaos Toolkit runs against a live pitwall whose mesh series react to the
faults. A feeder stands in for the mesh: it remote-writes shop/web's and shop/api's Istio request metrics every
second, half of them slow 503s while a NetworkChaos selecting the app exists. The real ``chaos run`` (with the
``pitwall.chaos.ctk`` control and an explicit target) waits for web to recover; ``pitwall chaos run`` (no
control, the target derived from its ``start_fault``) reports at once and says api has not recovered yet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pitwall.config import load_settings
from tests.conftest import LiveServer, pod_subnets
from tests.ui.seed import _post, _remote_write

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

BIN = Path(sys.executable).parent
CHAOS = BIN / "chaos"
SRC = Path(__file__).resolve().parents[2] / "src"
CHAOS_API = "/apis/chaos-mesh.org/v1alpha1/namespaces/shop/networkchaos"
APPS = ("web", "api")
FAULT_S = 15  # how long each run keeps its fault


def _slo(app: str) -> dict[str, Any]:
    sel = f'reporter="destination",destination_workload_namespace="shop",destination_app="{app}"'
    return {"apiVersion": "sloth.slok.dev/v1", "kind": "PrometheusServiceLevel",
            "metadata": {"name": app, "namespace": "shop"}, "spec": {"service": app, "slos": [{
                "name": "availability", "objective": 99.0,
                "sli": {"events": {"errorQuery": f'sum(rate(istio_requests_total{{{sel},response_code=~"5.."}}'
                                                 "[{{.window}}]))",
                                   "totalQuery": f"sum(rate(istio_requests_total{{{sel}}}[{{{{.window}}}}]))"}},
                "alerting": {"pageAlert": {"disable": True}, "ticketAlert": {"disable": True}}}]}}


class Mesh:
    """Counters of each app's inbound requests, 10/s; half are slow 503s while a fault selects the app."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=10)
        self.counts = {app: {"ok": 0.0, "bad": 0.0, "fast": 0.0} for app in APPS}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _faulted(self) -> set[str]:
        items = self.client.get(CHAOS_API).json().get("items") or []
        return {((i["spec"].get("selector") or {}).get("labelSelectors") or {}).get("app", "") for i in items}

    def write(self, t_ms: int, failing: set[str], seconds: float) -> None:
        series = []
        for app in APPS:
            c = self.counts[app]
            bad = 5 * seconds if app in failing else 0.0
            c["ok"] += 10 * seconds - bad
            c["bad"] += bad
            c["fast"] += 10 * seconds - bad
            lb = {"__name__": "istio_requests_total", "reporter": "destination", "destination_app": app,
                  "destination_workload_namespace": "shop"}
            series += [({**lb, "response_code": "200"}, [(t_ms, c["ok"])]),
                       ({**lb, "response_code": "503"}, [(t_ms, c["bad"])])]
            hist = {**lb, "__name__": "istio_request_duration_milliseconds_bucket"}
            series += [({**hist, "le": "10"}, [(t_ms, c["fast"])]),
                       ({**hist, "le": "1000"}, [(t_ms, c["ok"] + c["bad"])]),
                       ({**hist, "le": "+Inf"}, [(t_ms, c["ok"] + c["bad"])])]
        _post(self.client, "/api/v1/write", content=_remote_write(series),
              headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                       "X-Prometheus-Remote-Write-Version": "0.1.0"})

    def seed(self, seconds: int) -> None:
        """The last ``seconds`` healthy, every 5 s (the baseline before the runs)."""
        now_ms = int(time.time() * 1000)
        for t in range(now_ms - seconds * 1000, now_ms - 1000, 5000):
            self.write(t, set(), 5)

    def _loop(self) -> None:
        while not self.stop.wait(1.0):
            self.write(int(time.time() * 1000), self._faulted(), 1)


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[LiveServer, Mesh]]:
    srv = LiveServer(load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                                   kube={"pod_cidr": pod_subnets()[0]}))
    srv.start()
    m = Mesh(srv.url)
    try:
        _post(m.client, "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": "shop"}})
        for app in APPS:
            _post(m.client, "/apis/sloth.slok.dev/v1/namespaces/shop/prometheusservicelevels", json=_slo(app))
        m.seed(600)
        m.thread.start()
        yield srv, m
    finally:
        m.stop.set()
        if m.thread.is_alive():
            m.thread.join(timeout=30)
        m.client.close()
        srv.stop()


def _experiment(app: str, url: str, *, control: bool) -> dict[str, Any]:
    ctk = {"type": "python", "module": "pitwall.chaos.ctk"}
    spec = {"action": "delay", "mode": "all", "selector": {"labelSelectors": {"app": app}},
            "delay": {"latency": "500ms"}}
    exp: dict[str, Any] = {
        "title": f"{app} under a delay", "description": "the report says how long it took to recover",
        "configuration": {"pitwall_url": url},
        "method": [{"type": "action", "name": f"delay-{app}", "pauses": {"after": FAULT_S},
                    "provider": {**ctk, "func": "start_fault",
                                 "arguments": {"kind": "NetworkChaos", "name": f"delay-{app}", "namespace": "shop",
                                               "spec": spec}}}],
        "rollbacks": [{"type": "action", "name": f"undo-{app}",
                       "provider": {**ctk, "func": "stop_fault",
                                    "arguments": {"kind": "NetworkChaos", "name": f"delay-{app}",
                                                  "namespace": "shop"}}}],
    }
    if control:
        exp["extensions"] = [{"name": "pitwall", "target": {"namespace": "shop", "app": app}}]
        exp["controls"] = [{"name": "pitwall", "provider": {**ctk, "arguments": {"recovery_wait_s": 180}}}]
    return exp


def _report(journal: dict[str, Any]) -> dict[str, Any]:
    entry = next(e for e in journal["experiment"]["extensions"] if e["name"] == "pitwall")
    assert entry.get("report") is not None, entry.get("report_note")
    report: dict[str, Any] = entry["report"]
    return report


def _wait_slos(client: httpx.Client) -> None:
    deadline = time.monotonic() + 30
    while len(client.get("/api/slo/v1/slos").json().get("slos") or []) < len(APPS):
        assert time.monotonic() < deadline, "the SLOs were not loaded"
        time.sleep(0.2)


def test_chaos_run_and_pitwall_chaos_run_write_the_report(mesh: tuple[LiveServer, Mesh], tmp_path: Path) -> None:
    srv, m = mesh
    _wait_slos(m.client)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    (tmp_path / "web.json").write_text(json.dumps(_experiment("web", srv.url, control=True)))
    (tmp_path / "api.json").write_text(json.dumps(_experiment("api", srv.url, control=False)))
    ctk = subprocess.Popen([str(CHAOS), "run", "web.json", "--journal-path", "web-journal.json"], cwd=tmp_path,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ours = subprocess.run([sys.executable, "-m", "pitwall.cli.main", "chaos", "run", "api.json", "--journal-path",
                               "api-journal.json", "--recovery-wait", "0", "--server", srv.url],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        _, err = ctk.communicate(timeout=300)
    finally:
        if ctk.poll() is None:
            ctk.kill()
            ctk.wait()
    assert ctk.returncode == 0, err[-3000:]
    assert "Resilience report: recovered" in err  # the control logs it in chaos run's output
    assert ours.returncode == 0, ours.stderr[-3000:]

    web = _report(json.loads((tmp_path / "web-journal.json").read_text()))
    s = web["signals"]
    assert web["target"] == "shop/web" and web["complete"] is True, web
    assert s["errors"]["before"] == 0 and s["errors"]["during"] > 2, s
    assert s["p99"]["before"] < 10 < 100 < s["p99"]["during"], s
    assert s["rate"]["before"] == pytest.approx(10, rel=0.1)
    # the 503s stop at the revert; rate()'s 1 m window holds them about a minute longer
    assert web["recovery_s"] is not None and 30 <= web["recovery_s"] <= 120, web
    assert [x["name"] for x in web["slo"]] == ["web-availability"] and web["slo"][0]["consumed"] > 0, web["slo"]

    api = _report(json.loads((tmp_path / "api-journal.json").read_text()))
    assert api["target"] == "shop/api" and api["complete"] is False and api["recovery_s"] is None, api
    assert api["recovery_note"].startswith("not recovered yet: "), api
    assert api["signals"]["errors"]["before"] == 0 and api["signals"]["errors"]["during"] > 2
    assert "Resilience report: shop/api" in ours.stdout and "recovery: not recovered yet" in ours.stdout
