"""The audit log (core.audit): writes and refusals land in the reserved tenant, queryable with LogQL;
reads do not; only admin tokens read it; nobody writes it over HTTP (docs/security.md)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import httpx
import pytest

from pitwall.config import load_settings
from pitwall.core.audit import _BATCH, LINGER_S, AuditEntry, AuditLog, AuditSettings, is_audited
from pitwall.server import create_app

WRITE, READ, ADMIN, ANY_READ = "audit-write-00000", "audit-read-000000", "audit-admin-00000", "audit-any-read-00"
TOKENS = [
    {"token": WRITE, "scopes": ["read", "write"], "name": "promtail"},
    {"token": READ, "scopes": ["read"], "name": "grafana"},
    {"token": ADMIN, "scopes": ["admin"], "name": "operator"},
    {"token": ANY_READ, "scopes": ["read"], "tenants": ["*"], "name": "any-reader"},
]


def h(token: str, tenant: str | None = None) -> dict[str, str]:
    out = {"Authorization": f"Bearer {token}", "User-Agent": "audit-test/1"}
    if tenant:
        out["X-Scope-OrgID"] = tenant
    return out


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                             auth_tokens=TOKENS)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            yield c


async def _audit_lines(c: httpx.AsyncClient, query: str, want: int) -> list[str]:
    """Lines of the audit tenant matching ``query``, once there are ``want`` (the log is written async)."""
    lines: list[str] = []
    for _ in range(100):
        r = await c.get("/loki/api/v1/query_range", params={"query": query, "limit": 1000},
                        headers=h(ADMIN, "pitwall-audit"))
        assert r.status_code == 200, r.text
        lines = [v[1] for s in r.json()["data"]["result"] for v in s["values"]]
        if len(lines) >= want:
            return lines
        await asyncio.sleep(0.05)
    return lines


@pytest.mark.timeout(60)
async def test_writes_and_refusals_are_queryable_reads_are_not(client: httpx.AsyncClient) -> None:
    push = {"streams": [{"stream": {"job": "app"}, "values": [[str(time.time_ns()), "hello"]]}]}
    r = await client.post("/loki/api/v1/push?secret_key=hunter2&x=1", json=push, headers=h(WRITE))
    assert r.status_code == 204, r.text
    r = await client.post("/loki/api/v1/push", json=push, headers=h(READ))  # lacks write
    assert r.status_code == 403
    r = await client.post("/loki/api/v1/push", json=push, headers={"Authorization": "Bearer wrong-token-000000"})
    assert r.status_code == 401
    r = await client.get("/api/v1/query", params={"query": "up"}, headers=h(READ))
    assert r.status_code == 200
    r = await client.post("/loki/api/v1/query", data={"query": '{job="app"}'}, headers=h(READ))
    assert r.status_code == 200

    lines = await _audit_lines(client, '{job="pitwall-audit"}', 3)
    assert len(lines) == 3, lines
    write = next(ln for ln in lines if "status=204" in ln)
    assert "who=promtail" in write and "tenant=default" in write and "method=POST" in write
    assert "path=/loki/api/v1/push" in write and "query=secret_key,x" in write
    assert "remote=10.1.2.3" in write and "user_agent=audit-test/1" in write
    assert "hunter2" not in "".join(lines)
    assert not any("/api/v1/query" in ln for ln in lines), "reads and read-only POSTs are not audited"
    assert not any(tok in "".join(lines) for tok in (WRITE, READ, "wrong-token-000000"))

    refused = await _audit_lines(client, '{job="pitwall-audit"} | logfmt | status >= 400', 2)
    assert len(refused) == 2
    assert any("status=403" in ln and "who=grafana" in ln for ln in refused)
    assert any("status=401" in ln and 'who=""' in ln for ln in refused)
    by_class = await _audit_lines(client, '{job="pitwall-audit", method="POST", status_class="2xx"}', 1)
    assert len(by_class) == 1


@pytest.mark.timeout(60)
async def test_only_admin_tokens_read_the_audit_tenant_and_nobody_writes_it(client: httpx.AsyncClient) -> None:
    q = {"query": '{job="pitwall-audit"}'}
    for token in (READ, ANY_READ, WRITE):
        r = await client.get("/loki/api/v1/query_range", params=q, headers=h(token, "pitwall-audit"))
        assert r.status_code == 403, (token, r.text)
        assert "audit" in r.text
    r = await client.get("/loki/api/v1/query_range", params=q, headers=h(ADMIN, "pitwall-audit"))
    assert r.status_code == 200
    push = {"streams": [{"stream": {"job": "pitwall-audit"}, "values": [[str(time.time_ns()), "forged"]]}]}
    for token in (ADMIN, WRITE):
        r = await client.post("/loki/api/v1/push", json=push, headers=h(token, "pitwall-audit"))
        assert r.status_code == 403, (token, r.text)
    lines = await _audit_lines(client, '{job="pitwall-audit"} |= "forged"', 1)
    assert lines == []


@pytest.mark.timeout(60)
async def test_audit_can_be_turned_off(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                             audit={"enabled": False})
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport,
                                                                    base_url="http://localhost") as c:
        push = {"streams": [{"stream": {"job": "app"}, "values": [[str(time.time_ns()), "hello"]]}]}
        assert (await c.post("/loki/api/v1/push", json=push)).status_code == 204
        await asyncio.sleep(0.2)
        r = await c.get("/loki/api/v1/query_range", params={"query": '{job="pitwall-audit"}'},
                        headers={"X-Scope-OrgID": "pitwall-audit"})
        assert r.json()["data"]["result"] == []


class _Slow:
    def __init__(self) -> None:
        self.got: list[AuditEntry] = []
        self.gate = asyncio.Event()

    async def record(self, entries: Sequence[AuditEntry]) -> None:
        await self.gate.wait()
        self.got.extend(entries)


def _entry(i: int) -> AuditEntry:
    return AuditEntry(ts_ns=i, who="w", tenant="default", method="POST", path="/x", query_keys=(), status=204,
                      remote="127.0.0.1", user_agent="", duration_s=0.001)


@pytest.mark.timeout(30)
async def test_a_full_queue_drops_and_counts_without_waiting() -> None:
    sink = _Slow()
    audit = AuditLog(sink, AuditSettings(queue_size=4))
    await audit.start()
    try:
        for i in range(20):
            audit.offer(_entry(i))  # never blocks, although the sink does
        assert audit.dropped >= 20 - 4 - 1
    finally:
        sink.gate.set()
        await audit.stop()
    assert len(sink.got) + audit.dropped == 20



class _Counting:
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.at: list[float] = []  # when each batch was written (loop time)

    async def record(self, entries: Sequence[AuditEntry]) -> None:
        self.batches.append(len(entries))
        self.at.append(asyncio.get_running_loop().time())


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.mark.timeout(30)
async def test_what_is_queued_when_the_linger_ends_goes_at_once_in_bounded_batches() -> None:
    """A burst larger than one batch is stored after one linger, ``_BATCH`` entries per sink write: the
    linger spaces the writes out but never caps how many entries a second can be stored."""
    sink = _Counting()
    audit = AuditLog(sink, AuditSettings(queue_size=5000))
    await audit.start()
    try:
        for i in range(1200):
            audit.offer(_entry(i))
        await _until(lambda: sum(sink.batches) >= 1200)
        assert sink.batches == [_BATCH, _BATCH, 1200 - 2 * _BATCH]
        assert sink.at[-1] - sink.at[0] < LINGER_S / 2  # one linger, not one per batch
        audit.offer(_entry(0))
        await _until(lambda: len(sink.batches) > 3)
        assert sink.batches[3:] == [1]
    finally:
        await audit.stop()
    assert audit.dropped == 0


def test_what_is_audited() -> None:
    assert is_audited("POST", "/loki/api/v1/push", 204)
    assert is_audited("DELETE", "/api/v2/silence/x", 200)
    assert not is_audited("GET", "/api/v1/query", 200)
    assert not is_audited("POST", "/api/v1/query", 200)
    assert not is_audited("POST", "/loki/api/v1/label/job/values", 200)
    assert is_audited("GET", "/api/v1/query", 401)
    assert is_audited("GET", "/api/v1/query", 403)


def test_logfmt_quotes_what_needs_it() -> None:
    e = AuditEntry(ts_ns=1, who="", tenant="team a", method="POST", path='/x"y', query_keys=("a", "b"),
                   status=403, remote="::1", user_agent="curl/8 (x=1)\n", duration_s=0.5)
    line = e.logfmt()
    assert line == ('who="" tenant="team a" method=POST path="/x\\"y" query=a,b status=403 remote=::1 '
                    'user_agent="curl/8 (x=1)\\n" duration=0.500000s')
    assert json.dumps(e.stream_labels()) == '{"job": "pitwall-audit", "method": "POST", "status_class": "4xx"}'
    odd = AuditEntry(ts_ns=1, who="", tenant="", method="BREW", path="/", query_keys=(), status=501, remote="",
                     user_agent="", duration_s=0)
    assert odd.stream_labels()["method"] == "other" and "method=BREW" in odd.logfmt()
