"""``pitwall demo``: the server, the webhook receiver, and the shop on pitwall's Kubernetes, as one run.

Start order: the alert webhook receiver (the server's Alertmanager config
points at it), ``pitwall server`` with the rendered demo config, both
children of the :class:`~pitwall.demo.supervisor.Supervisor`; then the shop
(five services and the load generator, ``manifests/shop.yaml``) is applied
to that server's Kubernetes API and runs as pods of pitwall's node, and the
runner waits for its Deployments to roll out. A ``finally`` block stops the
children in reverse order on Ctrl-C, SIGTERM, the end of ``--duration`` or
any failure: the server's shutdown stops every pod's processes (and the
runner kills, by their pid files, any the server left), and the run's
temporary directory is removed unless the user chose one.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx
import yaml

from pitwall.cli.kubeconfig import build_kubeconfig
from pitwall.demo import config as demo_config
from pitwall.demo import shop
from pitwall.demo.supervisor import ChildFailed, Supervisor
from pitwall.node.runtime import kill_leftovers

__all__ = ["DemoOptions", "DemoRun", "free_port", "run_demo"]

SERVER_READY_TIMEOUT_S = 60.0
CHILD_READY_TIMEOUT_S = 30.0
ROLLOUT_TIMEOUT_S = 120.0  # six Python processes starting on a busy machine


@dataclass(frozen=True)
class DemoOptions:
    listen: str = "127.0.0.1:9900"
    duration_s: float = 0.0  # 0: until Ctrl-C
    seed: int = 1
    day_s: float = 300.0
    work_dir: Path | None = None  # kept after the run when given


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now on ``host``, below the kernel's ephemeral range.

    The children bind their ports a few seconds after they are chosen; ports
    the OS hands out (bind to 0) come from the ephemeral range, where any
    outgoing connection made meanwhile (the OTel exporters, the scraper) can
    take the very same port (seen here: a sandbox kernel handing out ports
    in sequence, just under the configured range). A random port well below
    that range is not taken that way.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low // 2), max(1025, low - 4096))
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a crowded range: let the OS pick after all
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


@dataclass
class DemoRun:
    """One run's addresses and files (what the summary prints)."""

    options: DemoOptions
    work_dir: Path
    ports: dict[str, int]
    supervisor: Supervisor
    pods: list[tuple[shop.PodInfo, int]] = field(default_factory=list)  # (pod, pid of its process)

    @property
    def pitwall_url(self) -> str:
        return f"http://{self.options.listen}"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def pods_dir(self) -> Path:
        return self.work_dir / "data" / "pods"  # the node's, below the server's --data-dir


def run_demo(options: DemoOptions, echo: Callable[[str], None] = print) -> int:
    """Run the demo until the duration ends or a signal arrives; 0 on a clean run."""
    problem = _listen_problem(options.listen)
    if problem:  # before anything starts: a taken port would pass the readiness check against another server
        echo(f"pitwall demo: {problem}")
        return 1
    work_dir = options.work_dir or Path(tempfile.mkdtemp(prefix="pitwall-demo-"))
    stop = threading.Event()
    # --duration counts from the command's start, so a 60 s run ends after about 60 s.
    deadline = time.monotonic() + options.duration_s if options.duration_s else None
    run = DemoRun(options, work_dir, _ports(), Supervisor(work_dir / "logs"))
    code = 0
    # The handlers stay installed through the cleanup: a second Ctrl-C must not
    # kill the supervisor half-way and leave children behind.
    with _stop_on_signals(stop):
        try:
            _start_all(run, stop, echo)
            if not stop.is_set():
                _print_summary(run, echo)
                code = _watch(run, stop, deadline, echo)
        except (ChildFailed, shop.ApplyFailed, httpx.HTTPError) as e:
            echo(f"pitwall demo: {e}")
            code = 1
        finally:
            echo("pitwall demo: stopping ...")
            run.supervisor.stop_all()
            left = kill_leftovers(run.pods_dir)  # only if the server was killed before it stopped its pods
            if left:
                echo(f"pitwall demo: killed {left} pod process(es) the server left behind")
            if options.work_dir is None:
                shutil.rmtree(work_dir, ignore_errors=True)
            echo("pitwall demo: stopped")
    return code


def _listen_problem(listen: str) -> str:
    """Why pitwall could not listen on ``listen`` (HOST:PORT), or "" when the address is free."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            return f"cannot listen on {listen}: {why} (is another pitwall running? choose another with --listen)"
    return ""


def _ports() -> dict[str, int]:
    return {"webhook": free_port()}


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (the main loop notices) instead of raising mid-cleanup."""

    # The handler must take no lock: it runs between bytecodes of the main
    # thread, which may be inside ``stop.wait()`` holding the Event's lock, so
    # ``stop.set()`` there can deadlock. It only flips a flag; a helper thread
    # turns the flag into ``stop.set()``.
    requested: list[bool] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        requested.append(True)

    done = threading.Event()

    def relay() -> None:
        while not done.wait(0.05):
            if requested:
                stop.set()

    relay_thread = threading.Thread(target=relay, name="signal-relay", daemon=True)
    relay_thread.start()
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        done.set()
        relay_thread.join(timeout=1)


