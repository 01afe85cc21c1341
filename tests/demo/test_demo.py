"""Acceptance of ``pitwall demo`` (issue 8): one real run, checked through the public APIs only.

The module fixture runs ``pitwall demo --duration 60 --seed 1`` on a free
port and, while it runs, polls every API the criteria need until each one is
met (or the run ends), keeping what it saw. The run must then end by itself
with code 0, leaving no child process. Each test asserts one criterion on
those observations, so a failure names exactly what was missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from pitwall.demo.services import SERVICES
from tests.conftest import free_port, stop_pitwall_process
from tests.demo.test_supervisor import gone

pytestmark = pytest.mark.slow

DURATION_S = 60
EXPECTED_EDGES = {("frontend", "catalog"), ("frontend", "checkout"), ("catalog", "inventory"),
                  ("checkout", "inventory"), ("checkout", "payment")}
DEMO_ALERT = "HighErrorRate"
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
# The summary's "child NAME pid N" (supervised) and "pod APP pid N" (the shop's pods on pitwall's node) lines.
_PID_LINE = re.compile(r"\s+(?:child|pod) (\S+)\s+pid (\d+)")


@dataclass
class Run:
    """What one demo run printed, what the probes found, and how it ended."""

    url: str
    work_dir: Path
    lines: list[str] = field(default_factory=list)
    found: dict[str, Any] = field(default_factory=dict)  # criterion -> evidence
    errors: dict[str, str] = field(default_factory=dict)  # criterion -> last failure
    returncode: int | None = None
    child_pids: dict[str, int] = field(default_factory=dict)  # the runner's children and the shop's pods
    leftovers: list[str] = field(default_factory=list)
    firing: set[tuple[str, str]] = field(default_factory=set)  # (alertname, service_name) seen firing

    def evidence(self, criterion: str) -> Any:
        if criterion not in self.found:
            logs = "\n".join(self.lines[-5:])
            pytest.fail(f"{criterion}: not seen during the run; last problem: "
                        f"{self.errors.get(criterion, 'none recorded')}\n(demo output tail:\n{logs})")
        return self.found[criterion]


# -- probes: each returns evidence when its criterion holds, else raises ----------------------------


def _query(c: httpx.Client, expr: str) -> list[dict[str, Any]]:
    r = c.get("/api/v1/query", params={"query": expr})
    r.raise_for_status()
    return list(r.json()["data"]["result"])


def probe_up(c: httpx.Client, run: Run) -> Any:
    up = {s["metric"].get("job"): s["value"][1] for s in _query(c, "up")}
    missing = [s for s in SERVICES if up.get(s) != "1"]
    assert not missing, f"up is not 1 for {missing}: {up}"
    return up


def probe_service_metrics(c: httpx.Client, run: Run) -> Any:
    jobs = {s["metric"]["service_name"] for s in
            _query(c, "sum by (service_name) (http_server_requests_total) > 0")}
    assert set(SERVICES) <= jobs, f"http_server_requests_total only from {jobs}"
    return jobs


def probe_load_curve(c: httpx.Client, run: Run) -> Any:
    now = time.time()
    r = c.get("/api/v1/query_range", params={"query": "loadgen_target_visits_per_second",
                                               "start": now - 120, "end": now, "step": 5})
    r.raise_for_status()
    values = [float(v) for s in r.json()["data"]["result"] for _, v in s["values"]]
    assert len(values) >= 6, f"only {len(values)} points of the traffic curve"
    assert max(values) - min(values) > 0.3, f"traffic curve is flat: {values}"
    return values


def probe_span_metrics(c: httpx.Client, run: Run) -> Any:
    names = {s["metric"]["service_name"] for s in
             _query(c, 'sum by (service_name) (traces_span_metrics_calls_total{span_kind="SPAN_KIND_SERVER"})')}
    assert set(SERVICES) <= names, f"span metrics only for {names}"
    return names


def probe_payment_errors(c: httpx.Client, run: Run) -> Any:
    res = _query(c, 'sum(increase(traces_span_metrics_calls_total{service_name="payment", '
                    'span_kind="SPAN_KIND_SERVER", status_code="STATUS_CODE_ERROR"}[2m]))'
                    ' / sum(increase(traces_span_metrics_calls_total{service_name="payment", '
                    'span_kind="SPAN_KIND_SERVER"}[2m]))')
    assert res and float(res[0]["value"][1]) > 0, f"payment error ratio from span metrics: {res}"
    return float(res[0]["value"][1])


def probe_loki_services(c: httpx.Client, run: Run) -> Any:
    r = c.get("/loki/api/v1/label/service_name/values")
    r.raise_for_status()
    values = set(r.json()["data"])
    assert set(SERVICES) <= values, f"Loki service_name values: {values}"
    return values


def probe_dashboards(c: httpx.Client, run: Run) -> Any:
    page = c.get("/dashboards")
    page.raise_for_status()
    uids = set(re.findall(r'href="/dashboards/([\w-]+)\?', page.text)) - {"new", "import"}
    assert {"service-overview", "business-kpis"} <= uids, f"dashboards listed: {uids}"
    view = c.get("/dashboards/service-overview")
    view.raise_for_status()
    assert view.text.count('data-testid="panel"') >= 6
    return uids


def probe_zipkin_services(c: httpx.Client, run: Run) -> Any:
    r = c.get("/api/v2/services")
    r.raise_for_status()
    values = set(r.json())
    assert set(SERVICES) <= values, f"Zipkin services: {values}"
    return values


def _trace_problems(spans: list[dict[str, Any]]) -> list[str]:
    """Why ``spans`` is not one well-linked trace (empty when it is)."""
    by_id = {s["id"]: s for s in spans}
    roots = [s for s in spans if not s.get("parentId")]
    problems = [] if len(roots) == 1 else [f"{len(roots)} root spans"]
    for s in spans:
        pid = s.get("parentId")
        if pid and pid not in by_id:
            problems.append(f"span {s['id']} has a parent {pid} not in the trace")
        if pid in by_id and s.get("kind") == "SERVER":
            parent = by_id[pid]
            if parent.get("kind") != "CLIENT" or _svc(parent) == _svc(s):
                problems.append(f"server span {_svc(s)} {s.get('name')} has parent "
                                f"{parent.get('kind')} in {_svc(parent)}")
    return problems


def _svc(span: dict[str, Any]) -> str:
    return str((span.get("localEndpoint") or {}).get("serviceName", ""))


def probe_wide_trace(c: httpx.Client, run: Run) -> Any:
    r = c.get("/api/v2/traces", params={"serviceName": "payment", "limit": 50,
                                         "endTs": int(time.time() * 1000), "lookback": 600_000})
    r.raise_for_status()
    seen = []
    for spans in r.json():
        services = {_svc(s) for s in spans}
        seen.append(len(services))
        if len(services) >= 4 and not _trace_problems(spans):
            return {"traceId": spans[0]["traceId"], "services": sorted(services)}
    raise AssertionError(f"no well-linked trace over 4+ services among {len(seen)} (services per trace: {seen})")


def probe_dependencies(c: httpx.Client, run: Run) -> Any:
    r = c.get("/api/v2/dependencies", params={"endTs": int(time.time() * 1000), "lookback": 600_000})
    r.raise_for_status()
    edges = {(d["parent"], d["child"]) for d in r.json()}
    assert edges >= EXPECTED_EDGES, f"missing edges {EXPECTED_EDGES - edges}; got {edges}"
    return edges


def _trace_ids_of_logs(body: dict[str, Any]) -> list[str]:
    """Trace ids of log entries, from structured metadata (either encoding) or the line itself."""
    out = []
    for stream in body["data"]["result"]:
        labels = stream.get("stream", {})
        for value in stream.get("values", []):
            meta = value[2] if len(value) > 2 and isinstance(value[2], dict) else {}
            meta = meta.get("structuredMetadata", meta)
            tid = meta.get("trace_id") or labels.get("trace_id")
            m = re.search(r"trace_id=([0-9a-f]{32})", value[1])
            tid = tid or (m.group(1) if m else None)
            if tid:
                out.append(str(tid))
    return out


def probe_log_to_trace(c: httpx.Client, run: Run) -> Any:
    now_ns = time.time_ns()
    r = c.get("/loki/api/v1/query_range", params={"query": '{service_name="payment"}', "limit": 20,
                                                   "start": now_ns - 600 * 10**9, "end": now_ns})
    r.raise_for_status()
    ids = _trace_ids_of_logs(r.json())
    assert ids, "no payment log line carries a trace id"
    for tid in ids:
        assert _TRACE_ID.match(tid), f"not a trace id: {tid!r}"
        t = c.get(f"/api/v2/trace/{tid}")
        if t.status_code == 200 and any(_svc(s) == "payment" for s in t.json()):
            return tid
    raise AssertionError(f"none of {len(ids)} trace ids from payment's logs resolves to a trace with payment")


def _alerts_seen(c: httpx.Client, run: Run) -> dict[str, Any]:
    """Where the demo alert shows as firing: Alertmanager v2, Prometheus v1, the webhook receiver."""
    seen: dict[str, Any] = {}
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
        r = c.get("/api/v2/alerts")
        hits = [a["labels"] for a in r.json() if a["labels"].get("alertname") == DEMO_ALERT]
        if hits:
            seen["alertmanager_v2"] = hits
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
        r = c.get("/api/v1/alerts")
        hits = [a["labels"] for a in r.json()["data"]["alerts"]
                if a["labels"].get("alertname") == DEMO_ALERT and a.get("state") == "firing"]
        if hits:
            seen["prometheus_v1"] = hits
    webhook = next((ln.split()[-1] for ln in run.lines if ln.strip().startswith("alert webhook")), None)
    if webhook:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
            notes = httpx.get(webhook, timeout=5).json()["notifications"]
            hits = [a["labels"] for n in notes for a in n["alerts"]
                    if a["labels"].get("alertname") == DEMO_ALERT and a.get("status") == "firing"]
            if hits:
                seen["webhook"] = hits
    return seen


def probe_alert(c: httpx.Client, run: Run) -> Any:
    seen = _alerts_seen(c, run)
    assert seen, f"{DEMO_ALERT} not firing in /api/v2/alerts, /api/v1/alerts or the webhook receiver"
    services = {lbl.get("service_name") for hits in seen.values() for lbl in hits}
    assert "payment" in services, f"{DEMO_ALERT} fired, but not for payment: {seen}"
    return seen


def probe_shop_pods(c: httpx.Client, run: Run) -> Any:
    """The shop runs as pods of namespace shop on pitwall's node, each Deployment rolled out."""
    pods = c.get("/api/v1/namespaces/shop/pods").json()["items"]
    running = {p["metadata"]["labels"]["app"] for p in pods if p["status"].get("phase") == "Running"}
    assert running == {*SERVICES, "loadgen"}, f"running pods of shop: {running}"
    deps = c.get("/apis/apps/v1/namespaces/shop/deployments").json()["items"]
    available = {d["metadata"]["name"] for d in deps if d["status"].get("availableReplicas") == 1}
    assert available == running, f"available deployments: {available}"
    return running


