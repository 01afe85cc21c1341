"""Flagger's load tester API served by pitwall: hey's flags run by the in-process load generator against a local
HTTP server, cmd tasks queued once per canary and command, bash run synchronously, shell refused by default, the
manual gates kept in the revisioned store, Flagger's status codes and texts for bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from pitwall.releases.loadtester import GateStore, LoadTester, loadtester_router, parse_hey, run_hey
from pitwall.releases.settings import LoadTesterSettings
from pitwall.storage.revstore.sqlite import SqliteRevStore
from tests.releases.harness import Changes

pytestmark = pytest.mark.timeout(60)


class Target:
    """A local HTTP server counting requests by (method, path, Host, X-Test header, body)."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, str, str, str, bytes]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Target:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                method, path = line.decode().split()[:2]
                hdr: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b""):
                    k, _, v = h.decode().partition(":")
                    hdr[k.lower()] = v.strip()
                body = await reader.readexactly(int(hdr.get("content-length") or 0))
                self.hits.append((method, path, hdr.get("host", ""), hdr.get("x-test", ""), body))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def lt(tmp_path: Path) -> AsyncIterator[LoadTester]:
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    tester = LoadTester(LoadTesterSettings(), GateStore(store), changes=Changes())
    try:
        yield tester
    finally:
        await tester.stop()
        await store.stop()


@pytest.fixture
async def api(lt: LoadTester) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(loadtester_router(lt))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pitwall") as c:
        yield c


def hook(cmd: str, typ: str = "cmd", **meta: str) -> dict[str, Any]:
    return {"name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": "x",
            "metadata": {"type": typ, "cmd": cmd, **meta}}


def test_hey_flags_parse_as_hey_does() -> None:
    a = parse_hey("hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/")
    assert (a.duration_s, a.rate, a.workers, a.url) == (60.0, 10.0, 2, "http://podinfo-canary.test:9898/")
    b = parse_hey("hey -n 20 -c 4 -m post -H 'X-Test: a b' -d '{\"k\": 1}' -t 3 http://x/")
    assert (b.requests, b.workers, b.method, b.headers, b.body, b.timeout_s) == (
        20, 4, "POST", [("X-Test", "a b")], b'{"k": 1}', 3.0)
    assert parse_hey("hey -z 1h30m http://x/", max_duration_s=7200).duration_s == 5400.0
    c = parse_hey("hey http://x/")
    assert (c.requests, c.workers, c.method, c.duration_s) == (200, 50, "GET", 0.0)  # hey's defaults


