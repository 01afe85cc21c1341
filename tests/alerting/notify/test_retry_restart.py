"""A receiver that is down: notifications queue, retry with backoff, survive a restart, then arrive."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pitwall.storage.state import StateStore, sqlite_url
from tests.alerting.notify.helpers import Receiver, webhook_config
from tests.conftest import free_port, start_pitwall_process, stop_pitwall_process, wait_ready


async def test_retries_until_the_receiver_recovers(am_app: Any, receiver: Receiver) -> None:
    import asyncio

    receiver.fail_with = 503
    async with am_app(webhook_config(receiver.url, group_wait="50ms"), retry_initial="100ms", retry_max="200ms") as c:
        await c.post("/api/v2/alerts", json=[{"labels": {"alertname": "Retry"}}])
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        while receiver.attempts < 3 and loop.time() < end:
            await asyncio.sleep(0.05)
        assert receiver.attempts >= 3 and receiver.bodies() == []
        receiver.fail_with = None
        while not receiver.bodies() and loop.time() < end + 10:
            await asyncio.sleep(0.05)
        assert [b["groupLabels"] for b in receiver.bodies()] == [{"alertname": "Retry"}]
        pipeline = c.app.state.components.notifications.pipeline  # type: ignore[attr-defined]
        # the queued row goes once the delivery's answer is handled, just after the receiver saw the body
        while pipeline.state.count_pending() and loop.time() < end + 20:
            await asyncio.sleep(0.05)
        assert pipeline.state.count_pending() == 0


@pytest.mark.slow
def test_queued_notification_survives_restart(tmp_path: Path) -> None:
    hook_port = free_port()
    am = tmp_path / "alertmanager.yml"
    am.write_text(yaml.safe_dump(webhook_config(f"http://127.0.0.1:{hook_port}/hook", group_wait="50ms")))
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text(yaml.safe_dump({"alertmanager_config": str(am), "storage": {"fsync": False},
                                   "notifications": {"retry_initial": "200ms", "retry_max": "500ms"}}))
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_pitwall_process(data, port, config=cfg)
    try:
        wait_ready(url, proc=proc)
        r = httpx.post(url + "/api/v2/alerts", json=[{"labels": {"alertname": "Persisted", "job": "x"}}])
        assert r.status_code == 200
        # Wait until the notification has failed at least once (the receiver is not listening).
        store = StateStore(sqlite_url(data))
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                rows = store.list_pending()
                if rows and rows[0].attempts >= 1:
                    break
                time.sleep(0.05)
            assert rows and rows[0].attempts >= 1 and "hook" not in rows[0].last_error
        finally:
            store.close()
    finally:
        stop_pitwall_process(proc)

    receiver = Receiver(hook_port).start()
    proc = start_pitwall_process(data, port, config=cfg)
    try:
        wait_ready(url, proc=proc)
        bodies = receiver.wait_for(lambda got: len(got) >= 1, timeout=30)
        assert bodies[0]["groupLabels"] == {"alertname": "Persisted"}
        assert bodies[0]["alerts"][0]["labels"] == {"alertname": "Persisted", "job": "x"}
    finally:
        stop_pitwall_process(proc)
        receiver.stop()
    store = StateStore(sqlite_url(data))
    try:
        assert store.list_pending() == []
        assert [r.group_key for r in store.load_nflog()] == ['{}:{alertname="Persisted"}']
    finally:
        store.close()
