"""Flagger's load tester (``flagger-loadtester``, ``pkg/loadtester/server.go``) served by pitwall under
``/flagger-loadtester``, so a Canary webhook written for Flagger works by changing only its ``url``.

``POST /`` with a ``CanaryWebhookPayload`` whose metadata says ``type: cmd``
queues the command and answers 202 (run once per canary and command at a
time, as Flagger's TaskRunner does); ``type: bash`` runs it and answers 200,
or 500 with the error. Commands that start with ``hey`` are run by pitwall's
own load generator (``hey``'s ``-z -q -c -n -m -H -d -t`` flags; no binary);
any other command is refused with 400 unless ``releases.loadtester.allow_shell``
is on, because Flagger's load tester runs whatever shell it is sent.

``/gate/approve`` (200), ``/gate/halt`` (403), ``/gate/check|open|close`` and
``/rollback/check|open|close`` are Flagger's manual gates; their state is kept
in the revisioned store (keys under ``GATES``) so every server of a cluster
and a restart agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import APIRouter, Request, Response

from pitwall.core import regex
from pitwall.core.errors import ConfigError
from pitwall.incidents import ChangeEvent, ChangeSink
from pitwall.releases._proc import run_process
from pitwall.releases.kubectl import KubectlRunner, kubectl_args
from pitwall.releases.settings import LoadTesterSettings
from pitwall.storage.revstore import RevStore

__all__ = ["GATES", "PREFIX", "GateStore", "HeyArgs", "HeyResult", "LoadTester", "LoadTesterSettings",
           "loadtester_router", "parse_hey", "run_hey"]

log = logging.getLogger(__name__)
PREFIX = "/flagger-loadtester"
GATES = "/pitwall/releases/loadtester/gates/"
MAX_BODY = 1 << 20  # a webhook payload
MAX_OUTPUT = 64 << 10  # a command's output kept and returned
MAX_WORKERS = 200  # hey -c
MAX_RPS = 2000.0  # -q times -c
MAX_REQUESTS = 1_000_000  # hey -n
MAX_TASKS = 32  # queued or running cmd tasks
Resolver = Callable[[str, str], Awaitable[str | None]]  # (namespace, service) -> clusterIP


# ---- hey ---------------------------------------------------------------------------------------------------

@dataclass
class HeyArgs:
    """``hey``'s flags (defaults as hey's: 200 requests by 50 workers, GET, no rate limit, 20 s timeout)."""

    url: str
    duration_s: float = 0.0
    rate: float = 0.0  # per worker
    workers: int = 50
    requests: int = 200
    method: str = "GET"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    timeout_s: float = 20.0


@dataclass
class HeyResult:
    """What one run did: answers by status, transport errors, seconds taken."""

    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + self.errors

    def summary(self) -> str:
        codes = ", ".join(f"[{k}] {v} responses" for k, v in sorted(self.statuses.items()))
        return f"{self.total} requests in {self.seconds:.2f}s; {codes or 'no responses'}; {self.errors} errors"


def _dur(text: str) -> float:
    """Go's time.ParseDuration for hey's -z (h, m, s, ms)."""
    units = (("ms", 0.001), ("h", 3600.0), ("m", 60.0), ("s", 1.0))
    total, rest = 0.0, text.strip()
    if not rest:
        raise ValueError("empty duration")
    while rest:
        num = ""
        while rest and (rest[0].isdigit() or rest[0] == "."):
            num, rest = num + rest[0], rest[1:]
        unit = next((u for u, _ in units if rest.startswith(u)), None)
        if not num or unit is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(num) * dict(units)[unit]
        rest = rest[len(unit):]
    return total


def parse_hey(cmd: str, max_duration_s: float = 3600.0) -> HeyArgs:
    """``hey [flags] URL`` as hey parses it; ValueError naming the flag when it is wrong or beyond the bounds."""
    try:
        words = shlex.split(cmd)
    except ValueError as e:
        raise ValueError(f"cannot parse command: {e}") from None
    if not words or words[0].rsplit("/", 1)[-1] != "hey":
        raise ValueError("not a hey command")
    a = HeyArgs(url="")
    rest = words[1:]
    flags = {"-z", "-q", "-c", "-n", "-m", "-H", "-d", "-t", "-T", "-A"}
    while rest:
        w = rest.pop(0)
        if w in flags:
            if not rest:
                raise ValueError(f"flag needs an argument: {w}")
            v = rest.pop(0)
            _set_flag(a, w, v)
        elif w.startswith("-"):
            raise ValueError(f"flag provided but not supported: {w}")
        elif a.url:
            raise ValueError(f"unexpected argument {w!r}")
        else:
            a.url = w
    if not a.url.startswith(("http://", "https://")):
        raise ValueError("a http(s) URL is required")
    if a.duration_s > max_duration_s:
        raise ValueError(f"-z {a.duration_s:g}s is longer than releases.loadtester.max_duration_s "
                         f"({max_duration_s:g}s)")
    if not 1 <= a.workers <= MAX_WORKERS:
        raise ValueError(f"-c must be between 1 and {MAX_WORKERS}")
    if not a.duration_s and not 1 <= a.requests <= MAX_REQUESTS:
        raise ValueError(f"-n must be between 1 and {MAX_REQUESTS}")
    if not a.duration_s and a.requests < a.workers:
        raise ValueError("-n cannot be less than -c")  # hey's own rule
    if a.rate * a.workers > MAX_RPS:
        raise ValueError(f"-q times -c must be at most {MAX_RPS:g} requests per second")
    return a


def _set_flag(a: HeyArgs, flag: str, v: str) -> None:
    try:
        if flag == "-z":
            a.duration_s = _dur(v)
        elif flag == "-q":
            a.rate = float(v)
        elif flag == "-c":
            a.workers = int(v)
        elif flag == "-n":
            a.requests = int(v)
        elif flag == "-m":
            a.method = v.upper()
        elif flag == "-H":
            name, sep, value = v.partition(":")
            if not sep or not name.strip():
                raise ValueError("want 'Name: value'")
            a.headers.append((name.strip(), value.strip()))
        elif flag == "-d":
            a.body = v.encode()[:MAX_BODY]
        elif flag == "-t":
            a.timeout_s = float(v) or 20.0
        elif flag == "-T":
            a.headers.append(("Content-Type", v))
        elif flag == "-A":
            a.headers.append(("Accept", v))
    except ValueError as e:
        raise ValueError(f"invalid value {v!r} for flag {flag}: {e}") from None
    if a.rate < 0 or a.duration_s < 0:
        raise ValueError(f"invalid value {v!r} for flag {flag}")


async def _target(url: str, resolve: Resolver | None) -> tuple[str, str]:
    """The URL to connect to and its Host header: ``svc.ns[.svc[.cluster.local]]`` is the Service's clusterIP
    (pitwall's node carries clusterIP traffic into the mesh), any other host as it is."""
    u = httpx.URL(url)
    host = u.host
    parts = host.split(".")
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return url, u.netloc.decode()
    if resolve is not None and len(parts) >= 2 and (len(parts) == 2 or parts[2:] in (["svc"], ["svc", "cluster",
                                                                                                "local"])):
        ip = await resolve(parts[1], parts[0])
        if ip:
            return str(u.copy_with(host=ip)), u.netloc.decode()
    return url, u.netloc.decode()


async def run_hey(a: HeyArgs, resolve: Resolver | None = None, client: httpx.AsyncClient | None = None) -> HeyResult:
    """Send the load hey would: ``workers`` loops, each at most ``rate`` per second, for ``duration_s`` or until
    ``requests`` are sent."""
    url, host = await _target(a.url, resolve)
    headers = {"Host": host, "User-Agent": "hey/0.0.1", **dict(a.headers)}
    out = HeyResult()
    start = time.monotonic()
    deadline = start + a.duration_s if a.duration_s else None
    left = [a.requests]
    limits = httpx.Limits(max_connections=a.workers, max_keepalive_connections=a.workers)
    own = client is None
    c = client or httpx.AsyncClient(timeout=a.timeout_s, limits=limits, trust_env=False, follow_redirects=False)

    async def worker() -> None:
        next_at = time.monotonic()  # a ticker, as hey's time.Tick: the rate holds however long answers take
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                return
            if deadline is None:
                if left[0] <= 0:
                    return
                left[0] -= 1
            try:
                r = await c.request(a.method, url, headers=headers, content=a.body or None)
                await r.aread()
                out.statuses[r.status_code] = out.statuses.get(r.status_code, 0) + 1
            except httpx.HTTPError:
                out.errors += 1
                await asyncio.sleep(0.05)  # an unreachable target must not spin
            if a.rate > 0:
                next_at = max(next_at + 1.0 / a.rate, time.monotonic() - 1.0)  # no burst after a stall
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    try:
        await asyncio.gather(*(worker() for _ in range(a.workers)))
    finally:
        if own:
            await c.aclose()
    out.seconds = time.monotonic() - start
    return out


# ---- gates -------------------------------------------------------------------------------------------------

class GateStore:
    """Flagger's GateStorage on the revisioned store: closed until opened."""

    def __init__(self, store: RevStore) -> None:
        self.store = store

    async def set(self, key: str, is_open: bool) -> None:
        await self.store.put(GATES + key, b"open" if is_open else b"closed")

    async def is_open(self, key: str) -> bool:
        kv = await self.store.get(GATES + key)
        return kv is not None and kv.value == b"open"


# ---- tasks -------------------------------------------------------------------------------------------------

class LoadTester:
    """Runs webhook commands: hey in process, shell only when allowed; cmd tasks once per canary and command."""

    def __init__(self, settings: LoadTesterSettings, gates: GateStore, resolve: Resolver | None = None,
                 changes: ChangeSink | None = None, kubectl: KubectlRunner | None = None) -> None:
        self.settings = settings
        self.gates = gates
        self.resolve = resolve
        self.changes = changes
        self.kubectl = kubectl
        self._ns: regex.Regex | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self.runs = 0
        self.last: dict[str, str] = {}  # canary -> summary of its last finished command
        self.configure(settings)

    def configure(self, settings: LoadTesterSettings) -> None:
        try:
            ns = regex.compile(settings.namespace_regexp) if settings.namespace_regexp else None
        except regex.RegexError as e:
            raise ConfigError(f"releases.loadtester.namespace_regexp: {e}") from None
        self.settings, self._ns = settings, ns

    def authorize(self, namespace: str) -> bool:
        return self._ns is None or self._ns.search(namespace) is not None

    def check(self, cmd: str) -> HeyArgs | None:
        """The hey arguments, or None for a shell command that is allowed; ValueError when refused."""
        if not cmd.strip():
            raise ValueError("cmd not found in metadata")
        if shlex.split(cmd)[:1] and shlex.split(cmd)[0].rsplit("/", 1)[-1] == "hey":
            return parse_hey(cmd, self.settings.max_duration_s)
        if not self.settings.allow_shell:
            raise ValueError("command refused: pitwall's load tester runs only hey commands unless "
                             "releases.loadtester.allow_shell is true")
        return None

    async def run(self, canary: str, cmd: str, hey: HeyArgs | None) -> tuple[bool, bytes]:
        """Run to completion within the timeout: (ok, output)."""
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                if hey is not None:
                    res = await run_hey(hey, self.resolve)
                    return True, res.summary().encode()
                return await _shell(cmd)
        except TimeoutError:
            return False, f"command timed out after {self.settings.timeout_s:g}s".encode()
        finally:
            self.runs += 1

    async def run_kubectl(self, canary: str, cmd: str) -> tuple[bool, bytes]:
        """A ``type: kubectl`` task to completion within the timeout: (ok, output or Flagger's error text);
        ValueError when refused (its arguments, or kubectl not set up)."""
        args = kubectl_args(cmd)
        if not self.settings.kubectl_service_account:
            raise ValueError("kubectl tasks are off: set releases.loadtester.kubectl_service_account "
                             "(namespace/name) to the ServiceAccount they run as")
        if self.kubectl is None:
            raise ValueError("kubectl tasks need pitwall's Kubernetes API")
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                rc, out = await self.kubectl.run(self.settings.kubectl_service_account, args)
        except TimeoutError:  # killed, as Go's exec.CommandContext kills at Flagger's -timeout
            rc, out = -9, b""
        finally:
            self.runs += 1
        log.info("kubectl command finished", extra={"canary": canary, "cmd": cmd, "exit_status": rc})
        if rc == 0:
            return True, out
        status = f"exit status {rc}" if rc > 0 else f"signal {-rc}"
        return False, f"command {cmd} failed: ".encode() + out + f": {status}".encode()

    def submit(self, canary: str, cmd: str, hey: HeyArgs | None, log_output: bool) -> None:
        """Queue a cmd task unless the same one is running (Flagger skips it then)."""
        key = hashlib.sha256(f"{canary}{cmd}".encode()).hexdigest()
        if key in self._running:
            log.info("command skipped, already running", extra={"canary": canary, "cmd": cmd})
            return
        if len(self._running) >= MAX_TASKS:
            raise OverflowError(f"too many commands running ({MAX_TASKS})")

        async def go() -> None:
            try:
                ok, out = await self.run(canary, cmd, hey)
                self.last[canary] = out.decode(errors="replace")[:1024]
                if ok:
                    log.info("command finished", extra={"canary": canary, "cmd": cmd,
                                                        "output": out[:4096].decode(errors="replace")
                                                        if log_output else ""})
                else:
                    log.warning("command failed", extra={"canary": canary, "cmd": cmd,
                                                         "output": out[:4096].decode(errors="replace")})
            finally:
                self._running.pop(key, None)

        self._running[key] = asyncio.get_running_loop().create_task(go(), name=f"loadtest {canary}")

    async def set_gate(self, key: str, name: str, namespace: str, is_open: bool) -> None:
        """Open or close a gate; a manual approval is a change on the incident timeline."""
        await self.gates.set(key, is_open)
        if self.changes is None:
            return
        what = "rollback gate" if key.startswith("rollback.") else "gate"
        try:
            await self.changes.record(ChangeEvent(
                kind="release", summary=f"Canary {name}.{namespace}: load tester {what} "
                                        f"{'opened' if is_open else 'closed'}",
                source="flagger-loadtester", service=f"{namespace}/{name}", who="flagger-loadtester",
                details={"canary": f"{namespace}/{name}", "gate": what, "open": is_open}))
        except Exception as e:  # the timeline is best effort; the gate is set
            log.warning("could not record change event", extra={"error": repr(e)})

    @property
    def running(self) -> int:
        return len(self._running)

    async def stop(self) -> None:
        tasks = list(self._running.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


async def _shell(cmd: str) -> tuple[bool, bytes]:
    rc, out = await run_process(["sh", "-c", cmd], MAX_OUTPUT)
    return rc == 0, out if rc == 0 else f"exit status {rc}: ".encode() + out


# ---- HTTP --------------------------------------------------------------------------------------------------

def _text(status: int, text: str = "") -> Response:
    return Response(text.encode(), status_code=status, media_type="text/plain; charset=utf-8")


async def _payload(request: Request) -> dict[str, Any] | None:
    """The CanaryWebhookPayload, or None when unreadable (Flagger answers 400 with no body)."""
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    meta = doc.get("metadata")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        return None  # Go's map[string]string refuses other values
    return doc


def _true(v: str | None) -> bool:
    """Go's strconv.ParseBool, as Flagger reads returnCmdOutput (an error counts as false)."""
    return v in ("1", "t", "T", "TRUE", "true", "True")


async def _kubectl(lt: LoadTester, canary: str, cmd: str, meta: dict[str, str]) -> Response:
    """Flagger's kubectl task: run before answering, 200 (with the output on returnCmdOutput) or 500 with the
    error; what pitwall refuses to run is a 400 with the reason."""
    try:
        ok, out = await lt.run_kubectl(canary, cmd)
    except ValueError as e:
        return _text(400, str(e))
    if not ok:
        return _text(500, out.decode(errors="replace"))
    return _text(200, out.decode(errors="replace") if _true(meta.get("returnCmdOutput")) else "")


def loadtester_router(lt: LoadTester) -> APIRouter:
    """Flagger's load tester routes under ``PREFIX``."""
    r = APIRouter(prefix=PREFIX, tags=["releases"])

    @r.get("/healthz")
    async def healthz() -> Response:
        return _text(200, "OK")

    # GET and POST alike, each with its own operation id (one shared id is a duplicate in the OpenAPI document)
    @r.post("/gate/approve", operation_id="loadtester_gate_approve_post")
    @r.get("/gate/approve", operation_id="loadtester_gate_approve_get")
    async def approve() -> Response:
        return _text(200, "OK")

    @r.post("/gate/halt", operation_id="loadtester_gate_halt_post")
    @r.get("/gate/halt", operation_id="loadtester_gate_halt_get")
    async def halt() -> Response:
        return _text(403, "Forbidden")

    def gate(path: str, prefix: str) -> None:
        @r.post(f"/{path}/check")
        async def check(request: Request) -> Response:
            doc = await _payload(request)
            if doc is None:
                return _text(400)
            if not lt.authorize(str(doc.get("namespace") or "")):
                return _text(403, "Forbidden")
            ok = await lt.gates.is_open(f"{prefix}{doc.get('name')}.{doc.get('namespace')}")
            return _text(200, "Approved") if ok else _text(403, "Forbidden")

        async def toggle(request: Request, is_open: bool) -> Response:
            doc = await _payload(request)
            if doc is None:
                return _text(400)
            if not lt.authorize(str(doc.get("namespace") or "")):
                return _text(403, "Forbidden")
            name, ns = str(doc.get("name") or ""), str(doc.get("namespace") or "")
            await lt.set_gate(f"{prefix}{name}.{ns}", name, ns, is_open)
            return _text(202)

        @r.post(f"/{path}/open")
        async def open_(request: Request) -> Response:
            return await toggle(request, True)

        @r.post(f"/{path}/close")
        async def close(request: Request) -> Response:
            return await toggle(request, False)

    gate("gate", "")
    gate("rollback", "rollback.")

    @r.post("/")
    async def task(request: Request) -> Response:
        doc = await _payload(request)
        if doc is None:
            return _text(400)
        if not lt.authorize(str(doc.get("namespace") or "")):
            return _text(403, "Forbidden")
        meta: dict[str, str] = doc.get("metadata") or {}
        if not meta:
            return _text(400, "metadata not found in payload")
        canary = f"{doc.get('name')}.{doc.get('namespace')}"
        typ = meta.get("type", "cmd")
        cmd = meta.get("cmd", "")
        if typ == "kubectl":
            return await _kubectl(lt, canary, cmd, meta)
        if typ not in ("cmd", "bash"):
            return _text(400, f"unknown task type {typ}")
        try:
            hey = lt.check(cmd)
        except ValueError as e:
            return _text(400, str(e))
        if typ == "bash":
            ok, out = await lt.run(canary, cmd, hey)
            if not ok:
                return _text(500, out.decode(errors="replace"))
            return _text(200, out.decode(errors="replace") if _true(meta.get("returnCmdOutput")) else "")
        try:
            lt.submit(canary, cmd, hey, _true(meta.get("logCmdOutput")))
        except OverflowError as e:
            return _text(429, str(e))
        return _text(202)

    return r
