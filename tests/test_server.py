"""The server as scripts and operators use it: CLI flags, auth, TLS, signals."""

from __future__ import annotations

import asyncio
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import cramjam
import httpx
import pytest
import websockets
import yaml
from websockets.sync.client import connect as ws_connect

from pitwall.config import Settings, load_settings
from pitwall.metrics.ingest import prompb
from tests.conftest import LiveServer, free_port, start_pitwall_process, wait_ready

READ = "r" * 20
WRITE = "w" * 20
ADMIN = "a" * 20


def _body(name: str, t: int) -> bytes:
    w = prompb.WriteRequest()
    ts = w.timeseries.add()
    lb = ts.labels.add()
    lb.name, lb.value = "__name__", name
    s = ts.samples.add()
    s.timestamp, s.value = t, 1.0
    return bytes(cramjam.snappy.compress_raw(w.SerializeToString()))


def test_non_loopback_listen_refused_without_auth(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pitwall.cli.main", "server", "--data-dir", str(tmp_path), "--listen", "0.0.0.0:0"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2
    assert "refusing to listen on non-loopback address" in out.stderr


def test_bearer_tokens_and_scopes(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path / "d", listen="127.0.0.1:0", storage={"fsync": False},
        auth_tokens=[{"token": READ, "scopes": ["read"]}, {"token": WRITE, "scopes": ["write"]},
                     {"token": ADMIN, "scopes": ["admin"]}],
    )
    srv = LiveServer(settings)
    srv.start()
    try:
        def h(tok: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {tok}"}

        q = srv.url + "/api/v1/query?query=1"
        assert httpx.get(srv.url + "/-/healthy").status_code == 200
        r = httpx.get(q)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert httpx.get(q, headers=h("x" * 20)).status_code == 401
        assert httpx.get(q, headers=h(READ)).status_code == 200
        body = _body("up", int(time.time() * 1000))
        assert httpx.post(srv.url + "/api/v1/write", content=body, headers=h(READ)).status_code == 403
        assert httpx.post(srv.url + "/api/v1/write", content=body, headers=h(WRITE)).status_code == 204
        assert httpx.post(srv.url + "/-/reload", headers=h(WRITE)).status_code == 403
        assert httpx.post(srv.url + "/-/reload", headers=h(ADMIN)).status_code == 200
        # Websocket handshakes (Loki's tail) go through the same check: refused with 403.
        tail = srv.url.replace("http", "ws") + "/loki/api/v1/tail?query=%7Bapp%3D%22x%22%7D"
        for headers in ({}, h("x" * 20)):
            with pytest.raises(websockets.InvalidStatus) as refused:
                ws_connect(tail, additional_headers=headers, open_timeout=10).close()
            assert refused.value.response.status_code == 403
        for tok in (READ, WRITE, ADMIN):  # write is the editor role, which reads too
            with ws_connect(tail, additional_headers=h(tok), open_timeout=10) as ws:
                assert ws.ping().wait(10)  # accepted and being served
    finally:
        srv.stop()


def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text(yaml.safe_dump({"tls_cert_file": str(cert), "tls_key_file": str(key)}))
    port = free_port()
    proc = start_pitwall_process(tmp_path / "d", port, config=cfg)
    ctx = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/-/ready", verify=ctx, timeout=1)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_sighup_reloads_and_sigterm_drains(tmp_path: Path) -> None:
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text(yaml.safe_dump({"scrape_configs": []}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "d"
    proc = start_pitwall_process(data, port, config=cfg)
    try:
        wait_ready(url, proc=proc)
        assert httpx.get(url + "/api/v1/targets").json()["data"]["activeTargets"] == []
        cfg.write_text(yaml.safe_dump({"scrape_configs": [
            {"job_name": "self", "scrape_interval": "1s", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]}))
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while not httpx.get(url + "/api/v1/targets").json()["data"]["activeTargets"]:
            assert time.monotonic() < deadline, "SIGHUP did not reload the scrape config"
            time.sleep(0.2)
        # A bad config is refused by /-/reload and the old one stays.
        cfg.write_text("storage: {retention: nonsense}\n")
        r = httpx.post(url + "/-/reload")
        assert r.status_code == 500 and "storage.retention" in r.text
        t = int(time.time() * 1000)
        assert httpx.post(url + "/api/v1/write", content=_body("drained", t)).status_code == 204
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # A clean stop flushed the head: the WAL is empty and the sample is in DuckDB.
    proc = start_pitwall_process(data, port)
    try:
        wait_ready(url, proc=proc)
        r = httpx.get(url + "/api/v1/query", params={"query": "drained", "time": t / 1000}).json()
        assert r["data"]["result"][0]["value"][1] == "1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def test_ready_turns_false_when_a_supervised_loop_dies(client: httpx.AsyncClient) -> None:
    """Every long-lived loop runs under a supervisor; one dying makes /-/ready 503 and say which."""
    assert (await client.get("/-/ready")).status_code == 200
    c = client.app.state.components  # type: ignore[attr-defined]

    async def maintenance_breaks() -> None:
        raise OSError("disk gone")

    c.metrics.store.tasks.spawn(maintenance_breaks(), name="maintenance-2")
    await asyncio.sleep(0.05)
    r = await client.get("/-/ready")
    assert r.status_code == 503
    assert "metrics-store/maintenance-2: OSError: disk gone" in r.text
    assert (await client.get("/-/healthy")).status_code == 200


def test_every_part_follows_the_wiring_contract(settings: Settings) -> None:
    """One contract for every pillar: the composition root only iterates parts."""
    from pitwall.core.lifecycle import Component
    from pitwall.server import build

    c = build(settings.model_copy(update={"kube": settings.kube.model_copy(update={"enabled": True})}))
    try:
        names = [p.name for p in c.parts]
        assert names == ["metrics", "traces", "logs", "audit", "otlp-grpc", "notifications", "rules", "kube",
                         "controllers", "kube-state-metrics", "node", "traffic", "chaos", "slo", "registry", "releases",
                         "pipelines", "backup", "incidents", "releases-abtest", "ui"]
        for part in c.parts:
            assert all(isinstance(comp, Component) for comp in part.components())
            assert isinstance(part.mounts(lambda: True), list)
    finally:
        c.state.close()
        c.db.close()


async def test_telemetry_only_without_the_control_plane(client: httpx.AsyncClient) -> None:
    """kube.enabled false: no Kubernetes API, node or controllers; the telemetry APIs as before."""
    c = client.app.state.components  # type: ignore[attr-defined]
    assert c.control_plane is None
    assert [p.name for p in c.parts] == ["metrics", "traces", "logs", "audit", "otlp-grpc", "notifications", "rules",
                                         "backup", "incidents", "releases-abtest", "ui"]
    assert (await client.get("/api/v1/namespaces")).status_code == 404
    assert (await client.get("/api/v1/query", params={"query": "1"})).status_code == 200


async def test_the_server_freezes_what_its_startup_left_alive() -> None:
    """``pitwall server`` takes the objects alive after start-up out of the collector's generations: a full
    collection then walks only what came later (it walked the whole heap: 130-160 ms with the loop stopped)."""
    import gc
    import socket

    import uvicorn

    from pitwall.cli.serve import _Server

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        return None

    config = uvicorn.Config(app, lifespan="off", log_config=None)
    config.load()
    before = gc.get_threshold()
    server = _Server(config, gc_threshold=before)
    server.lifespan = config.lifespan_class(config)  # as ``Server._serve`` sets it before ``startup``
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    gc.unfreeze()
    gc.set_threshold(10_000, 1_000, 1_000_000)  # as ``pitwall server`` starts
    try:
        await server.startup(sockets=[sock])
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == before  # collecting as usual once started
        await server.shutdown(sockets=[sock])
    finally:
        gc.unfreeze()  # the rest of this test process collects as before
        gc.set_threshold(*before)
        sock.close()


def test_the_server_command_starts_with_fewer_collections(monkeypatch: pytest.MonkeyPatch) -> None:
    """``pitwall server`` raises the collector's thresholds before importing the server (most of start-up)
    and hands the usual ones to ``run``, which puts them back once started."""
    import gc

    from pitwall.cli import serve
    from pitwall.cli.server import STARTUP_GC_THRESHOLD, server

    seen: dict[str, object] = {}

    def run(settings: object, gc_threshold: tuple[int, int, int] | None = None) -> None:
        seen["during"], seen["after"] = gc.get_threshold(), gc_threshold
    before = gc.get_threshold()
    monkeypatch.setattr(serve, "run", run)
    monkeypatch.setattr(serve, "settings_from", lambda *a: None)
    try:
        server()
    finally:
        gc.set_threshold(*before)
    assert seen == {"during": STARTUP_GC_THRESHOLD, "after": before}
