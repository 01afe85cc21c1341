"""Shared fixtures: settings with small limits, an in-process client, a live server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from pitwall.config import Settings, load_settings

# Tests never take the well-known OTLP/gRPC port: every server they start (in process or as a
# subprocess, which inherits the environment) binds a free one unless a test names its own.
os.environ.setdefault("PITWALL_OTLP_GRPC__LISTEN", "127.0.0.1:0")

# pytest-xdist runs test files in several worker processes at once. Pods bind their addresses and the
# service proxy binds ClusterIPs, so each worker's servers take disjoint ranges: worker N owns
# 127.42.(64N..64N+63).x for pods (the first 32 /24s by default, the rest for pod_subnet()) and
# 127.96.(64N).0/18 for Services.
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % 4
if "PYTEST_XDIST_WORKER" in os.environ:
    import ipaddress

    import pitwall.kube.strategy
    import pitwall.node.kubelet

    os.environ["PITWALL_KUBE__POD_CIDR"] = f"127.42.{64 * WORKER}.0/19"
    os.environ["PITWALL_KUBE__SERVICE_CIDR"] = f"127.96.{64 * WORKER}.0/18"
    pitwall.node.kubelet.DEFAULT_POD_NETWORK = ipaddress.ip_network(os.environ["PITWALL_KUBE__POD_CIDR"])
    pitwall.kube.strategy.DEFAULT_SERVICE_CIDR = os.environ["PITWALL_KUBE__SERVICE_CIDR"]


def pod_subnets(n: int = 1) -> list[str]:
    """``n`` distinct random /24s of pod addresses for servers of a test's own, apart from this worker's others."""
    import random

    return [f"127.42.{64 * WORKER + i}.0/24" for i in random.sample(range(32, 64), n)]


def pod_subnet_pair() -> tuple[str, str]:
    """Two distinct /24s (as ``pod_subnets``) for a pair of servers on one etcd."""
    a, b = pod_subnets(2)
    return a, b

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def _bound(port: int = 0) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a restart reuses the port
    s.bind(("127.0.0.1", port))
    return s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Telemetry only: these tests compare exact answers (every series, every target), and the
    control plane (kube-state-metrics, the default pod scrape job) has tests of its own."""
    return load_settings(
        data_dir=tmp_path / "data",
        listen="127.0.0.1:0",
        limits={"max_series_per_request": 1000, "max_request_bytes": 1 << 20},
        storage={"fsync": False},
        kube={"enabled": False},
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client over the ASGI app, with its lifespan entered."""
    from pitwall.server import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            c.app = app  # type: ignore[attr-defined]
            yield c


class LiveServer:
    """uvicorn in a thread on a free port."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The listening socket is bound here and handed to uvicorn: a port only looked up as free could be
        # taken by another test's server before uvicorn bound it (seen in CI as "address already in use").
        self._sock: socket.socket | None = _bound()
        self.port = int(self._sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self.app: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from pitwall.server import create_app

        app = self.app = create_app(self.settings)
        from pitwall.core.httpproto import http_protocol

        # served as ``pitwall server`` serves it: its edge layer, on its HTTP protocol
        config = uvicorn.Config(app.edge or app, host="127.0.0.1", port=self.port, log_config=None,
                                lifespan="on", http=http_protocol())
        self._server = uvicorn.Server(config)
        sock, self._sock = self._sock, None  # uvicorn closes it when it stops
        if sock is None or sock.getsockname()[1] != self.port:  # restarted, or a test chose its own port
            if sock is not None:
                sock.close()
            sock = _bound(self.port)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        wait_ready(self.url)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._sock is not None:  # never started
            self._sock.close()
            self._sock = None

    def restart(self) -> None:
        self.stop()
        self.start()


def wait_ready(url: str, timeout: float = 60.0, proc: subprocess.Popen[Any] | None = None,
               verify: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            log = getattr(proc, "log_path", None)  # start_pitwall_process's: why it exited, in the failure
            tail = Path(log).read_text(errors="replace")[-2000:] if log and Path(log).exists() else ""
            raise RuntimeError(f"process exited with {proc.returncode}" + (f"; its log ends:\n{tail}" if tail else ""))
        try:
            if httpx.get(url + "/-/ready", timeout=1, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout}s")


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    s = load_settings(data_dir=tmp_path / "live", listen="127.0.0.1:0", storage={"fsync": False},
                      kube={"enabled": False})  # differential tests compare every series with Prometheus
    srv = LiveServer(s)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def rules_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A live server with one always-firing alert, one recording rule and a scrape target that is down."""
    rules = tmp_path / "r.yaml"
    rules.write_text("groups: [{name: g, rules: [{alert: Always, expr: vector(1)}, {record: r, expr: vector(2)}]}]\n")
    s = load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                      rule_files=[str(rules)], **{"global": {"evaluation_interval": "100ms"}},
                      scrape_configs=[{"job_name": "dead", "scrape_interval": "100ms",
                                       "static_configs": [{"targets": ["127.0.0.1:1"]}]}])
    srv = LiveServer(s)
    srv.start()
    yield srv
    srv.stop()


def start_pitwall_process(data_dir: Path, port: int, *extra: str, config: Path | None = None) -> subprocess.Popen[bytes]:
    """The real CLI in a subprocess (for kill -9 crash tests)."""
    cmd = [sys.executable, "-m", "pitwall.cli.main", "server", "--data-dir", str(data_dir),
           "--listen", f"127.0.0.1:{port}", *extra]
    if config is not None:
        cmd += ["--config", str(config)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if config is not None:  # the environment outranks the file: a range the test's file names wins here
        import yaml

        kube = (yaml.safe_load(config.read_text()) or {}).get("kube") or {}
        for key in ("pod_cidr", "service_cidr"):
            if key in kube:
                env.pop(f"PITWALL_KUBE__{key.upper()}", None)
    path = data_dir.parent / f"pitwall-{port}.log"
    with open(path, "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    proc.log_path = path  # type: ignore[attr-defined]  # for wait_ready's message
    return proc


def stop_pitwall_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a graceful drain), then SIGKILL after a minute."""
    import signal

    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _skip_without_shared(exc: BaseException) -> None:
    """On a bare clone (no ../shared beside the repo) a test reading shared conformance data skips."""
    if isinstance(exc, FileNotFoundError) and not SHARED.exists() and str(SHARED) in str(exc.filename):
        pytest.skip(f"../shared is not beside the repo ({exc.filename})")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Any:
    try:
        return (yield)
    except FileNotFoundError as e:
        _skip_without_shared(e)
        raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    try:
        return (yield)
    except FileNotFoundError as e:
        _skip_without_shared(e)
        raise


@pytest.fixture
def receiver() -> Iterator[Any]:
    """A webhook/Slack sink (``tests.alerting.notify.helpers.Receiver``) collecting what is posted to it."""
    from tests.alerting.notify.helpers import Receiver  # it imports this module: not at the top

    r = Receiver().start()
    yield r
    r.stop()
