"""The shared controller machinery: informers, a work queue, a runner per controller, leader gating.

A controller is a ``Reconciler``: it names the kind it reconciles (its
*primary*), the kinds it also watches (*secondaries*), maps an event on any
of them to the primary keys (``"namespace/name"``) it concerns, and
reconciles one key at a time — level-triggered: read what is stored, act
through the ``KubeClient``, write status. A ``ControllerRunner`` drives one
reconciler as client-go's controllers run:

- an informer per kind lists, then watches from the list's resourceVersion;
  a 410 Gone (the version was compacted) or any watch failure relists, so no
  change is ever missed — at worst a key is reconciled once more;
- a de-duplicating work queue: a key added twice while it waits runs once, a
  key never runs in two workers at once (added while running, it runs again
  afterwards);
- a reconcile that raises is retried after a per-key exponential back-off
  (5 ms doubling to 1000 s, client-go's default item limiter); a success
  forgets the failures; a returned number of seconds requeues the key after
  that delay (the earliest pending delay wins);
- every ``resync_s`` all primary objects are queued again.

A ``ControllerManager`` runs its runners only while this server leads the
election (``pitwall.storage.revstore.election.Election``), so several
pitwall servers sharing an etcd reconcile once. ``record_event`` writes the
core/v1 Events that make each decision visible in ``kubectl get events``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from pitwall.core.tasks import Supervisor
from pitwall.kube import AlreadyExists, Conflict, Gone, KubeClient, NotFoundError
from pitwall.storage.revstore.election import Election

__all__ = [
    "ControllerManager",
    "ControllerRunner",
    "RateLimiter",
    "Reconciler",
    "WorkQueue",
    "object_key",
    "record_event",
    "split_key",
]

log = logging.getLogger(__name__)
Obj = dict[str, Any]

BASE_DELAY_S = 0.005
MAX_DELAY_S = 1000.0
_LEADERSHIP_POLL_S = 1.0
_RELIST_PAUSE_S = 1.0
_RESUME_PAUSE_S = 0.1  # after a failed list or a watch that failed for another reason than Gone


class Reconciler(Protocol):
    """One controller's logic; the runner handles queueing, retries, watches and leadership."""

    name: str  # e.g. "replicaset-controller": the Events' source.component
    primary: tuple[str, str]  # (apiVersion, kind) reconciled, e.g. ("apps/v1", "ReplicaSet")
    secondary: Sequence[tuple[str, str]]  # other kinds watched, e.g. [("v1", "Pod")]

    def keys_for(self, api_version: str, kind: str, obj: dict[str, Any]) -> list[str]:
        """The primary keys ("namespace/name") an event on ``obj`` (of ``kind``) concerns."""
        ...

    async def reconcile(self, key: str) -> float | None:
        """Make ``key`` as desired; return seconds until it must run again, or None.

        Raising retries the key with exponential back-off.
        """
        ...


def object_key(obj: Obj) -> str:
    """``"namespace/name"`` of an object (``"/name"`` for a cluster-scoped one)."""
    m = obj.get("metadata") or {}
    return f"{m.get('namespace') or ''}/{m.get('name') or ''}"


def split_key(key: str) -> tuple[str, str]:
    """``(namespace, name)`` of a key made by ``object_key``."""
    ns, _, name = key.partition("/")
    return ns, name


class RateLimiter:
    """Per-key exponential back-off: ``base * 2**failures``, capped (client-go's ItemExponentialFailureRateLimiter)."""

    def __init__(self, base_s: float = BASE_DELAY_S, max_s: float = MAX_DELAY_S) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self._failures: dict[str, int] = {}

    def when(self, key: str) -> float:
        """The delay before retrying ``key`` after one more failure."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        if n > 64:
            return self.max_s
        return float(min(self.base_s * (2 ** n), self.max_s))

    def failures(self, key: str) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)


class WorkQueue:
    """client-go's work queue: de-duplicating, one worker per key at a time, with delayed adds.

    ``add`` of a key already waiting does nothing; ``add`` of a key being
    processed marks it dirty so it is queued again on ``done``. ``add_after``
    keeps the earliest of several pending delays of a key.
    """

    def __init__(self) -> None:
        self._queue: collections.deque[str] = collections.deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._waiting: dict[str, asyncio.TimerHandle] = {}
        self._ready = asyncio.Event()
        self.adds = 0  # keys actually queued (not deduplicated away)

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: str) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return
        self._queue.append(key)
        self.adds += 1
        self._notify()

    def add_after(self, key: str, delay_s: float) -> None:
        if delay_s <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay_s
        pending = self._waiting.get(key)
        if pending is not None:
            if pending.when() <= due:
                return
            pending.cancel()
        self._waiting[key] = loop.call_at(due, self._fire, key)

    def _fire(self, key: str) -> None:
        self._waiting.pop(key, None)
        self.add(key)

    def _notify(self) -> None:
        self._ready.set()

    async def get(self) -> str:
        """The next key to process (wait for one); call ``done(key)`` when finished with it."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        key = self._queue.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self.adds += 1
            self._notify()

    def waiting(self, key: str) -> bool:
        """Whether ``key`` has a delayed add pending."""
        return key in self._waiting

    def clear(self) -> None:
        """Forget everything (the runner stopped): pending delays are cancelled."""
        for h in self._waiting.values():
            h.cancel()
        self._waiting.clear()
        self._queue.clear()
        self._dirty.clear()
        self._processing.clear()


