"""The controller's webhook client: a hook whose URL names this server's own load tester is served in process
(so it works behind ``auth_tokens`` with no credential at all), every other URL goes over the network exactly as
Flagger sends it: Flagger's JSON payload and headers, no Authorization header, no token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from pitwall.releases.loadtester import PREFIX, GateStore, LoadTester, loadtester_router
from pitwall.releases.model import CanaryView
from pitwall.releases.settings import LoadTesterSettings
from pitwall.releases.webhooks import HttpFactory, WebhookError, call_webhook, default_http, in_process_http
from pitwall.storage.revstore.sqlite import SqliteRevStore
from tests.conftest import free_port
from tests.releases.harness import Changes, Receiver

pytestmark = pytest.mark.timeout(60)
CANARY = CanaryView({"metadata": {"name": "podinfo", "namespace": "test"}, "spec": {}, "status": {}})


@pytest.fixture
async def lt(tmp_path: Path) -> AsyncIterator[LoadTester]:
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    tester = LoadTester(LoadTesterSettings(allow_shell=True), GateStore(store), changes=Changes())
    try:
        yield tester
    finally:
        await tester.stop()
        await store.stop()


def _http(lt: LoadTester, port: int) -> HttpFactory:
    app = FastAPI()
    app.include_router(loadtester_router(lt))
    return in_process_http(app, [f"http://127.0.0.1:{port}", f"http://localhost:{port}"], PREFIX)


def hook(url: str, **meta: str) -> dict[str, Any]:
    return {"name": "load-test", "type": "pre-rollout", "url": url, "timeout": "5s", "metadata": meta}


async def test_own_load_tester_is_called_in_process(lt: LoadTester) -> None:
    """Nothing listens on the server's port here: the calls can only have been served in process."""
    port = free_port()
    http = _http(lt, port)
    async with Receiver() as target:
        cmd = f"hey -n 4 -c 2 -m POST -d {{}} {target.url}/"
        await call_webhook(http, CANARY, "Progressing", hook(f"http://localhost:{port}{PREFIX}/", type="bash",
                                                             cmd=cmd))
        assert len(target.got) == 4  # bash: run before the answer
    # Flagger's answers come through: a closed gate refuses, an opened one approves
    gate = hook(f"http://127.0.0.1:{port}{PREFIX}/gate/check")
    with pytest.raises(WebhookError, match="Forbidden"):
        await call_webhook(http, CANARY, "Progressing", gate)
    await lt.gates.set("podinfo.test", True)
    await call_webhook(http, CANARY, "Progressing", gate)
    with pytest.raises(WebhookError, match="unknown task type helm"):
        await call_webhook(http, CANARY, "Progressing", hook(f"http://127.0.0.1:{port}{PREFIX}/", type="helm",
                                                             cmd="helm ls"))


async def test_in_process_call_keeps_the_hooks_timeout(lt: LoadTester) -> None:
    port = free_port()
    slow = hook(f"http://127.0.0.1:{port}{PREFIX}/", type="bash", cmd="sleep 10")
    slow["timeout"] = "300ms"
    with pytest.raises(WebhookError, match=r"no answer within 0\.3s"):
        await call_webhook(_http(lt, port), CANARY, "Progressing", slow)


async def test_foreign_url_gets_exactly_what_flagger_sends_and_no_token(lt: LoadTester) -> None:
    """Another host, and another path of this server: over the network, the same request the plain client sends,
    with no Authorization header (there is no pitwall credential to leak)."""
    async with Receiver() as foreign, Receiver() as own:
        own_port = int(own.url.rsplit(":", 1)[1])
        http = _http(lt, own_port)  # `own` stands for this server, listening: its other paths go to it
        for factory in (http, default_http):
            await call_webhook(factory, CANARY, "Progressing", hook(f"{foreign.url}/hook", type="cmd",
                                                                    cmd="hey http://x/"))
        await call_webhook(http, CANARY, "Progressing", hook(f"http://127.0.0.1:{own_port}/other"))
    (p1, h1, b1), (p2, h2, b2) = foreign.got
    assert (p1, b1) == (p2, b2) == ("/hook", b1)
    assert h1 == h2  # the same headers as the plain webhook client's
    assert "authorization" not in h1 and "cookie" not in h1
    assert h1["content-type"] == "application/json"
    assert b1 == {"name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": b1["checksum"],
                  "metadata": {"type": "cmd", "cmd": "hey http://x/"}}
    assert [p for p, _, _ in own.got] == ["/other"]
    assert "authorization" not in own.got[0][1]
    assert lt.runs == 0  # the load tester ran nothing for them
