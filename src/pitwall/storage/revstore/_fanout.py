"""In-process watch fan-out over a history: bounded per-watcher queues, no gap, no repeat.

A backend that applies writes itself (SQLite; PostgreSQL's follower) hands
each committed revision's events to ``FanOut.publish`` on the event loop, in
revision order, and gives ``FanOut`` a function that reads events of a
revision range from its history. ``FanOut.watch`` then:

1. subscribes the watcher, noting the last revision published so far;
2. reads history from the start revision up to that one, in pages;
3. follows the live queue, which holds exactly the revisions after it.

Each queue is bounded. A watcher that falls more than ``queue_limit``
revisions behind drops its queue and goes back to step 1 from the revision
after the last one it delivered (etcd's "unsynced watcher"), so a slow
consumer costs no memory and sees no gap; only if compaction has overtaken
it does the history read raise ``Compacted``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field

from . import Event
from ._common import prefix_bounds

__all__ = ["FanOut", "Watcher"]

HISTORY_PAGE_REVS = 500  # revisions per catch-up read


@dataclass(eq=False)
class Watcher:
    """One watch: its key range, whether it wants previous values, its bounded queue."""

    lo: bytes
    hi: bytes | None
    prev_kv: bool
    limit: int
    pending: deque[list[Event]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lagged: bool = False


# (watcher, first revision, last revision) -> that range's events under the watcher's keys, per revision
HistoryReader = Callable[[Watcher, int, int], Awaitable[list[list[Event]]]]


class FanOut:
    """The watchers of one store."""

    def __init__(self, read_history: HistoryReader, queue_limit: int = 1000) -> None:
        self.read_history = read_history
        self.queue_limit = queue_limit
        self.published = 0  # the last revision handed to publish()
        self._watchers: set[Watcher] = set()
        self._closed = False

    def start(self, revision: int) -> None:
        """Begin at ``revision`` (the store's current one)."""
        self.published = revision
        self._closed = False

    def close(self) -> None:
        """End every watch (their iterators finish)."""
        self._closed = True
        for w in list(self._watchers):
            w.wake.set()

    def publish(self, revision: int, events: list[tuple[bytes, Event]]) -> None:
        """Offer one revision's events (with their encoded keys) to every watcher; call in order."""
        bare: list[Event] | None = None  # the events without prev_kv, built once for every watcher not asking
        for w in self._watchers:
            if w.lagged:
                continue
            lo, hi = w.lo, w.hi  # the watcher's keys (no method call: every write runs this per watcher)
            hits = [i for i, (kb, _) in enumerate(events) if kb >= lo and (hi is None or kb < hi)]
            if not hits:
                continue
            if w.prev_kv:
                mine = [events[i][1] for i in hits]
            else:
                if bare is None:
                    bare = [ev if ev.prev_kv is None else Event(ev.type, ev.kv) for _, ev in events]
                mine = [bare[i] for i in hits]
            if len(w.pending) >= w.limit:
                w.lagged = True  # catch up from history instead of growing memory
                w.pending.clear()
            else:
                w.pending.append(mine)
            w.wake.set()
        self.published = max(self.published, revision)

    def advance(self, revision: int) -> None:
        """Note a committed revision that had no events (e.g. a lease grant)."""
        self.published = max(self.published, revision)

    async def watch(self, prefix: str, start_revision: int, prev_kv: bool) -> AsyncGenerator[list[Event], None]:
        """Events under ``prefix`` from ``start_revision`` (0: after the last published), per revision."""
        lo, hi = prefix_bounds(prefix)
        w = Watcher(lo, hi, prev_kv, self.queue_limit)
        next_rev = start_revision
        try:
            while not self._closed:
                # Subscribe first, then read history up to what was published before the
                # subscription: together they cover every revision exactly once.
                w.pending.clear()
                w.lagged = False
                self._watchers.add(w)
                known = self.published
                if next_rev <= 0:
                    next_rev = known + 1
                while next_rev <= known:
                    upto = min(known, next_rev + HISTORY_PAGE_REVS - 1)
                    for batch in await self.read_history(w, next_rev, upto):
                        yield batch
                    next_rev = upto + 1
                while not self._closed and not w.lagged:
                    if not w.pending:
                        w.wake.clear()
                        await w.wake.wait()
                        continue
                    batch = w.pending.popleft()
                    rev = batch[0].kv.mod_revision
                    if rev < next_rev:  # a future start_revision: skip what precedes it
                        continue
                    next_rev = rev + 1
                    yield batch
                self._watchers.discard(w)
        finally:
            self._watchers.discard(w)
