"""API gateway throughput: wrk through pitwall's gateway vs through Debian's nginx, same upstream, same run.

    .venv/bin/python bench/gateway_wrk.py [--duration 10] [--connections 50]

The upstream is nginx serving a fixed 200 on its own port (one worker).
The reference is a second nginx (one worker, non-daemon, temp config)
proxying to it with upstream keep-alive. pitwall runs as ``pitwall server``
(telemetry only, the gateway on its own listener) with a declarative file
whose route has key-auth and rate-limiting (a limit never reached) on, then
again with no plugins. wrk (Debian's, one thread) drives each for
``--duration`` seconds; the script prints requests/s, p50/p99 and the
ratio and added p99 against nginx. Needs the Debian packages ``nginx`` and
``wrk``. Not part of the tests.
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


def wrk(url: str, duration: int, connections: int, headers: dict[str, str]) -> dict[str, float]:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {m.group(1): _ms(m.group(2)) for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": lat["50"], "p99_ms": lat["99"], "non2xx": float(non2xx.group(1) if non2xx else 0)}


def _ms(s: str) -> float:
    num, unit = re.match(r"([\d.]+)(\w+)", s).groups()  # type: ignore[union-attr]
    return float(num) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def kong_file(up_port: int, plugins: bool) -> dict[str, Any]:
    svc: dict[str, Any] = {"name": "bench", "url": f"http://127.0.0.1:{up_port}", "routes": [{"paths": ["/"]}]}
    if plugins:
        svc["plugins"] = [{"name": "key-auth"}, {"name": "rate-limiting", "config": {"hour": 1_000_000_000,
                                                                                    "limit_by": "consumer"}}]
    return {"_format_version": "3.0", "services": [svc],
            "consumers": [{"username": "bench", "keyauth_credentials": [{"key": "bench-key"}]}]}


def run_pitwall(tmp: Path, name: str, up_port: int, plugins: bool, duration: int, connections: int
                ) -> dict[str, float]:
    gw_port, api_port = free_port(), free_port()
    kong = tmp / f"kong-{name}.yaml"
    kong.write_text(yaml.safe_dump(kong_file(up_port, plugins)))
    cfg = tmp / f"pitwall-{name}.yaml"
    cfg.write_text(yaml.safe_dump({"gateway": {"listen": f"127.0.0.1:{gw_port}", "declarative_config": str(kong)},
                                   "kube": {"enabled": False}, "storage": {"fsync": False},
                                   "log_level": "warning"}))
    data = tmp / f"data-{name}"
    with open(tmp / f"pitwall-{name}.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pitwall.cli.main", "server", "--config", str(cfg),
                                 "--data-dir", str(data), "--listen", f"127.0.0.1:{api_port}"],
                                stdout=subprocess.DEVNULL, stderr=log, env=dict(os.environ))
    headers = {"apikey": "bench-key"} if plugins else {}
    try:
        wait_http(f"http://127.0.0.1:{api_port}/-/ready")  # every component started: nothing else warming up
        wait_http(f"http://127.0.0.1:{gw_port}/", headers)
        time.sleep(2)
        wrk(f"http://127.0.0.1:{gw_port}/", 2, connections, headers)  # warm-up
        return wrk(f"http://127.0.0.1:{gw_port}/", duration, connections, headers)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    a = ap.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (apt-get install -y {tool})")
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as d:
        tmp = Path(d)
        up_port, px_port = free_port(), free_port()
        upstream = start_nginx(tmp, "upstream", UPSTREAM_BODY.format(port=up_port))
        proxy = start_nginx(tmp, "proxy", PROXY_BODY.format(up=up_port, port=px_port))
        try:
            wait_http(f"http://127.0.0.1:{px_port}/")
            wrk(f"http://127.0.0.1:{px_port}/", 2, a.connections, {})
            results = {"nginx proxy": wrk(f"http://127.0.0.1:{px_port}/", a.duration, a.connections, {})}
            results["pitwall gateway, key-auth + rate-limiting"] = run_pitwall(tmp, "plugins", up_port, True,
                                                                               a.duration, a.connections)
            results["pitwall gateway, no plugins"] = run_pitwall(tmp, "bare", up_port, False, a.duration,
                                                                 a.connections)
        finally:
            for p in (proxy, upstream):
                p.terminate()
                p.wait(timeout=10)
    base = results["nginx proxy"]
    print(f"wrk -t1 -c{a.connections} -d{a.duration}s, upstream: nginx static 200 (1 worker)")
    print(f"{'target':44} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs nginx':>9} {'+p99 ms':>8} {'non-2xx':>8}")
    for name, r in results.items():
        print(f"{name:44} {r['rps']:10.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['rps'] / base['rps']:8.2f}x "
              f"{r['p99_ms'] - base['p99_ms']:8.2f} {int(r['non2xx']):8d}")


if __name__ == "__main__":
    main()
