"""ITSM sync: how soon tickets follow incidents, on a real `pitwall server` and a local Jira/ServiceNow stand-in.

    PYTHONPATH=src .venv/bin/python bench/itsm_sync.py [--n 200] [--poll 1s]

Starts a minimal answering stand-in for Jira's REST API v2 and ServiceNow's
Table API (uvicorn in this process, no delays) and `pitwall server` (SQLite
state store, fsync on) with `incidents.itsm` pointed at it, triggers ``--n``
incidents through the Events API, and reports per incident the time from
the trigger's 202 to each system's create arriving at the stand-in (p50,
p95, max), then resolves them all and reports how long until every ticket
was resolved. Jira and ServiceNow are hosted services, so the figures say
what pitwall adds, not what a real instance answers in. Not part of the
tests; figures in docs/status.md (ITSM).
"""

from __future__ import annotations

import argparse
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

KEY = "BENCHKEY000000000000000000000001"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StandIn:
    """Creates and resolves tickets, noting when each incident's create and resolve arrived."""

    def __init__(self) -> None:
        self.created: dict[tuple[str, str], float] = {}  # (system, incident id) -> arrival
        self.resolved: dict[tuple[str, str], float] = {}
        self.jira_keys: dict[str, str] = {}  # issue key -> incident id
        self.snow: dict[str, str] = {}  # sys_id -> incident id

    def app(self) -> Starlette:
        async def jira_create(request: Request) -> Response:
            labels = (await request.json())["fields"]["labels"]
            inc = next(lab.removeprefix("pitwall-") for lab in labels if lab.startswith("pitwall-"))
            key = f"OPS-{len(self.jira_keys) + 1}"
            self.jira_keys[key] = inc
            self.created[("jira", inc)] = time.monotonic()
            return JSONResponse({"id": str(10_000 + len(self.jira_keys)), "key": key}, 201)

        async def jira_transitions(request: Request) -> Response:
            if request.method == "GET":
                return JSONResponse({"transitions": [{"id": "31", "name": "Resolve"}]})
            self.resolved[("jira", self.jira_keys[request.path_params["key"]])] = time.monotonic()
            return Response(status_code=204)

        async def jira_comment(request: Request) -> Response:
            return JSONResponse({"id": "1"}, 201)

        async def snow_create(request: Request) -> Response:
            inc = (await request.json())["correlation_id"]
            sys_id = secrets.token_hex(16)
            self.snow[sys_id] = inc
            self.created[("servicenow", inc)] = time.monotonic()
            return JSONResponse({"result": {"sys_id": sys_id, "number": f"INC{len(self.snow):07d}"}}, 201)

        async def snow_patch(request: Request) -> Response:
            if (await request.json()).get("state") == "6":
                self.resolved[("servicenow", self.snow[request.path_params["sys_id"]])] = time.monotonic()
            return JSONResponse({"result": {"sys_id": request.path_params["sys_id"]}})

        return Starlette(routes=[
            Route("/rest/api/2/issue", jira_create, methods=["POST"]),
            Route("/rest/api/2/issue/{key}/transitions", jira_transitions, methods=["GET", "POST"]),
            Route("/rest/api/2/issue/{key}/comment", jira_comment, methods=["POST"]),
            Route("/api/now/table/incident", snow_create, methods=["POST"]),
            Route("/api/now/table/incident/{sys_id}", snow_patch, methods=["PATCH"]),
        ])


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--poll", default="1s")
    args = ap.parse_args()
    stand_in = StandIn()
    sport = _free_port()
    server = uvicorn.Server(uvicorn.Config(stand_in.app(), host="127.0.0.1", port=sport, log_config=None,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    stub = f"http://127.0.0.1:{sport}"
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "pitwall.yaml"
        cfg.write_text(yaml.safe_dump({"kube": {"enabled": False}, "incidents": {
            "events_per_minute": 10_000_000, "services": [{"name": "web", "integration_keys": [KEY]}],
            "itsm": {"poll_interval": args.poll,
                     "jira": {"url": stub, "project_key": "OPS", "user": "bot", "token": "t"},
                     "servicenow": {"url": stub, "user": "bot", "password": "p"}}}}))
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([sys.executable, "-m", "pitwall.cli.main", "server", "--data-dir", f"{tmp}/data",
                                 "--listen", f"127.0.0.1:{port}", "--config", str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            _measure(url, stand_in, args.n)
        finally:
            proc.terminate()
            proc.wait(30)
            server.should_exit = True


def _wait(done: dict[tuple[str, str], float], want: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while len(done) < want and time.monotonic() < deadline:
        time.sleep(0.05)


def _measure(url: str, stand_in: StandIn, n: int) -> None:
    sent: dict[str, float] = {}
    with httpx.Client(base_url=url, timeout=30) as c:
        t0 = time.monotonic()
        for i in range(n):
            r = c.post("/v2/enqueue", json={"routing_key": KEY, "event_action": "trigger", "dedup_key": f"k{i}",
                                            "payload": {"summary": f"bench {i}", "source": "b", "severity": "error"}})
            r.raise_for_status()
            sent[f"Q{i + 1:07d}"] = time.monotonic()
        _wait(stand_in.created, 2 * n)
        for system in ("jira", "servicenow"):
            lat = [stand_in.created[(system, inc)] - at for inc, at in sent.items() if (system, inc) in stand_in.created]
            print(f"{system}: {len(lat)}/{n} tickets; trigger -> create p50 {statistics.median(lat) * 1000:.0f} ms, "
                  f"p95 {_pct(lat, 0.95) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms")
        print(f"all {2 * n} tickets {max(stand_in.created.values()) - t0:.1f} s after the first trigger")
        t1 = time.monotonic()
        for i in range(n):
            c.post("/v2/enqueue", json={"routing_key": KEY, "event_action": "resolve",
                                        "dedup_key": f"k{i}"}).raise_for_status()
        _wait(stand_in.resolved, 2 * n)
        print(f"{len(stand_in.resolved)}/{2 * n} tickets resolved "
              f"{max(stand_in.resolved.values()) - t1:.1f} s after the first resolve event")


if __name__ == "__main__":
    main()