PROBES: dict[str, Callable[[httpx.Client, Run], Any]] = {
    "shop_pods": probe_shop_pods,
    "up": probe_up,
    "service_metrics": probe_service_metrics,
    "load_curve": probe_load_curve,
    "span_metrics": probe_span_metrics,
    "payment_errors": probe_payment_errors,
    "loki_services": probe_loki_services,
    "zipkin_services": probe_zipkin_services,
    "dashboards": probe_dashboards,
    "wide_trace": probe_wide_trace,
    "dependencies": probe_dependencies,
    "log_to_trace": probe_log_to_trace,
    "alert": probe_alert,
}


# -- the run ----------------------------------------------------------------------------------------


def _read_lines(proc: subprocess.Popen[str], run: Run) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        run.lines.append(line.rstrip("\n"))


def _record_firing(c: httpx.Client, run: Run) -> None:
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
        for a in c.get("/api/v1/alerts").json()["data"]["alerts"]:
            if a.get("state") == "firing":
                run.firing.add((a["labels"].get("alertname", ""), a["labels"].get("service_name", "")))


def _poll(run: Run, proc: subprocess.Popen[str]) -> None:
    """Probe until every criterion holds, and note every alert that fires, until the demo stops."""
    with httpx.Client(base_url=run.url, timeout=10) as c:
        while proc.poll() is None:
            if not any("pitwall demo: running" in ln for ln in run.lines):
                time.sleep(0.5)
                continue
            _record_firing(c, run)
            for name, probe in PROBES.items():
                if name in run.found:
                    continue
                try:
                    run.found[name] = probe(c, run)
                except (AssertionError, httpx.HTTPError, ValueError, KeyError, TypeError) as e:
                    run.errors[name] = f"{type(e).__name__}: {e}"[:1500]
            time.sleep(2)


