"""The change-event stream over the SQLite state store."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from pitwall.incidents import ChangeEvent, ChangeLog
from pitwall.storage.revstore.sqlite import SqliteRevStore

pytestmark = pytest.mark.timeout(30)


async def test_record_between_follow_prune(tmp_path: Path) -> None:
    store = SqliteRevStore(tmp_path / "s.db", compact_interval_s=None)
    await store.start()
    try:
        log = ChangeLog(store)
        seen: list[ChangeEvent] = []

        async def follow() -> None:
            async for ev in log.follow():
                seen.append(ev)
                if len(seen) == 3:
                    return

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.05)
        for i, svc in enumerate(["default/web", "default/api", "default/web"]):
            await log.record(ChangeEvent("deploy", f"rollout {i}", "deployment-controller", service=svc,
                                         ts_ns=1_000 + i, details={"revision": i}))
        await asyncio.wait_for(task, 5)
        assert [e.summary for e in seen] == ["rollout 0", "rollout 1", "rollout 2"]
        assert [e.summary for e in await log.between(0, 10_000)] == ["rollout 0", "rollout 1", "rollout 2"]
        assert [e.details["revision"] for e in await log.between(1_001, 10_000, service="default/web")] == [2]
        assert await log.between(1_000, 1_001) == [seen[0]]
        assert len(await log.between(0, 10_000, limit=2)) == 2
        with pytest.raises(ValueError, match="unknown change kind"):
            await log.record(ChangeEvent("nonsense", "x", "y"))  # type: ignore[arg-type]
        assert await log.prune(1_002) == 2
        assert [e.summary for e in await log.between(0, 10_000)] == ["rollout 2"]
    finally:
        await store.stop()


def test_staged_event_is_a_copy_and_its_json_keeps_the_stored_shape(tmp_path: Path) -> None:
    """The stored bytes are the event's fields in order, ``links`` as a list (what older records hold);
    the staged event does not share the caller's details."""
    details = {"key": "a", "nested": {"x": [1, 2]}}
    event = ChangeEvent(kind="config", summary="s", source="consul-kv", who="w", details=details, links=("l1",))
    stored, op = ChangeLog(SqliteRevStore(tmp_path / "s.db")).stage(event)
    assert op.value == orjson.dumps({"kind": "config", "summary": "s", "source": "consul-kv", "service": "",
                                     "who": "w", "ts_ns": stored.ts_ns, "details": details, "links": ["l1"],
                                     "id": stored.id})
    assert stored.ts_ns > 0 and len(stored.id) == 16 and ChangeEvent.from_json(op.value) == stored
    details["nested"]["x"].append(3)  # type: ignore[index]
    assert stored.details["nested"] == {"x": [1, 2]}


def test_stage_op_writes_what_stage_writes(tmp_path: Path) -> None:
    """``stage_op`` (no copy of the details: the bytes are fixed when built) stores the same shape, checks
    the kind, and gives each event its own id."""
    log = ChangeLog(SqliteRevStore(tmp_path / "s.db"))
    event = ChangeEvent(kind="config", summary="s", source="consul-kv", who="w", details={"key": "a"})
    ops = [log.stage_op(event) for _ in range(2)]
    stored = [ChangeEvent.from_json(op.value) for op in ops]
    assert all(s == replace(event, ts_ns=s.ts_ns, id=s.id) and s.ts_ns > 0 for s in stored)
    assert [op.key for op in ops] == [log._key(s.ts_ns, s.id) for s in stored] and stored[0].id != stored[1].id
    with pytest.raises(ValueError, match="unknown change kind"):
        log.stage_op(replace(event, kind="nope"))  # type: ignore[arg-type]


def test_stamping_keeps_every_field(tmp_path: Path) -> None:
    """An event that already has a time and an id is stored as given, every field included (the stamp
    builds a new event field by field)."""
    event = ChangeEvent(kind="deploy", summary="s", source="src", service="ns/web", who="w", ts_ns=7,
                        details={"a": 1}, links=("http://x",), id="0123456789abcdef")
    stored, _ = ChangeLog(SqliteRevStore(tmp_path / "s.db")).stage(event)
    assert stored == event
    assert ChangeEvent.from_json(ChangeLog(SqliteRevStore(tmp_path / "s.db")).stage_op(event).value) == event
