"""Pieces of the mesh tests: HTTP/1.1 keep-alive backends that fail or stall on purpose, pods with labels."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from pitwall.kube import KubeClient

Obj = dict[str, Any]


class App:
    """An HTTP/1.1 server on ``ip:port`` (keep-alive) answering JSON ``{name, path, headers, method}``.

    ``status`` is its answer; the first ``fail_first`` requests get 503; ``delay_s`` stalls each answer.
    """

    def __init__(self, ip: str, port: int, name: str, *, status: int = 200, fail_first: int = 0,
                 delay_s: float = 0.0) -> None:
        self.ip, self.port, self.name = ip, port, name
        self.status, self.fail_first, self.delay_s = status, fail_first, delay_s
        self.requests: list[Obj] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> App:
        self.server = await asyncio.start_server(self._handle, self.ip, self.port, reuse_address=True)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
                n = int(headers.get("content-length", "0"))
                body = await r.readexactly(n) if n else b""
                self.requests.append({"method": method, "path": path, "headers": headers, "body": body})
                status = self.status
                if self.fail_first > 0:
                    self.fail_first -= 1
                    status = 503
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                payload = json.dumps({"name": self.name, "path": path, "headers": headers,
                                      "method": method}).encode()
                w.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                        b"X-Backend: %s\r\n\r\n%s" % (status, len(payload), self.name.encode(), payload))
                await w.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._tasks.discard(task)
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()


async def add_pod(client: KubeClient, name: str, ip: str, labels: dict[str, str], sa: str = "default") -> None:
    """A Running pod with ``ip`` (no kubelet: the status is written as a kubelet would)."""
    pod = await client.create({"apiVersion": "v1", "kind": "Pod",
                               "metadata": {"name": name, "namespace": "default", "labels": labels},
                               "spec": {"serviceAccountName": sa, "containers": [{"name": "c", "image": "app"}]}})
    pod["status"] = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    await client.update_status(pod)


async def apply(client: KubeClient, obj: Obj) -> Obj:
    """Create, or replace the object of that name."""
    meta = obj.setdefault("metadata", {})
    meta.setdefault("namespace", "default")
    try:
        old = await client.get(obj["apiVersion"], obj["kind"], meta["name"], meta["namespace"])
    except Exception:
        return await client.create(obj)
    meta["resourceVersion"] = old["metadata"]["resourceVersion"]
    return await client.update(obj)


def vs(name: str, http: list[Obj], hosts: list[str] | None = None) -> Obj:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": name},
            "spec": {"hosts": hosts or [name], "http": http}}


def dr(name: str, spec: Obj) -> Obj:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": name},
            "spec": {"host": name, **spec}}


def authz(name: str, spec: Obj) -> Obj:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": name},
            "spec": spec}
