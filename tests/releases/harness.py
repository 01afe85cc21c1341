"""Drives the Canary controller tick by tick over an in-process Kubernetes API: a fake clock, a kubelet stand-in
that reports Deployments rolled out, metric answers chosen per query, and a local HTTP sink for webhooks."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from pitwall.incidents import ChangeEvent
from pitwall.kube import KubeAPI, NotFoundError
from pitwall.releases.checks import MetricContext
from pitwall.releases.controller import CanaryController

NET = "networking.istio.io/v1"


@dataclass
class FakeResult:
    result_type: str
    values: list[list[float]]


@dataclass
class Answers:
    """What the fake PromQL engine answers: by which built-in the query is; None means no series."""

    success_rate: float | None = 100.0
    duration_ms: float | None = 20.0
    requests: float | None = 1000.0
    other: float | None = 1.0
    seen: list[str] = field(default_factory=list)

    def __call__(self, expr: str, at_ms: int, tenant: str = "default") -> FakeResult:
        self.seen.append(expr)
        if "increase(istio_requests_total" in expr:
            v = self.requests
        elif 'response_code!~"5.*"' in expr:
            v = self.success_rate
        elif "istio_request_duration_milliseconds_bucket" in expr:
            v = self.duration_ms
        else:
            v = self.other
        return FakeResult("vector", [] if v is None else [[v]])


class Changes:
    def __init__(self) -> None:
        self.events: list[ChangeEvent] = []

    async def record(self, event: ChangeEvent) -> ChangeEvent:
        self.events.append(event)
        return event


class Sink:
    """A local HTTP server recording each POSTed JSON body with its path; ``refuse`` maps paths to a status."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.refuse: dict[str, int] = {}
        self.server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Sink:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                path = line.split()[1].decode()
                length = 0
                while (h := await reader.readline()) not in (b"\r\n", b""):
                    k, _, v = h.decode().partition(":")
                    if k.lower() == "content-length":
                        length = int(v)
                body = json.loads(await reader.readexactly(length)) if length else {}
                self.received.append((path, body))
                status = self.refuse.get(path, 200)
                msg = b"refused" if status > 202 else b""
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(msg)}\r\n\r\n".encode() + msg)
                await writer.drain()
        finally:
            writer.close()

    def paths(self, *, events: bool = False) -> list[str]:
        return [p for p, _ in self.received if events or p != "/event"]


class Receiver:
    """Records (path, headers, JSON body) of every POST; answers ``status``."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.status = 200
        self.url = ""
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Receiver:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                path = line.split()[1].decode()
                hdr: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b""):
                    k, _, v = h.decode().partition(":")
                    hdr[k.lower()] = v.strip()
                self.got.append((path, hdr, json.loads(await reader.readexactly(int(hdr["content-length"])))))
                writer.write(f"HTTP/1.1 {self.status} X\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
        finally:
            writer.close()

    def texts(self, path: str) -> list[Any]:
        return [b for p, _, b in self.got if p == path]


class Driver:
    """The controller with a fake clock; ``tick`` advances one analysis interval and reconciles."""

    def __init__(self, kube: KubeAPI, answers: Answers, changes: Changes | None = None) -> None:
        self.kube = kube
        self.client = kube.client
        self.answers = answers
        self.changes = changes or Changes()
        self.now = 1000.0
        self.ctl = self.new_controller()

    def new_controller(self) -> CanaryController:
        """A controller with nothing in memory (as after a restart)."""
        return CanaryController(self.client, metrics=MetricContext(instant=self.answers, client=self.client),
                                changes=self.changes, clock=lambda: self.now)

    async def tick(self, key: str = "default/podinfo", *, ready: bool = True, stuck: str = "") -> dict[str, Any]:
        self.now += 3600.0
        if ready:
            await self.roll_out_all(stuck)
        await self.ctl.reconcile(key)
        if ready:
            await self.roll_out_all(stuck)
        ns, _, name = key.partition("/")
        try:
            return await self.client.get("flagger.app/v1beta1", "Canary", name, ns)
        except NotFoundError:
            return {}

    async def roll_out_all(self, stuck: str = "") -> None:
        """The kubelet and Deployment controller's outcome: every Deployment fully rolled out (but ``stuck``,
        whose pods never become available)."""
        for d in (await self.client.list("apps/v1", "Deployment")).items:
            n = d["spec"].get("replicas", 1)
            ok = 0 if d["metadata"]["name"] == stuck else n
            st = {"observedGeneration": d["metadata"].get("generation", 1), "replicas": n, "updatedReplicas": n,
                  "readyReplicas": ok, "availableReplicas": ok, "unavailableReplicas": n - ok}
            if d.get("status") != st:
                d["status"] = st
                await self.client.update_status(d)

    async def deployment(self, name: str) -> dict[str, Any]:
        return await self.client.get("apps/v1", "Deployment", name, "default")

    async def weights(self, name: str = "podinfo") -> list[tuple[str, int]]:
        vs = await self.client.get(NET, "VirtualService", name, "default")
        return [(d["destination"]["host"], d["weight"]) for d in vs["spec"]["http"][0]["route"]]


def deployment(name: str = "podinfo", image: str = "v1", replicas: int = 2) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": f"podinfo:{image}"}]}}}}


def canary(analysis: dict[str, Any], name: str = "podinfo", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": name, "namespace": "default"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "service": {"port": 9898}, "analysis": analysis, **spec}}


async def set_image(kube: KubeAPI, image: str, name: str = "podinfo") -> None:
    d = await kube.client.get("apps/v1", "Deployment", name, "default")
    d["spec"]["template"]["spec"]["containers"][0]["image"] = f"podinfo:{image}"
    await kube.client.update(d)
