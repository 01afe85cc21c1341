"""Background tasks under supervision: kept, awaited on stop, and reported when they die.

Every component's long-lived loops (store maintenance, notification
delivery, later controllers, the node runtime and the proxy) run through a
``Supervisor``: it holds a reference to each task (asyncio keeps only weak
ones), cancels and awaits all of them on ``stop`` so no task outlives its
component, and records a loop that ends on its own — by an exception or by
returning — so ``/-/ready`` turns false instead of the server limping on
with a dead loop. Short-lived jobs (one delivery) are spawned with
``loop=False``: their ending is normal; an exception is logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["Flusher", "Supervisor"]

_CANCEL_EVERY_S = 1.0


class Supervisor:
    """The tasks of one component."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self.failures: list[str] = []  # loops that died: "name: error"
        self.job_errors = 0

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str, loop: bool = True) -> asyncio.Task[Any]:
        """Run ``coro`` as a task of this component; ``loop`` says it should run until stop."""
        if self._stopping:
            coro.close()
            raise RuntimeError(f"{self.owner} is stopping; cannot start {name}")
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.owner}/{name}")
        self._tasks.add(task)
        if loop:
            self._loops.add(task)
        task.add_done_callback(self._done)
        return task

    @property
    def healthy(self) -> bool:
        """False once a long-lived loop has ended on its own."""
        return not self.failures

    @property
    def running(self) -> int:
        return len(self._tasks)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        is_loop = task in self._loops
        self._loops.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if is_loop and not self._stopping:
            why = f"{type(exc).__name__}: {exc}" if exc is not None else "returned"
            self.failures.append(f"{task.get_name()}: {why}")
            log.error("background loop died", extra={"task": task.get_name(), "error": why},
                      exc_info=exc)
        elif exc is not None:
            self.job_errors += 1
            log.error("background job failed", extra={"task": task.get_name()}, exc_info=exc)

    async def stop(self) -> None:
        """Cancel every task and wait until each has ended.

        A task may swallow one cancellation (in Python 3.11 a cancel landing as
        a timeout expires surfaces as TimeoutError), so cancelling repeats
        until it ends.
        """
        self._stopping = True
        try:
            while pending := [t for t in self._tasks if not t.done()]:
                for t in pending:
                    t.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.wait(pending, timeout=_CANCEL_EVERY_S)
        finally:
            self._stopping = False


class Flusher:
    """A component that buffers and writes out every ``interval_s`` on a supervised task, and once more when it
    stops (what it cannot write then is lost, as a crash would lose it). Subclasses set ``name``, ``interval_s``
    and ``tasks`` and define ``flush``."""

    name: str
    interval_s: float
    tasks: Supervisor

    async def flush(self) -> int:
        """Write what is buffered; how many items were written."""
        raise NotImplementedError

    async def start(self) -> None:
        self.tasks.spawn(self._loop(), name="flush")

    async def stop(self) -> None:
        await self.tasks.stop()
        with contextlib.suppress(Exception):
            await self.flush()

    @property
    def healthy(self) -> bool:
        return self.tasks.healthy

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.flush()
            except Exception:  # the next round tries again; a failing write must not end the loop
                log.exception("%s: flush failed", self.name)
