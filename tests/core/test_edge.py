"""core.edge: pitwall's checks, bookkeeping and parking as one layer in front of the framework."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from types import CoroutineType
from typing import Any

import pytest
from prometheus_client import generate_latest
from starlette.types import Message

from pitwall.config import load_settings
from pitwall.core.audit import AuditEntry, AuditLog, AuditSettings
from pitwall.core.browser_guard import BrowserGuard
from pitwall.core.edge import Edge
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.server import create_app


class _Sink:
    async def record(self, entries: Sequence[AuditEntry]) -> None: ...


def _scope(method: str = "PUT", path: str = "/api/v1/x", host: bytes = b"127.0.0.1", qs: bytes = b"",
           kind: str = "http") -> dict[str, Any]:
    return {"type": kind, "method": method, "path": path, "raw_path": path.encode(), "query_string": qs,
            "root_path": "", "headers": [(b"host", host)], "client": ("10.0.0.1", 1)}


async def _route(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _edge(app: Any = _route, guard_hosts: list[str] | None = None) -> tuple[Edge, AuditLog, SelfMetrics]:
    audit, metrics = AuditLog(_Sink(), AuditSettings()), SelfMetrics()
    return Edge(app, audit=audit, guard=BrowserGuard(app, guard_hosts), metrics=metrics), audit, metrics


async def _call(edge: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    await edge(scope, receive, send)
    return sent


def _counted(metrics: SelfMetrics) -> str:
    return "\n".join(line for line in generate_latest(metrics.registry).decode().splitlines()
                     if line.startswith("pitwall_http_requests_total"))


async def test_a_passed_write_is_audited_and_counted() -> None:
    edge, audit, metrics = _edge()
    sent = await _call(edge, _scope())
    assert sent[0]["status"] == 204
    entry = audit.queue.get_nowait()
    assert (entry.method, entry.path, entry.status, entry.remote) == ("PUT", "/api/v1/x", 204, "10.0.0.1")
    assert 'pitwall_http_requests_total{code="204",handler="other"} 1.0' in _counted(metrics)


async def test_a_refusal_is_audited_but_not_counted() -> None:
    """As with one middleware per concern: the metrics sit below the checks, the audit log above them."""
    edge, audit, metrics = _edge(guard_hosts=["pitwall.example"])
    sent = await _call(edge, _scope(host=b"attacker.example"))
    assert sent[0]["status"] == 421
    assert audit.queue.get_nowait().status == 421
    assert _counted(metrics) == ""


async def test_an_exception_in_a_check_is_a_plain_500_audited_then_raised() -> None:
    """Outside the framework's error layer, the edge answers its own failures as that layer would."""
    edge, audit, metrics = _edge()

    async def broken(scope: Any, receive: Any, send: Any) -> bool:
        raise RuntimeError("authenticator down")

    edge.guard.admit = broken  # type: ignore[method-assign]
    sent: list[dict[str, Any]] = []

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    with pytest.raises(RuntimeError):
        await edge(_scope(), None, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 500
    assert sent[1]["body"] == b"Internal Server Error"
    assert audit.queue.get_nowait().status == 500
    assert _counted(metrics) == ""


async def test_a_refused_websocket_is_closed_and_not_audited() -> None:
    edge, audit, _ = _edge(guard_hosts=["pitwall.example"])
    sent = await _call(edge, _scope(method="GET", host=b"attacker.example", kind="websocket"))
    assert sent[0]["type"] == "websocket.close"
    assert audit.queue.empty()


def _awaited_files(task: asyncio.Task[Any]) -> list[str]:
    """The source files of the coroutines a task is suspended in, outermost first."""
    out = []
    coro: Any = task.get_coro()
    while isinstance(coro, CoroutineType):
        out.append(coro.cr_code.co_filename)
        coro = coro.cr_await
    return out


@pytest.mark.timeout(120)
async def test_a_held_consul_query_pins_no_framework_frame(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                             otlp_grpc={"listen": "127.0.0.1:0"})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        hub = app.state.components.control_plane.registry.hub
        put = _scope(method="PUT", path="/v1/kv/held")
        assert (await _call(app, put))[0]["status"] == 200
        # A KV write answers before the hub's watch task runs (``answer_first``); a client's next request
        # finds it caught up, an in-process caller waits a loop turn for it.
        written = await app.state.components.control_plane.kube.store.revision()
        for _ in range(100):
            if hub.seen >= written:
                break
            await asyncio.sleep(0)
        assert hub.seen >= written
        gone = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await gone.wait()
            return {"type": "http.disconnect"}

        sent: list[Message] = []

        async def send(msg: Message) -> None:
            sent.append(msg)

        get = _scope(method="GET", path="/v1/kv/held", qs=f"index={hub.seen}&wait=60s".encode())
        held = asyncio.create_task(app(get, receive, send))
        for _ in range(500):
            if hub.waiting:
                break
            await asyncio.sleep(0.01)
        assert hub.waiting == 1
        files = _awaited_files(held)
        assert any(f.endswith("core/edge.py") for f in files)
        assert not [f for f in files if "/starlette/" in f or "/fastapi/" in f], files
        gone.set()  # the client leaves: no answer, nothing held
        await asyncio.wait_for(held, 10)
        assert sent == [] and hub.waiting == 0