class ControllerRunner:
    """Runs one ``Reconciler``: informers on its kinds, ``workers`` workers, resync (a ``Component``)."""

    def __init__(self, client: KubeClient, reconciler: Reconciler, *, workers: int = 1,
                 resync_s: float = 300.0) -> None:
        self.client = client
        self.reconciler = reconciler
        self.name = reconciler.name
        self.workers = max(1, workers)
        self.resync_s = resync_s
        self.tasks = Supervisor(reconciler.name)
        self.queue = WorkQueue()
        self.limiter = RateLimiter()
        self.running = False
        # observable counters (tests, self-metrics)
        self.reconciles = 0
        self.errors = 0
        self.relists = 0
        self.synced = asyncio.Event()  # every informer finished its first list

    @property
    def kinds(self) -> list[tuple[str, str]]:
        return [self.reconciler.primary, *self.reconciler.secondary]

    async def start(self) -> None:
        if self.running:
            return
        self.running = True
        self.synced.clear()
        self._unsynced = len(self.kinds)
        for av, kind in self.kinds:
            self.tasks.spawn(self._inform(av, kind), name=f"informer {kind}")
        for i in range(self.workers):
            self.tasks.spawn(self._work(), name=f"worker {i}")
        if self.resync_s > 0:
            self.tasks.spawn(self._resync(), name="resync")

    async def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        await self.tasks.stop()
        self.queue.clear()

    @property
    def healthy(self) -> bool:
        return self.tasks.healthy

    def enqueue(self, key: str) -> None:
        """Queue ``key`` for reconciling (as an event would)."""
        self.queue.add(key)

    def _event(self, api_version: str, kind: str, obj: Obj) -> None:
        try:
            keys = self.reconciler.keys_for(api_version, kind, obj)
        except Exception:
            log.exception("controller keys_for failed", extra={"controller": self.name, "kind": kind})
            return
        for key in keys:
            self.queue.add(key)

    async def _inform(self, api_version: str, kind: str) -> None:
        """List, then watch from the list's version; relist on Gone or a broken watch."""
        first = True
        while True:
            try:
                listed = await self.client.list(api_version, kind)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("controller list failed", extra={"controller": self.name, "kind": kind, "error": repr(e)})
                await asyncio.sleep(_RELIST_PAUSE_S)
                continue
            for obj in listed.items:
                obj.setdefault("apiVersion", api_version)
                obj.setdefault("kind", kind)
                self._event(api_version, kind, obj)
            if first:
                first = False
                self._unsynced -= 1
                if self._unsynced <= 0:
                    self.synced.set()
            rv = listed.resource_version
            while True:  # watch, resuming from the last version seen while that works
                try:
                    async for ev in self.client.watch(api_version, kind, resource_version=rv):
                        new_rv = (ev.object.get("metadata") or {}).get("resourceVersion")
                        if new_rv:
                            rv = str(new_rv)
                        if ev.type == "BOOKMARK":
                            continue
                        self._event(api_version, kind, ev.object)
                    # the stream ended (the API is closing, a watch timeout): resume from where it was
                    await asyncio.sleep(_RESUME_PAUSE_S)
                except asyncio.CancelledError:
                    raise
                except Gone:
                    log.info("controller watch expired; relisting", extra={"controller": self.name, "kind": kind})
                    break
                except Exception as e:
                    log.warning("controller watch failed; resuming",
                                extra={"controller": self.name, "kind": kind, "error": repr(e)})
                    await asyncio.sleep(_RELIST_PAUSE_S)
            self.relists += 1

    async def _resync(self) -> None:
        av, kind = self.reconciler.primary
        while True:
            await asyncio.sleep(self.resync_s)
            try:
                listed = await self.client.list(av, kind)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("controller resync failed", extra={"controller": self.name, "error": repr(e)})
                continue
            for obj in listed.items:
                self.queue.add(object_key(obj))

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                after = await self.reconciler.reconcile(key)
            except asyncio.CancelledError:
                self.queue.done(key)
                raise
            except Exception as e:
                self.errors += 1
                delay = self.limiter.when(key)
                level = logging.INFO if isinstance(e, Conflict) else logging.WARNING
                log.log(level, "reconcile failed; retrying", exc_info=level == logging.WARNING,
                        extra={"controller": self.name, "key": key, "error": repr(e), "retry_in_s": delay})
                self.queue.done(key)
                self.queue.add_after(key, delay)
            else:
                self.limiter.forget(key)
                self.queue.done(key)
                if after is not None:
                    self.queue.add_after(key, after)
            finally:
                self.reconciles += 1