def _own_processes(marker: str) -> list[str]:
    """Processes (other than this one) whose command line mentions ``marker``."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if marker in cmd and not gone(int(pid), within_s=0):
                out.append(f"{pid}: {cmd}")
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    port = free_port()
    work = tmp_path_factory.mktemp("demo")
    r = Run(url=f"http://127.0.0.1:{port}", work_dir=work)
    cmd = [sys.executable, "-m", "pitwall.cli.main", "demo", "--duration", str(DURATION_S), "--seed", "1",
           "--listen", f"127.0.0.1:{port}", "--work-dir", str(work)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    reader = threading.Thread(target=_read_lines, args=(proc, r), daemon=True)
    reader.start()
    try:
        _poll(r, proc)
        r.returncode = proc.wait(timeout=DURATION_S + 90)
    finally:
        if proc.poll() is None:
            stop_pitwall_process(proc)
        reader.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    for line in r.lines:
        m = _PID_LINE.match(line)
        if m:
            r.child_pids[m.group(1)] = int(m.group(2))
    r.leftovers = [f"{n} (pid {p})" for n, p in r.child_pids.items() if not gone(p, within_s=5)]
    r.leftovers += _own_processes(str(work))
    yield r


# -- the criteria -----------------------------------------------------------------------------------


def test_the_shop_runs_as_pods_and_the_summary_says_how_to_see_them(run: Run) -> None:
    assert run.evidence("shop_pods") == {*SERVICES, "loadgen"}
    hint = next((ln for ln in run.lines if ln.strip().startswith("pods ")), "")
    assert re.search(r"kubectl --kubeconfig \S+/kubeconfig get pods -n shop$", hint), run.lines
    assert any("pitwall kubeconfig --server " in ln for ln in run.lines)


def test_every_service_is_scraped_and_up(run: Run) -> None:
    up = run.evidence("up")
    assert all(up[s] == "1" for s in SERVICES)
    assert set(SERVICES) <= run.evidence("service_metrics")


def test_the_load_follows_a_curve(run: Run) -> None:
    values = run.evidence("load_curve")
    assert max(values) > min(values)


def test_every_service_has_span_metrics(run: Run) -> None:
    assert set(SERVICES) <= run.evidence("span_metrics")


def test_span_metrics_show_payment_errors(run: Run) -> None:
    assert run.evidence("payment_errors") > 0


def test_every_service_has_logs(run: Run) -> None:
    assert set(SERVICES) <= run.evidence("loki_services")


def test_the_shipped_dashboards_are_listed(run: Run) -> None:
    assert {"service-overview", "business-kpis"} <= run.evidence("dashboards")


def test_every_service_has_traces(run: Run) -> None:
    assert set(SERVICES) <= run.evidence("zipkin_services")


def test_a_trace_spans_four_services_with_correct_parents(run: Run) -> None:
    assert len(run.evidence("wide_trace")["services"]) >= 4


def test_the_dependency_graph_has_the_shop_edges(run: Run) -> None:
    assert run.evidence("dependencies") >= EXPECTED_EDGES


def test_a_log_lines_trace_id_resolves_to_a_trace(run: Run) -> None:
    assert _TRACE_ID.match(run.evidence("log_to_trace"))


def test_the_demo_alert_fires(run: Run) -> None:
    assert run.evidence("alert")


def test_only_the_alerts_the_quickstart_names_fire(run: Run) -> None:
    """docs/quickstart.md: one alert per outage, HighErrorRate (payment; checkout's and frontend's inhibited)."""
    assert ("HighErrorRate", "payment") in run.firing
    assert {name for name, _ in run.firing} == {DEMO_ALERT}, run.firing
    assert {svc for _, svc in run.firing} <= {"payment", "checkout", "frontend"}, run.firing


def test_the_run_ends_cleanly_without_orphans(run: Run) -> None:
    assert run.returncode == 0, "\n".join(run.lines[-30:])
    assert set(run.child_pids) == {*SERVICES, "pitwall", "loadgen", "webhook"}, run.child_pids
    assert all(run.child_pids.values()), run.child_pids  # every pod's process was found
    assert run.leftovers == []
    assert run.lines[-1] == "pitwall demo: stopped"


def _start_demo(port: int, work: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "pitwall.cli.main", "demo", "--listen", f"127.0.0.1:{port}",
           "--work-dir", str(work), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _finish(proc: subprocess.Popen[str], timeout_s: float = 90) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_everything(tmp_path: Path, sig: signal.Signals) -> None:
    proc = _start_demo(free_port(), tmp_path)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # until every child is up (bounded by the runner's own start timeouts)
        lines.append(line)
        if "child logs" in line:
            break
    proc.send_signal(sig)
    out = "".join(lines) + _finish(proc, timeout_s=180)
    assert proc.returncode == 0, out
    pids = [int(m.group(2)) for m in map(_PID_LINE.match, out.splitlines()) if m]
    assert len(pids) == len(SERVICES) + 3 and all(pids), out
    assert [p for p in pids if not gone(p, within_s=5)] == []
    assert _own_processes(str(tmp_path)) == []
    assert out.rstrip().endswith("pitwall demo: stopped")


def test_a_taken_port_fails_the_run_before_anything_starts(tmp_path: Path) -> None:
    # Issue 22: a second demo on a taken port used to pass its readiness check against the other server.
    with socket_in_use() as port:
        proc = _start_demo(port, tmp_path, "--duration", "30")
        out = _finish(proc)
    assert proc.returncode == 1, out
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in out, out
    assert "starting pitwall" not in out
    assert _own_processes(str(tmp_path)) == []


@contextlib.contextmanager
def socket_in_use() -> Iterator[int]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])