@pytest.mark.parametrize(("cmd", "why"), [
    ("hey -z 2h http://x/", "longer than releases.loadtester.max_duration_s"),
    ("hey -c 5000 http://x/", "-c must be between"),
    ("hey -q 100 -c 100 http://x/", "-q times -c"),
    ("hey -n 2 -c 5 http://x/", "-n cannot be less than -c"),
    ("hey -z soon http://x/", "invalid value 'soon' for flag -z"),
    ("hey -x 1 http://x/", "flag provided but not supported: -x"),
    ("hey -H nocolon http://x/", "invalid value 'nocolon' for flag -H"),
    ("hey -z 1m", "a http(s) URL is required"),
    ("hey -z", "flag needs an argument: -z"),
])
def test_hey_refuses_what_it_cannot_or_should_not_run(cmd: str, why: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_hey(cmd)
    assert why in str(e.value)


async def test_hey_sends_the_requests_with_method_headers_body_and_the_service_host() -> None:
    async with Target() as t:
        async def resolve(ns: str, name: str) -> str | None:
            return "127.0.0.1" if (ns, name) == ("test", "podinfo-canary") else None

        a = parse_hey(f"hey -n 12 -c 3 -m PUT -H 'X-Test: yes' -d hello http://podinfo-canary.test:{t.port}/p")
        res = await run_hey(a, resolve)
    assert res.statuses == {200: 12} and res.errors == 0
    assert len(t.hits) == 12
    assert set(t.hits) == {("PUT", "/p", f"podinfo-canary.test:{t.port}", "yes", b"hello")}


async def test_hey_rate_and_duration_bound_the_load() -> None:
    async with Target() as t:
        res = await run_hey(parse_hey(f"hey -z 1s -q 5 -c 2 http://127.0.0.1:{t.port}/"))
    # 2 workers at 5/s for 1 s: about 10 requests; never the hundreds an unthrottled loop would send
    assert 4 <= len(t.hits) <= 14
    assert res.statuses[200] == len(t.hits)


async def test_cmd_task_is_accepted_run_in_the_background_and_not_doubled(api: httpx.AsyncClient,
                                                                          lt: LoadTester) -> None:
    async with Target() as t:
        cmd = f"hey -z 1s -q 4 -c 1 http://127.0.0.1:{t.port}/"
        r = await api.post("/flagger-loadtester/", json=hook(cmd, logCmdOutput="true"))
        assert r.status_code == 202 and r.text == ""
        # the same command for the same canary while it runs: skipped, as Flagger's TaskRunner does
        assert (await api.post("/flagger-loadtester/", json=hook(cmd))).status_code == 202
        assert lt.running == 1
        while lt.running:
            await asyncio.sleep(0.05)
    assert lt.runs == 1
    assert 2 <= len(t.hits) <= 7
    assert lt.last["podinfo.test"].startswith(f"{len(t.hits)} requests in")


async def test_bash_hey_runs_synchronously_and_returns_output_when_asked(api: httpx.AsyncClient) -> None:
    async with Target() as t:
        r = await api.post("/flagger-loadtester/", json=hook(f"hey -n 5 -c 1 http://127.0.0.1:{t.port}/", "bash",
                                                             returnCmdOutput="true"))
        assert r.status_code == 200, r.text
        assert len(t.hits) == 5
        assert "[200] 5 responses" in r.text


async def test_shell_commands_are_refused_unless_allowed(api: httpx.AsyncClient, lt: LoadTester,
                                                         tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    r = await api.post("/flagger-loadtester/", json=hook(f"touch {marker}", "bash"))
    assert r.status_code == 400
    assert "releases.loadtester.allow_shell" in r.text
    assert (await api.post("/flagger-loadtester/", json=hook(f"touch {marker}"))).status_code == 400
    assert not marker.exists()
    lt.configure(LoadTesterSettings(allow_shell=True))
    r = await api.post("/flagger-loadtester/", json=hook(f"touch {marker} && echo done", "bash",
                                                         returnCmdOutput="true"))
    assert (r.status_code, r.text) == (200, "done\n")
    assert marker.exists()
    r = await api.post("/flagger-loadtester/", json=hook("exit 3", "bash"))
    assert r.status_code == 500 and "exit status 3" in r.text


@pytest.mark.parametrize(("body", "status", "text"), [
    (b"not json", 400, ""),
    (b'{"name": "a", "namespace": "b"}', 400, "metadata not found in payload"),
    (b'{"name": "a", "namespace": "b", "metadata": {"type": "helm", "cmd": "x"}}', 400, "unknown task type helm"),
    (b'{"name": "a", "namespace": "b", "metadata": {"type": "cmd"}}', 400, "cmd not found in metadata"),
    (b'{"name": "a", "namespace": "b", "metadata": {"cmd": 1}}', 400, ""),
])
async def test_bad_payloads_get_flaggers_answers(api: httpx.AsyncClient, lt: LoadTester, body: bytes, status: int,
                                                 text: str) -> None:
    r = await api.post("/flagger-loadtester/", content=body)
    assert (r.status_code, r.text) == (status, text)
    assert lt.running == 0


async def test_gates_open_and_close_per_canary_and_persist(api: httpx.AsyncClient, lt: LoadTester) -> None:
    p = {"name": "podinfo", "namespace": "test"}
    other = {"name": "podinfo", "namespace": "prod"}
    assert (await api.post("/flagger-loadtester/gate/approve", json=p)).status_code == 200
    assert (await api.post("/flagger-loadtester/gate/halt", json=p)).status_code == 403
    for path in ("gate", "rollback"):
        r = await api.post(f"/flagger-loadtester/{path}/check", json=p)
        assert (r.status_code, r.text) == (403, "Forbidden")  # closed until opened
        assert (await api.post(f"/flagger-loadtester/{path}/open", json=p)).status_code == 202
        r = await api.post(f"/flagger-loadtester/{path}/check", json=p)
        assert (r.status_code, r.text) == (200, "Approved")
        assert (await api.post(f"/flagger-loadtester/{path}/check", json=other)).status_code == 403
    assert (await api.post("/flagger-loadtester/gate/close", json=p)).status_code == 202
    assert (await api.post("/flagger-loadtester/gate/check", json=p)).status_code == 403
    assert (await api.post("/flagger-loadtester/rollback/check", json=p)).status_code == 200  # its own key
    # kept in the store: a second load tester (another server, a restart) sees the same gates
    again = LoadTester(LoadTesterSettings(), GateStore(lt.gates.store))
    assert await again.gates.is_open("rollback.podinfo.test") and not await again.gates.is_open("podinfo.test")
    assert (await api.post("/flagger-loadtester/gate/check", content=b"{")).status_code == 400
    assert isinstance(lt.changes, Changes)
    assert [e.summary for e in lt.changes.events] == [
        "Canary podinfo.test: load tester gate opened", "Canary podinfo.test: load tester rollback gate opened",
        "Canary podinfo.test: load tester gate closed"]
    assert {e.service for e in lt.changes.events} == {"test/podinfo"}


async def test_namespace_regexp_restricts_canaries(api: httpx.AsyncClient, lt: LoadTester) -> None:
    lt.configure(LoadTesterSettings(namespace_regexp="^prod-"))
    r = await api.post("/flagger-loadtester/gate/open", json={"name": "a", "namespace": "test"})
    assert (r.status_code, r.text) == (403, "Forbidden")
    assert (await api.post("/flagger-loadtester/gate/open", json={"name": "a", "namespace": "prod-1"})).status_code \
        == 202
    assert (await api.post("/flagger-loadtester/", json=hook("hey -n 1 -c 1 http://x/"))).status_code == 403
