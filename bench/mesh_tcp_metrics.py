"""The TCP relay with Istio's TCP metrics on: requests/s and p99 through a TCP Service port.

    .venv/bin/python bench/mesh_tcp_metrics.py [--duration 10] [--connections 50] [--close] [--rounds 1]

The same backend as ``bench/service_proxy.py`` (uvloop, fixed 200 answer) on a pod address, a Service
whose port is named ``tcp`` (so every connection goes through the byte relay, not the HTTP mesh), and a
``MeshTelemetry`` flushing into a real ``MetricStore`` every 5 s as the server runs it. ``wrk`` drives
``clusterIP:port`` (``--close``: one connection per request, so each pays the open/close accounting;
else keep-alive, so the per-chunk path dominates). To compare a change, run it alternately with
``PYTHONPATH`` pointing at each version's ``src``; this process's CPU time per request is the steadier
figure on a shared machine. Prints the counters the telemetry wrote. Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop
from service_proxy import BACKEND_IP, BACKEND_PORT, run_wrk

from pitwall.kube.wiring import build_kube
from pitwall.metrics import Engine
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.metrics import MetricStore
from pitwall.storage.revstore.sqlite import SqliteRevStore
from pitwall.traffic import ServiceProxy
from pitwall.traffic.telemetry import MeshTelemetry

PORT = 5432


async def main(duration: int, connections: int, close: bool, rounds: int) -> None:
    if not shutil.which("wrk"):
        sys.exit("wrk is needed (apt-get install wrk)")
    backend = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).with_name("service_proxy.py")), "--backend", stdout=subprocess.PIPE)
    assert backend.stdout is not None
    await asyncio.wait_for(backend.stdout.readline(), 10)
    data = Path(tempfile.mkdtemp())
    store = SqliteRevStore(data / "state.db", compact_interval_s=None)
    await store.start()
    kube = build_kube(store)
    await kube.start()
    tdb = TelemetryDB(data / "m.duckdb")
    metrics = MetricStore(tdb, data / "mwal", fsync=False)
    await metrics.start()
    tel = MeshTelemetry(metrics)
    await tel.start()
    proxy = ServiceProxy(kube.client, telemetry=tel)
    await proxy.start()
    try:
        c = kube.client
        pod = await c.create({"apiVersion": "v1", "kind": "Pod",
                              "metadata": {"name": "db-1", "namespace": "default", "labels": {"app": "db"}},
                              "spec": {"containers": [{"name": "c", "image": "db"}]}})
        pod["status"] = {"phase": "Running", "podIP": BACKEND_IP, "podIPs": [{"ip": BACKEND_IP}]}
        await c.update_status(pod)
        svc = await c.create({"apiVersion": "v1", "kind": "Service",
                              "metadata": {"name": "db", "namespace": "default"},
                              "spec": {"ports": [{"name": "tcp", "port": PORT, "targetPort": BACKEND_PORT}]}})
        await c.create({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "db-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4", "ports": [{"name": "tcp", "port": BACKEND_PORT}],
            "endpoints": [{"addresses": [BACKEND_IP], "conditions": {"ready": True}}]})
        cip = svc["spec"]["clusterIP"]
        for _ in range(500):
            if proxy.endpoints(cip, PORT) and BACKEND_IP in proxy.pods:
                break
            await asyncio.sleep(0.01)
        mode = "new connection per request" if close else "keep-alive"
        print(f"TCP relay with Istio TCP metrics, wrk, {connections} connections, {duration}s, {mode}")
        for i in range(rounds):
            cpu0 = time.process_time()
            rps, p99, errs = await run_wrk(f"http://{cip}:{PORT}/", duration, connections, close)
            # this process's CPU per request (proxy, telemetry, API): steadier than req/s on a loaded machine
            cpu_us = (time.process_time() - cpu0) / max(rps * duration, 1) * 1e6
            print(f"  round {i + 1}: {rps:10.0f} req/s   p99 {p99:7.2f} ms   {cpu_us:6.1f} us CPU/req   errors {errs}")
        for _ in range(200):  # wrk has gone: let the proxy see the last connections close
            if proxy.open_connections() == 0:
                break
            await asyncio.sleep(0.01)
        await tel.flush()
        res = Engine().instant(metrics.querier("default"), 'sum by (__name__) ({__name__=~"istio_tcp_.*",'
                               'reporter="destination"})', int(time.time() * 1000))
        written = {dict(lb)["__name__"]: float(v[-1]) for lb, v in zip(res.series, res.values, strict=True)}
        stats = proxy.stats[("default", "db")]
        print(f"  proxy counted  {stats.connections_total} connections, {stats.bytes_sent} B up, "
              f"{stats.bytes_received} B down")
        print(f"  metric store   {written or 'no istio_tcp_* series (this version writes none)'}")
    finally:
        await proxy.stop()
        await tel.stop()
        await metrics.stop()
        tdb.close()
        await kube.stop()
        await store.stop()
        backend.terminate()
        await backend.wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--close", action="store_true", help="one connection per request")
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    uvloop.run(main(a.duration, a.connections, a.close, a.rounds))
