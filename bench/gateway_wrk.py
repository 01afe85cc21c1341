"""API gateway throughput: wrk through pitwall's gateway vs through Debian's nginx, same upstream, same run.

    .venv/bin/python bench/gateway_wrk.py [--duration 10] [--connections 50] [--kube]

The upstream is nginx serving a fixed 200 on its own port (one worker).
The reference is a second nginx (one worker, non-daemon, temp config)
proxying to it with upstream keep-alive. pitwall runs as ``pitwall server``
(telemetry only, or with ``--kube`` the Kubernetes API on as by default, so
its empty Ingress/HTTPRoute set is in force; the gateway on its own
listener) with a declarative file
of two routes to that upstream: ``/auth`` with key-auth and rate-limiting
(a limit never reached) on, ``/bare`` with no plugins. wrk (Debian's, one
thread) drives each target for ``--duration`` seconds, ``--rounds`` times
interleaved; the script prints the median requests/s, p50/p99 and the
ratio and added p99 against nginx, and the proxy's own CPU time per request
(user + system seconds of the proxy process from ``/proc/<pid>/stat`` over
the run, divided by wrk's request count): on a shared, loaded machine that
figure moves far less than requests/s does. Needs the Debian packages
``nginx`` and ``wrk``. Not part of the tests.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent

NGINX_CONF = """
worker_processes 1;
daemon off;
master_process off;
error_log {dir}/error-{name}.log warn;
pid {dir}/nginx-{name}.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body-{name};
    proxy_temp_path {dir}/proxy-{name};
    fastcgi_temp_path {dir}/fcgi-{name};
    uwsgi_temp_path {dir}/uwsgi-{name};
    scgi_temp_path {dir}/scgi-{name};
    keepalive_requests 1000000;
    {body}
}}
"""
UPSTREAM_BODY = """server {{ listen 127.0.0.1:{port}; location / {{ return 200 "hello from the upstream\\n"; }} }}"""
PROXY_BODY = """
    upstream up {{ server 127.0.0.1:{up}; keepalive 64; }}
    server {{ listen 127.0.0.1:{port};
        location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
"""


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_nginx(tmp: Path, name: str, body: str) -> subprocess.Popen[bytes]:
    conf = tmp / f"nginx-{name}.conf"
    conf.write_text(NGINX_CONF.format(dir=tmp, name=name, body=body))
    return subprocess.Popen(["nginx", "-c", str(conf), "-p", str(tmp)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def wait_http(url: str, headers: dict[str, str] | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, duration: int, connections: int, headers: dict[str, str], pid: int | None = None) -> dict[str, float]:
    """One wrk run; with ``pid``, also that process's CPU microseconds per request over the run."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    cpu0 = cpu_seconds(pid) if pid is not None else 0.0
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - cpu0 if pid is not None else 0.0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    lat = {m.group(1): _ms(m.group(2)) for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": lat["50"], "p99_ms": lat["99"], "non2xx": float(non2xx.group(1) if non2xx else 0),
            "cpu_us": cpu / total * 1e6 if total else 0.0}


def _ms(s: str) -> float:
    num, unit = re.match(r"([\d.]+)(\w+)", s).groups()  # type: ignore[union-attr]
    return float(num) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def kong_file(up_port: int) -> dict[str, Any]:
    """Two routes to the same upstream: ``/auth`` with key-auth + rate-limiting, ``/bare`` with none."""
    url = f"http://127.0.0.1:{up_port}"
    return {"_format_version": "3.0", "services": [
        {"name": "auth", "url": url, "routes": [{"paths": ["/auth"]}], "plugins": [
            {"name": "key-auth"},
            {"name": "rate-limiting", "config": {"hour": 1_000_000_000, "limit_by": "consumer"}}]},
        {"name": "bare", "url": url, "routes": [{"paths": ["/bare"]}]}],
        "consumers": [{"username": "bench", "keyauth_credentials": [{"key": "bench-key"}]}]}


class Pitwall:
    """``pitwall server`` (telemetry only, or with the Kubernetes API: ``kube``) with the gateway on its own port."""

    def __init__(self, tmp: Path, up_port: int, kube: bool = False) -> None:
        self.gw_port, self.api_port = free_port(), free_port()
        kong = tmp / "kong.yaml"
        kong.write_text(yaml.safe_dump(kong_file(up_port)))
        cfg = tmp / "pitwall.yaml"
        cfg.write_text(yaml.safe_dump({
            "gateway": {"listen": f"127.0.0.1:{self.gw_port}", "declarative_config": str(kong)},
            "kube": {"enabled": kube}, "storage": {"fsync": False}, "log_level": "warning"}))
        with open(tmp / "pitwall.log", "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "pitwall.cli.main", "server", "--config", str(cfg),
                                          "--data-dir", str(tmp / "data"), "--listen", f"127.0.0.1:{self.api_port}"],
                                         stdout=subprocess.DEVNULL, stderr=log, env=dict(os.environ))
        # every component started (slow on a loaded machine): nothing warming up
        wait_http(f"http://127.0.0.1:{self.api_port}/-/ready", timeout=180)
        wait_http(f"http://127.0.0.1:{self.gw_port}/auth/", {"apikey": "bench-key"})

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kube", action="store_true", help="pitwall with the Kubernetes API on (its default)")
    a = ap.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (apt-get install -y {tool})")
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as d:
        tmp = Path(d)
        up_port, px_port = free_port(), free_port()
        upstream = start_nginx(tmp, "upstream", UPSTREAM_BODY.format(port=up_port))
        proxy = start_nginx(tmp, "proxy", PROXY_BODY.format(up=up_port, port=px_port))
        pitwall: Pitwall | None = None
        try:
            wait_http(f"http://127.0.0.1:{px_port}/")
            pitwall = Pitwall(tmp, up_port, a.kube)
            gw = f"http://127.0.0.1:{pitwall.gw_port}"
            pw_pid = pitwall.proc.pid
            targets = {"nginx proxy": (f"http://127.0.0.1:{px_port}/", {}, proxy.pid),
                       "pitwall gateway, key-auth + rate-limiting": (gw + "/auth/", {"apikey": "bench-key"}, pw_pid),
                       "pitwall gateway, no plugins": (gw + "/bare/", {}, pw_pid)}
            for url, headers, _pid in targets.values():  # warm-up
                wrk(url, 2, a.connections, headers)
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
            loads: list[float] = []
            for _round in range(a.rounds):  # interleaved, so a noisy moment hits every target alike
                for name, (url, headers, pid) in targets.items():
                    runs[name].append(wrk(url, a.duration, a.connections, headers, pid))
                    loads.append(os.getloadavg()[0])
        finally:
            if pitwall is not None:
                pitwall.stop()
            for p in (proxy, upstream):
                p.terminate()
                p.wait(timeout=10)
    results = {name: sorted(rs, key=lambda r: r["rps"])[len(rs) // 2] for name, rs in runs.items()}  # median
    base = results["nginx proxy"]
    cpu = {name: sorted(r["cpu_us"] for r in rs)[len(rs) // 2] for name, rs in runs.items()}  # median
    print(f"wrk -t1 -c{a.connections} -d{a.duration}s, median of {a.rounds} interleaved rounds, "
          f"pitwall {'with' if a.kube else 'without'} the Kubernetes API, "
          f"upstream: nginx static 200 (1 worker); load average {min(loads):.1f}-{max(loads):.1f} during the runs")
    print(f"{'target':44} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs nginx':>9} {'+p99 ms':>8} {'non-2xx':>8} "
          f"{'CPU us/req':>11}")
    for name, r in results.items():
        print(f"{name:44} {r['rps']:10.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['rps'] / base['rps']:8.2f}x "
              f"{r['p99_ms'] - base['p99_ms']:8.2f} {int(r['non2xx']):8d} {cpu[name]:11.1f}")


if __name__ == "__main__":
    main()
