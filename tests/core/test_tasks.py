"""The background-task supervisor: references kept, everything awaited on stop, deaths reported."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from pitwall.core.tasks import Supervisor


async def _forever() -> None:
    await asyncio.Event().wait()


async def test_stop_cancels_and_awaits_every_task() -> None:
    sup = Supervisor("c")
    sup.spawn(_forever(), name="loop")
    sup.spawn(_forever(), name="job", loop=False)
    await asyncio.sleep(0)
    assert sup.running == 2
    await sup.stop()
    assert sup.running == 0 and sup.healthy
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("c/")]


@pytest.mark.timeout(20)
async def test_stop_cancels_again_a_task_that_swallows_one_cancel() -> None:
    ended = asyncio.Event()

    async def stubborn() -> None:
        # Swallowed, as a cancel turned TimeoutError by asyncio.timeout would be.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()

    sup = Supervisor("c")
    sup.spawn(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    await sup.stop()
    assert ended.is_set() and sup.running == 0


async def test_a_loop_that_dies_makes_the_component_unhealthy() -> None:
    async def boom() -> None:
        raise ValueError("disk gone")

    async def quits() -> None:
        return

    sup = Supervisor("store")
    sup.spawn(boom(), name="maintenance")
    sup.spawn(quits(), name="flusher")
    await asyncio.sleep(0.01)
    assert not sup.healthy
    assert sorted(sup.failures) == ["store/flusher: returned", "store/maintenance: ValueError: disk gone"]


async def test_a_failed_job_is_counted_not_fatal() -> None:
    async def bad() -> None:
        raise RuntimeError("one delivery")

    sup = Supervisor("n")
    sup.spawn(bad(), name="deliver-1", loop=False)
    await asyncio.sleep(0.01)
    assert sup.healthy and sup.job_errors == 1


async def test_stopped_supervisor_can_start_again_but_refuses_during_stop() -> None:
    sup = Supervisor("c")
    await sup.stop()
    t = sup.spawn(_forever(), name="again")
    await sup.stop()
    assert t.cancelled()