class ControllerManager:
    """Runs its runners while this server leads ``election`` (always, without one) — a ``Component``.

    The manager follows the election but does not start or stop it: whoever
    owns the ``Election`` (the composition root) starts it before the manager
    and stops it after.
    """

    name = "controllers"

    def __init__(self, runners: Sequence[ControllerRunner], *, election: Election | None = None) -> None:
        self.runners = list(runners)
        self.election = election
        self.tasks = Supervisor("controllers")
        for r in self.runners:
            # a runner's dead loop is the manager's: the server's readiness reads the manager's failures
            r.tasks.failures = self.tasks.failures
        self._changed = asyncio.Event()
        self.leading = False
        if election is not None:
            chained = election.on_change

            async def on_change(is_leader: bool) -> None:
                self._changed.set()
                if chained is not None:
                    await chained(is_leader)

            election.on_change = on_change

    async def start(self) -> None:
        if self.election is None:
            await self._run_all(True)
            return
        self._changed.set()
        self.tasks.spawn(self._follow(), name="leadership")

    async def stop(self) -> None:
        await self.tasks.stop()
        await self._run_all(False)

    @property
    def healthy(self) -> bool:
        return self.tasks.healthy and all(r.healthy for r in self.runners)

    async def _run_all(self, lead: bool) -> None:
        if lead == self.leading:
            return
        self.leading = lead
        log.info("controllers %s", "starting" if lead else "stopping", extra={"count": len(self.runners)})
        for r in self.runners:
            if lead:
                await r.start()
            else:
                await r.stop()

    async def _follow(self) -> None:
        assert self.election is not None
        while True:
            # woken by on_change; the periodic look also covers an on_change replaced after us
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), _LEADERSHIP_POLL_S)
            self._changed.clear()
            await self._run_all(self.election.is_leader)


# ---- events -------------------------------------------------------------------------------------------------

def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _record(client: KubeClient, obj: Obj, type_: str, reason: str, message: str, component: str) -> None:
    m = obj.get("metadata") or {}
    name, ns, uid = str(m.get("name") or ""), str(m.get("namespace") or "default"), str(m.get("uid") or "")
    # One Event per (object, type, reason, message, source), counted, as client-go's correlator aggregates;
    # the name is derived from those so a restarted controller counts on the same Event.
    digest = hashlib.sha256("\0".join((uid or name, type_, reason, message, component)).encode()).hexdigest()[:16]
    ev_name = f"{name}.{digest}"
    now = _now()
    for _ in range(3):
        try:
            old = await client.get("v1", "Event", ev_name, ns)
        except NotFoundError:
            ev: Obj = {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": ev_name, "namespace": ns},
                "involvedObject": {
                    "apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", ""), "name": name,
                    "namespace": ns, "uid": uid, "resourceVersion": str(m.get("resourceVersion") or ""),
                },
                "reason": reason, "message": message, "type": type_,
                "source": {"component": component},
                "reportingComponent": component, "reportingInstance": "",
                "count": 1, "firstTimestamp": now, "lastTimestamp": now,
            }
            try:
                await client.create(ev)
                return
            except AlreadyExists:
                continue
        else:
            old["count"] = int(old.get("count") or 1) + 1
            old["lastTimestamp"] = now
            try:
                await client.update(old)
                return
            except (Conflict, NotFoundError):
                continue


def record_event(client: KubeClient, obj: dict[str, Any], type_: str, reason: str, message: str,
                 component: str) -> Awaitable[None]:
    """Write (or count once more) the core/v1 Event ``reason: message`` about ``obj``.

    ``type_`` is "Normal" or "Warning"; ``component`` is the source
    (``source.component``, e.g. "deployment-controller"). Never raises: a
    failed Event is logged, as client-go's recorder drops it.
    """
    async def run() -> None:
        try:
            await _record(client, obj, type_, reason, message, component)
        except Exception as e:
            log.warning("could not record event", extra={"reason": reason, "error": repr(e)})

    return run()

