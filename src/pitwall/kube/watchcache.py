"""The watch cache: the store's current Kubernetes objects and recent events in memory, as kube-apiserver's Cacher.

One ``WatchCache`` per API server (``KubeAPI`` runs it) follows the store with ONE watch, started
at the revision of an initial range read of ``/registry/``. It keeps

* every object key under ``/registry/`` with its stored ``KeyValue`` (the
  bytes as stored, so an encrypted Secret stays sealed here; decoded objects
  and their JSON live only in ``ObjectCache``, which the list path shares),
  in key order, so a list is a bisect and a slice;
* the revision it has applied (every event up to it, none after);
* a ring of the last ``capacity`` revisions' events (with previous values),
  so a watch from a recent revision is served without a store watch of its own.

The watch covers the whole key space, not only ``/registry/``: the store's
revision advances only with events (etcd's rule, and SQLite's and
PostgreSQL's here), so seeing every event is how the cache knows it has
caught up with a revision read from the store (upstream asks etcd for a
progress notification instead; our store protocol has none). Events on
other keys only advance the revision.

Consistent lists (``resourceVersion=""``) read the store's current revision,
wait (bounded) for the cache to reach it and are then served from memory:
read-your-writes holds, including for writes made by another server on the
same etcd, since the cache follows the store rather than this server's verbs.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from pitwall.storage.revstore import Event, KeyValue, RangeResult, RevStore

__all__ = ["WatchCache"]

log = logging.getLogger(__name__)

PREFIX = "/registry/"
DEFAULT_CAPACITY = 1024  # revisions of events kept (upstream's ring starts at 100 and grows to 100k events)
DEFAULT_WAIT_S = 1.0  # how long a consistent read waits for the cache before reading the store
SUB_QUEUE = 1000  # revisions a cache watcher may fall behind before it resumes from the ring (or the store)
_RETRY_S = 1.0


@dataclass(eq=False)
class _Sub:
    """One watcher of the cache: its prefix and a bounded queue of that prefix's events per revision."""

    prefix: str
    pending: deque[list[Event]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    overflow: bool = False  # fell behind (or the cache restarted): resume from the last revision delivered


class WatchCache:
    """Objects under ``/registry/`` and a ring of recent events, fed by one store watch (``run``, which ``KubeAPI``
    runs under its ``Supervisor``). Reads are synchronous snapshots: take what you need before the next ``await``."""

    def __init__(self, store: RevStore, *, capacity: int = DEFAULT_CAPACITY, wait_s: float = DEFAULT_WAIT_S) -> None:
        self.store = store
        self.capacity = max(1, capacity)
        self.wait_s = wait_s
        self.revision = 0  # every event up to here is applied
        self.ready = False
        self._kvs: dict[str, KeyValue] = {}
        self._keys: list[str] = []  # sorted
        self._ring: deque[list[Event]] = deque()  # /registry/ events per revision, oldest first
        self._ring_start = 0  # the ring holds every /registry/ event after this revision
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._subs: set[_Sub] = set()
        self._closed = False
        self.resyncs = 0  # initial range reads done (1 unless the store watch failed)
        # reads answered from memory, and those handed to the store (Resources counts them)
        self.lists_served = self.lists_delegated = self.watches_served = self.watches_delegated = 0

    # ---- lifecycle -----------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Follow the store until cancelled or the store stops (run it under the API's ``Supervisor``);
        reads fall back to the store until the initial range read is in."""
        self._closed = False
        try:
            await self._run()
        finally:
            self.close()

    def close(self) -> None:
        """Stop serving: cache watchers end, as store watches end when the store stops."""
        self._closed = True
        self.ready = False
        self._drop_subs()

    async def _run(self) -> None:
        while not self._closed:
            try:
                res = await self.store.range(PREFIX)
                self._reset(res)
                async for batch in self.store.watch("", start_revision=res.revision + 1, prev_kv=True):
                    self._apply(batch)
                return  # the store stopped
            except asyncio.CancelledError:
                raise
            except Exception:  # a compacted or broken store watch: start over from a fresh range read
                log.exception("kube: the watch cache lost the store's watch; reloading")
                self.ready = False
                self._drop_subs()
                await asyncio.sleep(_RETRY_S)

    def _reset(self, res: RangeResult) -> None:
        self._kvs = {kv.key: kv for kv in res.kvs}
        self._keys = sorted(self._kvs)
        self._ring.clear()
        self._ring_start = self.revision = res.revision
        self.resyncs += 1
        self._drop_subs()  # they resume from their last revision: the ring no longer has what they missed
        self.ready = True
        self._wake_waiters()

    def _apply(self, batch: list[Event]) -> None:
        if not batch:
            return
        mine = [ev for ev in batch if ev.kv.key.startswith(PREFIX)]
        for ev in mine:
            key = ev.kv.key
            if ev.type == "PUT":
                if key not in self._kvs:
                    bisect.insort(self._keys, key)
                self._kvs[key] = ev.kv
            elif self._kvs.pop(key, None) is not None:
                del self._keys[bisect.bisect_left(self._keys, key)]
        self.revision = max(self.revision, batch[-1].kv.mod_revision)
        if mine:
            self._ring.append(mine)
            while len(self._ring) > self.capacity:
                self._ring_start = self._ring.popleft()[0].kv.mod_revision
            for sub in self._subs:
                self._offer(sub, mine)
        self._wake_waiters()

    @staticmethod
    def _offer(sub: _Sub, batch: list[Event]) -> None:
        evs = [ev for ev in batch if ev.kv.key.startswith(sub.prefix)]
        if not evs or sub.overflow:
            return
        if len(sub.pending) >= SUB_QUEUE:
            sub.overflow = True  # a slow watcher costs no memory: it re-reads the ring or the store
            sub.pending.clear()
        else:
            sub.pending.append(evs)
        sub.wake.set()

    def _drop_subs(self) -> None:
        for sub in self._subs:
            sub.overflow = True
            sub.pending.clear()
            sub.wake.set()
        self._subs.clear()

    # ---- reads ---------------------------------------------------------------------------------------------
    async def wait_fresh(self, revision: int) -> bool:
        """Whether the cache reached ``revision`` within ``wait_s`` (False: read the store instead)."""
        if self.ready and self.revision >= revision:
            return True
        if self._closed:
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (revision, fut)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(fut, self.wait_s)
            return self.ready and self.revision >= revision
        except TimeoutError:
            log.debug("kube: the watch cache is at %d, not %d, after %.1f s", self.revision, revision, self.wait_s)
            return False
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def _wake_waiters(self) -> None:
        if not self._waiters or not self.ready:
            return
        for rev, fut in self._waiters:
            if rev <= self.revision and not fut.done():
                fut.set_result(None)

    def range(self, prefix: str, start: str | None = None) -> list[KeyValue]:
        """The current ``KeyValue``s under ``prefix`` in key order, from ``start`` (inclusive) when given, as of
        ``self.revision`` (read both before awaiting anything)."""
        lo = prefix if start is None or start < prefix else start
        keys = self._keys
        i = bisect.bisect_left(keys, lo)
        out: list[KeyValue] = []
        kvs = self._kvs
        while i < len(keys) and keys[i].startswith(prefix):
            out.append(kvs[keys[i]])
            i += 1
        return out

    def covers(self, revision: int) -> bool:
        """Whether every event after ``revision`` is (or will be) served from the ring."""
        return self.ready and self._ring_start <= revision

    async def events(self, prefix: str, after: int) -> AsyncIterator[list[Event]]:
        """Events under ``prefix`` after revision ``after``, per revision, with previous values: from the ring
        while it covers them, else from the store's own watch (which raises ``Compacted`` when too old)."""
        next_rev = after + 1
        while True:
            if self._closed:
                return
            if not self.covers(next_rev - 1):
                async for batch in self.store.watch(prefix, start_revision=next_rev, prev_kv=True):
                    yield batch
                return
            # Subscribe and copy the ring with no await in between: together they hold every revision once.
            sub = _Sub(prefix)
            self._subs.add(sub)
            backlog = [evs for b in self._ring if b[0].kv.mod_revision >= next_rev
                       for evs in [[ev for ev in b if ev.kv.key.startswith(prefix)]] if evs]
            try:
                for b in backlog:
                    next_rev = b[0].kv.mod_revision + 1
                    yield b
                while not sub.overflow:
                    if not sub.pending:
                        sub.wake.clear()
                        await sub.wake.wait()
                        continue
                    b = sub.pending.popleft()
                    rev = b[0].kv.mod_revision
                    if rev < next_rev:
                        continue
                    next_rev = rev + 1
                    yield b
            finally:
                self._subs.discard(sub)

    def stats(self) -> dict[str, int]:
        """Objects held, their stored bytes, revisions in the ring, open cache watchers."""
        return {"objects": len(self._kvs), "bytes": sum(len(kv.value) for kv in self._kvs.values()),
                "ring": len(self._ring), "watchers": len(self._subs), "revision": self.revision,
                "lists_served": self.lists_served, "lists_delegated": self.lists_delegated,
                "watches_served": self.watches_served, "watches_delegated": self.watches_delegated}