def _py(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _start_all(run: DemoRun, stop: threading.Event, echo: Callable[[str], None]) -> None:
    sup, o = run.supervisor, run.options
    webhook_url = run.url("webhook") + "/alerts"
    rendered = demo_config.render(run.work_dir / "config", o.listen, webhook_url)
    for key in rendered.skipped:
        echo(f"pitwall demo: this pitwall has no '{key}' setting yet; running without it")
    hook = sup.start("webhook", _py("pitwall.demo.webhook", "--port", str(run.ports["webhook"]),
                                     "--pitwall", run.pitwall_url), ready_url=run.url("webhook") + "/healthz")
    server = sup.start("pitwall", _py("pitwall.cli.main", "server", "--config", str(rendered.pitwall_file),
                                      "--data-dir", str(run.work_dir / "data"), "--listen", o.listen),
                       ready_url=run.pitwall_url + "/-/ready")
    echo(f"pitwall demo: starting pitwall at {run.pitwall_url} (work dir {run.work_dir})")
    sup.wait_ready(hook, CHILD_READY_TIMEOUT_S, stop.is_set)
    sup.wait_ready(server, SERVER_READY_TIMEOUT_S, stop.is_set)
    _start_shop(run, stop, echo)


def _start_shop(run: DemoRun, stop: threading.Event, echo: Callable[[str], None]) -> None:
    """Apply the shop's manifests to the server, wait for the rollout, note each pod's process."""
    o = run.options
    scenario = shop.Scenario(seed=o.seed, epoch=f"{time.time():.3f}", day_s=o.day_s, otlp_url=run.pitwall_url)
    (run.work_dir / "kubeconfig").write_text(yaml.safe_dump(build_kubeconfig(run.pitwall_url, None, namespace="shop"),
                                                            sort_keys=False))
    with httpx.Client(base_url=run.pitwall_url, timeout=shop.REQUEST_TIMEOUT_S) as client:
        applied = shop.apply(client, scenario)
        echo(f"pitwall demo: applied {len(applied)} objects of {shop.MANIFEST}; waiting for the rollout ...")
        shop.wait_available(client, shop.deployment_names(), ROLLOUT_TIMEOUT_S, stop.is_set)
        if stop.is_set():
            return
        run.pods = [(p, _pod_pid(run.pods_dir, p)) for p in shop.pods(client) if p.phase == "Running"]


def _pod_pid(pods_dir: Path, pod: shop.PodInfo) -> int:
    """The pid of the pod's (only) container process, from the node's pid file; 0 when there is none."""
    for f in sorted((pods_dir / pod.uid / "containers").glob("*.pid")):
        try:
            return int(yaml.safe_load(f.read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
            continue
    return 0


def _print_summary(run: DemoRun, echo: Callable[[str], None]) -> None:
    p = run.pitwall_url
    lines = [
        f"pitwall demo: running (seed {run.options.seed}; "
        + (f"stops after {run.options.duration_s:g}s" if run.options.duration_s else "Ctrl-C stops") + ")",
        f"  pitwall          {p}   (Grafana: Prometheus, Loki and Zipkin data sources all at this URL)",
        f"  metrics          {p}/api/v1/query?query=sum+by+(job)+(rate(http_server_requests_total[1m]))",
        f"  logs             {p}/loki/api/v1/query_range?query=%7Bservice_name%3D%22payment%22%7D",
        f"  traces           {p}/api/v2/services",
        f"  alerts           {p}/api/v2/alerts",
        f"  alert webhook    {run.url('webhook')}/notifications",
    ]
    lines += [f"  child {c.name:<10} pid {c.pid:<7} {c.ready_url or ''}" for c in run.supervisor.children]
    lines += [f"  pod {p.app:<12} pid {pid:<7} http://{p.ip}:8080   {shop.NAMESPACE}/{p.name}" for p, pid in run.pods]
    lines += [
        f"  pods             kubectl --kubeconfig {run.work_dir / 'kubeconfig'} get pods -n shop",
        f"                   (or: pitwall kubeconfig --server {p} --merge && kubectl get pods -n shop)",
        f"  pod logs         kubectl --kubeconfig {run.work_dir / 'kubeconfig'} logs -n shop deploy/payment",
        f"  child logs       {run.supervisor.log_dir}",
    ]
    for line in lines:
        echo(line)


def _watch(run: DemoRun, stop: threading.Event, deadline: float | None, echo: Callable[[str], None]) -> int:
    """Wait for the end; a child that dies on its own ends the run with code 1."""
    while not stop.wait(0.5):
        if deadline is not None and time.monotonic() >= deadline:
            return 0
        dead = run.supervisor.exited()
        if dead:
            for c in dead:
                echo(f"pitwall demo: {c.name} exited with code {c.proc.returncode}:\n{c.log_tail()}")
            return 1
    return 0
