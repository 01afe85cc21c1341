"""A started KubeAPI and ServiceProxy in the test's loop, real TCP backends on loopback pod addresses."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pitwall.kube import KubeAPI, KubeClient
from pitwall.traffic import ServiceProxy
from tests.kube_fixture import started_kube

Obj = dict[str, Any]


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    """A started KubeAPI over a fresh SQLite store (no HTTP)."""
    async with started_kube(tmp_path) as api:
        yield api


@pytest.fixture
async def proxy(kube: KubeAPI) -> AsyncIterator[ServiceProxy]:
    p = ServiceProxy(kube.client, drain_timeout_s=0.5, connect_budget_s=2.0, attempt_timeout_s=0.5)
    await p.start()
    await p.wait_synced(10)
    try:
        yield p
    finally:
        await p.stop()


def pod_ips(n: int) -> list[str]:
    """``n`` distinct pod-range loopback addresses, away from the low ones a kubelet hands out first."""
    base = random.randrange(128, 250)
    first = random.randrange(1, 200)
    return [f"127.42.{base}.{first + i}" for i in range(n)]


class Backend:
    """An HTTP/1.1 server on ``ip:port`` answering every request with its name (Connection: close),
    or an echo server (``echo=True``) that copies until EOF then half-closes."""

    def __init__(self, ip: str, port: int, name: str = "", *, echo: bool = False) -> None:
        self.ip, self.port, self.name, self.echo = ip, port, name or ip, echo
        self.requests = 0
        self.server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._handle, self.ip, self.port, reuse_address=True)
        return self

    async def close_listener(self) -> None:
        """Stop accepting (the old pod's socket going away); open connections finish."""
        if self.server is not None:
            self.server.close()
            self.server = None

    async def stop(self) -> None:
        await self.close_listener()
        for t in list(self._conns):
            t.cancel()
        for t in list(self._conns):
            with contextlib.suppress(BaseException):
                await t

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            if self.echo:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
                w.write_eof()
                await r.read()
            else:
                await r.readuntil(b"\r\n\r\n")
                self.requests += 1
                body = self.name.encode()
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
                await w.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.discard(task)
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()


@contextlib.asynccontextmanager
async def backends(*specs: tuple[str, int]) -> AsyncIterator[list[Backend]]:
    started = [await Backend(ip, port).start() for ip, port in specs]
    try:
        yield started
    finally:
        for b in started:
            await b.stop()


async def http_get(ip: str, port: int, timeout: float = 5.0) -> str:
    """One request over a new connection; the body."""
    r, w = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
    try:
        w.write(b"GET / HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")
        await w.drain()
        raw = await asyncio.wait_for(r.read(), timeout)
    finally:
        w.close()
        with contextlib.suppress(OSError):
            await w.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), raw
    return body.decode()


async def eventually(check: Callable[[], Awaitable[bool] | bool], *, tries: int = 400, every_s: float = 0.02) -> None:
    """Wait (bounded) until ``check()`` is true."""
    for _ in range(tries):
        got = check()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        await asyncio.sleep(every_s)
    raise AssertionError("condition not reached")


async def make_service(client: KubeClient, name: str, ports: list[Obj] | None = None, **spec: Any) -> Obj:
    body: Obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
                 "spec": {"ports": ports or [{"name": "http", "port": 80, "targetPort": 8080}], **spec}}
    return await client.create(body)


def endpoint(ip: str, *, ready: bool = True, serving: bool | None = None, terminating: bool = False) -> Obj:
    return {"addresses": [ip], "conditions": {"ready": ready, "serving": ready if serving is None else serving,
                                              "terminating": terminating}}


async def put_slice(client: KubeClient, service: str, endpoints: list[Obj], *, name: str = "",
                    ports: list[Obj] | None = None) -> Obj:
    """Create or replace an EndpointSlice of ``service``."""
    name = name or f"{service}-abc"
    body: Obj = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                 "metadata": {"name": name, "namespace": "default",
                              "labels": {"kubernetes.io/service-name": service}},
                 "addressType": "IPv4", "endpoints": endpoints,
                 "ports": ports or [{"name": "http", "port": 8080, "protocol": "TCP"}]}
    try:
        old = await client.get("discovery.k8s.io/v1", "EndpointSlice", name, "default")
    except Exception:
        return await client.create(body)
    body["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
    return await client.update(body)


def cluster_ip(svc: Obj) -> str:
    return str(svc["spec"]["clusterIP"])


def _one_request(ip: str, port: int, timeout: float) -> str:
    with socket.create_connection((ip, port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    raw = b"".join(chunks)
    if not (raw.startswith(b"HTTP/1.") and raw[8:13] == b" 200 "):
        raise OSError(f"bad answer: {raw[:60]!r}")
    return raw.partition(b"\r\n\r\n")[2].decode()


def steady_load(ip: str, port: int, requests: int, pace_s: float, timeout: float = 5.0) -> tuple[
        collections.Counter[str], list[str]]:
    """``requests`` requests one after another, each on a new connection, ``pace_s`` apart (run it in a
    thread); the answering backends counted, and the failures."""
    got: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    for _ in range(requests):
        try:
            got[_one_request(ip, port, timeout)] += 1
        except OSError as e:
            failures.append(repr(e))
        time.sleep(pace_s)
    return got, failures


async def load_during(ip: str, port: int, work: Awaitable[None], *, threads: int = 4, requests: int = 500,
                      pace_s: float = 0.02) -> tuple[collections.Counter[str], list[str]]:
    """Run ``steady_load`` from ``threads`` threads while ``work`` runs; the merged results."""
    load = asyncio.gather(*[asyncio.to_thread(steady_load, ip, port, requests, pace_s) for _ in range(threads)])
    try:
        await work
    finally:
        results = await load
    total: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    for got, failed in results:
        total.update(got)
        failures += failed
    return total, failures
