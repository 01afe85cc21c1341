"""Probes as the kubelet runs them: httpGet, tcpSocket, exec; thresholds and defaults from upstream.

``run_probe`` performs one check; ``Prober`` repeats it every
``periodSeconds`` after ``initialDelaySeconds`` and turns results into a
state with ``successThreshold`` / ``failureThreshold``. An httpGet succeeds
on a status from 200 to 399; its host defaults to the pod IP; a named
port is looked up in the container's ports.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["ProbeContext", "Prober", "run_probe"]

Obj = dict[str, Any]
DEFAULTS = {"initialDelaySeconds": 0, "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1,
            "failureThreshold": 3}


@dataclass
class ProbeContext:
    """What a probe needs of its container."""

    pod_ip: str
    ports: list[Obj]
    env: dict[str, str]
    cwd: Path


def _port(value: Any, ctx: ProbeContext) -> int:
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    for p in ctx.ports:
        if p.get("name") == value:
            return int(p.get("containerPort", 0))
    raise ValueError(f"port {value!r} not found")


async def _http(h: Obj, ctx: ProbeContext, timeout: float) -> tuple[bool, str]:
    scheme = str(h.get("scheme") or "HTTP").lower()
    host = str(h.get("host") or ctx.pod_ip)
    port = _port(h.get("port"), ctx)
    path = str(h.get("path") or "/")
    if not path.startswith("/"):
        path = "/" + path
    headers = {"User-Agent": "kube-probe/1.32", "Accept": "*/*"}
    for hd in h.get("httpHeaders") or []:
        headers[str(hd.get("name"))] = str(hd.get("value", ""))
    url = f"{scheme}://{host}:{port}{path}"
    try:
        async with httpx.AsyncClient(verify=False, timeout=timeout, trust_env=False) as c:
            r = await c.get(url, headers=headers)
    except httpx.TimeoutException:
        return False, f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
    except httpx.HTTPError as e:
        return False, f'Get "{url}": {e or type(e).__name__}'
    if 200 <= r.status_code < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {r.status_code}"


async def _tcp(t: Obj, ctx: ProbeContext, timeout: float) -> tuple[bool, str]:
    host = str(t.get("host") or ctx.pod_ip)
    port = _port(t.get("port"), ctx)
    try:
        _, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (TimeoutError, OSError) as e:
        return False, f"dial tcp {host}:{port}: {e or 'i/o timeout'}"
    w.close()
    with contextlib.suppress(Exception):
        await w.wait_closed()
    return True, ""


async def _exec(e: Obj, ctx: ProbeContext, timeout: float) -> tuple[bool, str]:
    cmd = [str(c) for c in e.get("command") or []]
    if not cmd:
        return False, "exec probe has no command"
    try:
        p = await asyncio.create_subprocess_exec(*cmd, env=ctx.env, cwd=str(ctx.cwd),
                                                 stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    except OSError as err:
        return False, str(err)
    try:
        out, _ = await asyncio.wait_for(p.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        await p.wait()
        return False, f"command timed out after {timeout:g}s"
    if p.returncode == 0:
        return True, ""
    text = out.decode(errors="replace").strip()[:1024]
    return False, text or f"command exited with {p.returncode}"


async def run_probe(probe: Obj, ctx: ProbeContext) -> tuple[bool, str]:
    """One check: (success, failure message)."""
    timeout = float(probe.get("timeoutSeconds") or DEFAULTS["timeoutSeconds"])
    try:
        if "httpGet" in probe:
            return await _http(probe["httpGet"] or {}, ctx, timeout)
        if "tcpSocket" in probe:
            return await _tcp(probe["tcpSocket"] or {}, ctx, timeout)
        if "exec" in probe:
            return await _exec(probe["exec"] or {}, ctx, timeout)
    except ValueError as e:
        return False, str(e)
    return False, "probe handler not supported by pitwall (httpGet, tcpSocket and exec are)"


class Prober:
    """Runs one probe of one container until cancelled; ``on_change(ok, message)`` when the state flips.

    ``state`` starts as None (unknown): the kubelet counts a container not
    ready (readiness) and not started (startup) until the first verdict.
    """

    def __init__(self, kind: str, probe: Obj, ctx: ProbeContext,
                 on_result: Callable[[str, bool | None, str], Awaitable[None]]) -> None:
        self.kind = kind  # liveness, readiness, startup
        self.probe = probe
        self.ctx = ctx
        self.on_result = on_result
        self.state: bool | None = None
        self._succ = 0
        self._fail = 0

    def _get(self, key: str) -> int:
        v = self.probe.get(key)
        return int(v) if isinstance(v, int) and v >= 0 else DEFAULTS[key]

    async def run(self) -> None:
        await asyncio.sleep(self._get("initialDelaySeconds"))
        period = max(1, self._get("periodSeconds"))
        success_thr = max(1, self._get("successThreshold"))
        failure_thr = max(1, self._get("failureThreshold"))
        while True:
            ok, msg = await run_probe(self.probe, self.ctx)
            if ok:
                self._succ += 1
                self._fail = 0
                if self._succ >= success_thr and self.state is not True:
                    self.state = True
                    await self.on_result(self.kind, True, "")
            else:
                self._fail += 1
                self._succ = 0
                await self.on_result(self.kind, None if self._fail < failure_thr else False, msg)
                if self._fail >= failure_thr:
                    self.state = False
                    self._fail = 0 if self.kind == "liveness" else self._fail
            await asyncio.sleep(period)
