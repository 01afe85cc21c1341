"""Blocking queries: ``?index=N&wait=D`` answered when the watched keys change, or at the deadline.

One ``WatchHub`` holds one store watch per root prefix (Consul KV and
sessions, and the Kubernetes Services and Endpoints the catalog is built
from) and a table of waiters, each an ``asyncio.Future`` keyed by the store
prefix its query reads. An event wakes only the waiters whose prefix covers
its key, so an index moves when the watched keys change and not on
unrelated churn (hashicorp/consul#3890). No thread or store watch is held
per waiter; a client that disconnects removes its waiter at once.

A deleted key leaves no revision behind to read, so the hub keeps the most
recent deletes in a ring: a query whose index predates a delete under its
prefix returns at once with the delete's revision as its index.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import orjson
from starlette.requests import Request
from starlette.types import Receive, Scope

from pitwall.core.httpconn import Signal, unwatch_departure, watch_departure
from pitwall.core.tasks import Supervisor
from pitwall.registry.model import ConsulError
from pitwall.storage.revstore import Event, RevStore

__all__ = ["DEFAULT_WAIT_S", "FLOOR_KEY", "MAX_WAIT_S", "RECHECK_S", "ParkHeldQueries", "ParkRules", "QueryOptions", "Resolver", "View", "WatchHub", "blocking_read", "parse_go_duration"]

T = TypeVar("T")
DEFAULT_WAIT_S = 300.0  # Consul: 5 minutes
MAX_WAIT_S = 600.0  # Consul: 10 minutes
DELETE_RING = 4096
_GO_DURATION = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
FLOOR_KEY = "pitwall.consul.woken"  # scope key: the revision that woke a parked query (an index floor)
RECHECK_S = 30.0  # how often a held read of state outside the store (Connect's CA, leaves) re-reads it
_NOT_VIEW = frozenset({"index", "wait", "token", "stale", "consistent", "cached"})  # not the view's
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float:
    """Go's ``time.ParseDuration`` (as Consul parses ``wait`` and TTLs) in seconds; ``ValueError`` when bad."""
    s = text.strip()
    if s in ("0", ""):
        if s == "":
            raise ValueError(f"time: invalid duration {text!r}")
        return 0.0
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    pos, total = 0, 0.0
    for m in _GO_DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError(f"time: invalid duration {text!r}")
    return sign * total


class QueryOptions:
    """A read's ``index``, ``wait`` and consistency flags, parsed as Consul parses them."""

    def __init__(self, request: Request) -> None:
        q = request.query_params
        self.index = 0
        if "index" in q:
            try:
                self.index = int(q["index"])
            except ValueError:
                raise ConsulError(400, "Invalid index") from None
            if self.index < 0:
                raise ConsulError(400, "Invalid index")
        self.wait_s = DEFAULT_WAIT_S
        if "wait" in q:
            try:
                self.wait_s = parse_go_duration(q["wait"])
            except ValueError:
                raise ConsulError(400, "Invalid wait time") from None
        self.wait_s = min(max(self.wait_s, 0.0), MAX_WAIT_S)
        if "stale" in q and "consistent" in q:
            raise ConsulError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
        self.request = request
        self.floor = int(request.scope.get(FLOOR_KEY, 0))  # woken while parked (``ParkHeldQueries``)

    def deadline_s(self) -> float:
        """The wait plus Consul's jitter of up to wait/16, so many clients do not wake together."""
        return self.wait_s + random.uniform(0.0, self.wait_s / 16)


class _Waiter:
    """A held query: its future (settled with the waking revision, 0 at the deadline, -1 when the client left),
    its deadline and how its client's departure is watched."""

    __slots__ = ("deadline", "fut", "gone", "prefixes", "timer")

    def __init__(self, prefixes: tuple[str, ...], fut: asyncio.Future[int], deadline: float) -> None:
        self.prefixes = prefixes
        self.fut = fut
        self.deadline = deadline  # on the loop's clock
        self.timer: asyncio.TimerHandle | None = None  # its own timer, in its deadline's last second only
        self.gone: Signal | asyncio.Task[None] | None = None

    def __call__(self) -> None:
        """The client left (``core.httpconn.watch_departure``'s hook: the waiter itself, no object more)."""
        _settle(self.fut, -1)


class WatchHub:
    """The store watches behind every blocking query, and the waiters they wake."""

    name = "consul-watch-hub"

    def __init__(self, store: RevStore, roots: Sequence[str], *, prev_kv: frozenset[str] = frozenset(),
                 max_waiters: int = 20_000) -> None:
        self.store = store
        self.roots = tuple(roots)
        self.prev_kv = prev_kv  # roots whose events carry the previous value (what a deleted key held)
        self.max_waiters = max_waiters
        self.tasks = Supervisor(self.name)
        self._waiters: set[_Waiter] = set()
        # Waiters by the whole second (loop clock) their deadline falls in, one timer per second: a timer per
        # waiter is ~600 bytes (uvloop's handle, its libuv timer, the arguments) held for minutes.
        self._deadlines: dict[int, set[_Waiter]] = {}
        self._deletes: deque[tuple[int, str]] = deque(maxlen=DELETE_RING)
        self.floor = 0  # deletes at or below this revision may be missing from the ring
        self.seen = 0  # the last revision delivered
        self._listeners: list[Callable[[list[Event]], None]] = []
        self._reads: dict[Hashable, asyncio.Future[Any]] = {}
        self.parks = ParkRules()  # the blocking read endpoints ``ParkHeldQueries`` holds

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def listen(self, fn: Callable[[list[Event]], None]) -> None:
        """Call ``fn`` with every batch of events the hub sees (on the event loop, in order per root)."""
        self._listeners.append(fn)

    async def start(self) -> None:
        rev = await self.store.revision()
        self.floor = self.seen = rev
        for root in self.roots:
            self.tasks.spawn(self._follow(root, rev + 1), name=f"consul-watch {root}")

    async def stop(self) -> None:
        await self.tasks.stop()
        for w in list(self._waiters):
            _settle(w.fut, 0)  # answered as at their deadline

    async def _follow(self, root: str, start: int) -> None:
        async for batch in self.store.watch(root, start_revision=start, prev_kv=root in self.prev_kv):
            self.deliver(batch)

    def deliver(self, batch: list[Event]) -> None:
        """Wake the waiters whose prefixes cover a key of ``batch`` with that revision."""
        for ev in batch:
            rev = ev.kv.mod_revision
            self.seen = max(self.seen, rev)
            if ev.type == "DELETE":
                if len(self._deletes) == self._deletes.maxlen:
                    self.floor = max(self.floor, self._deletes[0][0])
                self._deletes.append((rev, ev.kv.key))
            for w in list(self._waiters):
                if not w.fut.done() and any(ev.kv.key.startswith(p) for p in w.prefixes):
                    w.fut.set_result(rev)
        for fn in self._listeners:
            fn(batch)

    async def shared_read(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        """``read()``, shared by every waiter woken for the same query and revision: a change watched by
        thousands of clients costs one store read, not thousands."""
        fut = self._reads.get(key)
        if fut is None:
            fut = asyncio.ensure_future(read())
            self._reads[key] = fut
            fut.add_done_callback(lambda f: self._reads.pop(key, None) if self._reads.get(key) is f else None)
        result: T = await asyncio.shield(fut)
        return result

    def deleted_since(self, prefixes: tuple[str, ...], index: int) -> int:
        """The revision of a delete under ``prefixes`` after ``index`` (or the floor when the ring
        cannot tell), else 0."""
        if index < self.floor:
            return self.floor
        for rev, key in reversed(self._deletes):
            if rev <= index:
                break
            if any(key.startswith(p) for p in prefixes):
                return rev
        return 0

    def watch(self, prefixes: tuple[str, ...], timeout_s: float, receive: Receive | None) -> _Waiter:
        """A held waiter: its future settles with the revision of the next change under ``prefixes``, 0 after
        ``timeout_s``, -1 when the client of ``receive`` leaves. Always handed back to ``unwatch``.

        The deadline and the client's departure settle the waiter's own future (a timer, and the connection's
        own signal or else one task reading ``receive``), rather than ``asyncio.wait``'s extra futures,
        callbacks and frames: thousands are held at once.
        """
        if len(self._waiters) >= self.max_waiters:
            raise ConsulError(429, f"too many blocking queries held ({self.max_waiters}); retry later")
        loop = asyncio.get_running_loop()
        w = _Waiter(prefixes, loop.create_future(), loop.time() + max(timeout_s, 0.0))
        second = int(w.deadline)
        if second <= loop.time():
            w.timer = loop.call_at(w.deadline, _settle, w.fut, 0)
        elif (due := self._deadlines.get(second)) is not None:
            due.add(w)
        else:
            self._deadlines[second] = {w}
            loop.call_at(second, self._expire, second)
        if receive is not None:
            w.gone = watch_departure(receive, w) or loop.create_task(_settle_on_disconnect(receive, w.fut))
        self._waiters.add(w)
        return w

    def _expire(self, second: int) -> None:
        """A second of deadlines has come: each waiter still held gets its own timer for its last fraction."""
        loop = asyncio.get_running_loop()
        for w in self._deadlines.pop(second, ()):
            w.timer = loop.call_at(w.deadline, _settle, w.fut, 0)

    def unwatch(self, w: _Waiter) -> None:
        self._waiters.discard(w)
        if w.timer is not None:
            w.timer.cancel()
        else:
            self._deadlines.get(int(w.deadline), set()).discard(w)
        if isinstance(w.gone, Signal):
            unwatch_departure(w.gone)
        elif w.gone is not None:
            w.gone.cancel()

    async def wait(self, prefixes: tuple[str, ...], index: int, timeout_s: float, request: Request | None) -> int:
        """Until a key under ``prefixes`` changes after ``index``: that change's revision; 0 on timeout,
        -1 when the client went away."""
        rev = self.deleted_since(prefixes, index)
        if rev:
            return rev
        w = self.watch(prefixes, timeout_s, None if request is None else request.receive)
        try:
            return await w.fut
        finally:
            self.unwatch(w)


def _settle(fut: asyncio.Future[int], value: int) -> None:
    if not fut.done():
        fut.set_result(value)


async def _settle_on_disconnect(receive: Receive, fut: asyncio.Future[int]) -> None:
    """Settles ``fut`` with -1 when the client closes the connection (a GET has no body left to read)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    _settle(fut, -1)


def fingerprint(result: Any) -> bytes:
    """A short digest of a read's result: a woken query whose index did not move answers only when what
    it reads changed (a delete leaves no higher revision behind), not on unrelated churn."""
    body = orjson.dumps(result, default=lambda o: o.hex() if isinstance(o, bytes) else repr(o))
    return hashlib.blake2b(body, digest_size=8).digest()


View = tuple[tuple[str, ...], Callable[[], Awaitable[tuple[Any, int]]]]
"""A blocking read endpoint's watched store prefixes and its read (a result and its ``X-Consul-Index``)."""
Resolver = Callable[[str, dict[str, str]], View]


class ParkRules:
    """The blocking read endpoints ``ParkHeldQueries`` may hold, each with the route's own view.

    A rule is an exact path, or a path ending in ``/`` whose rest is the
    route's one parameter (``rest`` lets it span ``/``, as a KV key does).
    The route registers the same resolver it reads through, so a held
    query's index is the one the route would answer with.
    """

    def __init__(self) -> None:
        self._exact: dict[str, Resolver] = {}
        self._prefixed: list[tuple[str, bool, Resolver]] = []
        self.hashed: dict[str, Callable[[Any], str]] = {}  # exact paths that block on ``?hash=``, and the hash

    def add(self, path: str, resolve: Resolver, *, rest: bool = False,
            content_hash: Callable[[Any], str] | None = None) -> None:
        """``resolve(param, query)`` gives the view, raising ``ConsulError`` for what the route refuses; an
        endpoint that blocks on ``?hash=`` (Consul's agent endpoints) gives the route's ``content_hash``."""
        if content_hash is not None:
            self.hashed[path] = content_hash
        if path.endswith("/"):
            self._prefixed.append((path, rest, resolve))
        else:
            self._exact[path] = resolve

    def match(self, path: str, query: dict[str, str]) -> View | None:
        """The view of a GET of ``path``; None when no rule holds it or the route would refuse it."""
        try:
            if path in self._exact:
                return self._exact[path]("", query)
            for prefix, rest, resolve in self._prefixed:
                if path.startswith(prefix):
                    param = path[len(prefix):]
                    if not rest and (not param or "/" in param):
                        return None
                    return resolve(param, query)
        except ConsulError:
            return None
        return None


async def blocking_read(hub: WatchHub, prefixes: tuple[str, ...], opts: QueryOptions,
                        read: Callable[[], Awaitable[tuple[T, int]]], share: Hashable = None) -> tuple[T, int]:
    """Consul's blocking query over ``read`` (which returns a result and its index).

    Without ``index`` (or with 0) it answers at once. Otherwise it answers
    as soon as the result's index passes ``index`` (or the result itself
    changed: a delete), or at the deadline with the result as it stands (and
    an index no lower than the one asked for, so clients do not take a
    time-out for a reset). A change under ``prefixes`` that leaves the result
    as it was does not answer (hashicorp/consul#3890). Waiters of the same
    query (``share``, when given) woken by the same revision share one read.
    """
    # Queries woken together (from the park) read once per revision: for the catalog that is a list of
    # every Service and Endpoints, not something to repeat for each of thousands of clients.
    shared = share is not None and opts.index > 0
    result, idx = await (hub.shared_read((share, hub.seen), read) if shared else read())
    idx = max(idx, opts.floor)  # a change that woke a parked query may leave no higher revision to read
    if opts.index <= 0 or idx > opts.index:
        return result, max(idx, 1)
    deleted = hub.deleted_since(prefixes, opts.index)
    if deleted:  # a delete since ``index`` leaves no revision behind to read
        return result, max(idx, deleted)
    seen = fingerprint(result)
    deadline = time.monotonic() + opts.deadline_s()
    since = opts.index
    while True:
        remaining = deadline - time.monotonic()
        rev = 0 if remaining <= 0 else await hub.wait(prefixes, since, remaining, opts.request)
        if rev <= 0:  # the deadline, or the client left (then the answer goes nowhere)
            return result, max(idx, min(opts.index, hub.seen), 1)
        result, idx = await (hub.shared_read((share, rev), read) if share is not None else read())
        if idx > opts.index:
            return result, idx
        if fingerprint(result) != seen:  # changed without a higher index: a delete
            return result, max(rev, opts.index + 1)
        since = max(since, rev)


class ParkHeldQueries:
    """Where a blocking read waits, past auth and in front of the web framework (``hold``, called by
    ``core.edge.Edge``; also an ASGI middleware of its own).

    A held query's cost is mostly the request's coroutine stack: the web
    framework's error, routing, dependency and exception layers, one frame
    each, held for minutes. A ``GET`` with ``?index=N`` on an endpoint of the
    hub's ``ParkRules`` (KV, catalog, health, sessions) whose view has not
    moved past ``N`` waits in this thin layer on the ``WatchHub`` (the same
    waiter, cap and disconnect handling). A change under the view's prefixes
    re-reads it (one read shared by the waiters of the same query and
    revision); the query goes on only when the view's index passed ``N`` or
    its result changed (a delete), or at its deadline. It then reaches the
    framework with ``wait=0s`` and, after a delete, the waking revision in the
    scope (``FLOOR_KEY``), so the route answers at once with Consul's
    semantics. Anything it cannot vouch for (a bad index, wait, key or
    filter, the cap reached) passes through untouched for the route to answer
    in Consul's format. The views are the routes' own, on ``hub.parks``.
    """

    def __init__(self, app: Any, hub: WatchHub) -> None:
        self.app, self.hub = app, hub

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        held = self.hold(scope, receive) if scope["type"] == "http" else None
        go_on = scope if held is None else await held
        if go_on is not None:
            await self.app(go_on, receive, send)

    def hold(self, scope: Scope, receive: Receive) -> Awaitable[Scope | None] | None:
        """None when the HTTP request is not a blocking read to hold; else what to await: its scope for the
        route once it may go on (``scope`` itself, or one that answers at once), or None when its client left
        while held (nobody to answer). Not a coroutine itself: a held query pins one frame of this layer."""
        parked = self._parse(scope) if scope["method"] == "GET" and scope["path"].startswith("/v1/") else None
        if parked is None:
            return None
        view, index, wait_s = parked
        if isinstance(index, str):
            return self._hold_hash(scope, receive, view, index, wait_s)
        return self._hold_index(scope, receive, view, index, wait_s)

    async def _hold_hash(self, scope: Scope, receive: Receive, view: View, given: str,
                         wait_s: float) -> Scope | None:
        """Until the view's content hash differs from ``given`` (the route answers the new content) or the
        deadline."""
        hub, (prefixes, read) = self.hub, view
        content_hash = hub.parks.hashed[scope["path"]]
        deadline = time.monotonic() + wait_s + random.uniform(0.0, wait_s / 16)
        while True:
            mark = hub.seen
            try:
                if content_hash((await read())[0]) != given:
                    return scope
            except ConsulError:  # the route answers it in Consul's format
                return scope
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _woken(scope, 0)
            if hub.seen != mark:
                continue  # a change arrived while reading: read again before waiting
            try:
                w = hub.watch(prefixes, remaining, receive)
            except ConsulError:  # the cap: the route answers (or refuses) it
                return scope
            try:
                rev = await w.fut
            finally:
                hub.unwatch(w)
            if rev < 0 or (rev == 0 and deadline - time.monotonic() <= 0):
                return _woken(scope, rev)

    async def _hold_index(self, scope: Scope, receive: Receive, view: View, index: int,
                          wait_s: float) -> Scope | None:
        """Until the view moves past ``index`` (the route reads the new index), a revision changes it without
        a higher index (a delete: the route answers with that revision as the floor), or the deadline."""
        hub, (prefixes, read) = self.hub, view
        deleted = hub.deleted_since(prefixes, index)
        if deleted:
            return _woken(scope, deleted)
        deadline = time.monotonic() + wait_s + random.uniform(0.0, wait_s / 16)
        seen: bytes | None = None
        while True:
            mark = hub.seen
            try:  # the key of the shared read is built for the read, not held while waiting
                result, idx = await hub.shared_read((_share_key(scope), mark), read)
            except ConsulError:
                return scope
            if idx > index:
                return scope
            now = fingerprint(result)
            del result
            if seen is not None and now != seen:
                return _woken(scope, max(hub.seen, index + 1))
            seen = now
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _woken(scope, 0)
            if hub.seen != mark:
                continue  # a change arrived while reading: read again before waiting
            # no await between that check and the waiter's registration, so no change slips between them;
            # a view of no store keys (the mesh CA) is re-read every RECHECK_S instead
            try:
                w = hub.watch(prefixes, remaining if prefixes else min(remaining, RECHECK_S), receive)
            except ConsulError:
                return scope
            try:  # the wait inline, not in a coroutine of its own: one frame fewer per held query
                rev = await w.fut
            finally:
                hub.unwatch(w)
            if rev < 0 or (rev == 0 and deadline - time.monotonic() <= 0):
                return _woken(scope, rev)

    def _parse(self, scope: Any) -> tuple[View, int | str, float] | None:
        """The view, the ``index`` (or the ``hash``, on the endpoints that block on one) and the wait."""
        qs = scope.get("query_string", b"")
        if b"index" not in qs and b"hash" not in qs and b"%" not in qs:
            return None  # most reads: no parameter that blocks (an escaped one is decoded below)
        raw = scope.get("raw_path", b"") or b""
        if b".." in raw or b"%2" in raw.lower():  # traversal checks are the route's
            return None
        query = parse_qsl(qs.decode("latin-1"), keep_blank_values=True)
        q = dict(query)
        hashed = scope["path"] in self.hub.parks.hashed
        if ("hash" if hashed else "index") not in q:
            return None
        try:
            index: int | str = q["hash"] if hashed else int(q["index"])
            wait_s = min(max(parse_go_duration(q["wait"]) if "wait" in q else DEFAULT_WAIT_S, 0.0), MAX_WAIT_S)
        except ValueError:
            return None
        if not index or (isinstance(index, int) and index < 0) or ("stale" in q and "consistent" in q):
            return None
        view = self.hub.parks.match(scope["path"], q)
        return None if view is None else (view, index, wait_s)


def _query(scope: Scope) -> list[tuple[str, str]]:
    """A held query's parameters, parsed again when needed rather than held for its whole wait."""
    return parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)


def _share_key(scope: Scope) -> Hashable:
    """The reads a held query may share with others: its path and the parameters that shape the view."""
    return scope["path"], tuple(sorted((k, v) for k, v in _query(scope) if k not in _NOT_VIEW))


def _woken(scope: Scope, floor: int) -> Scope | None:
    """The scope of a held query that may go on: None when its client left (``floor`` < 0); else ``wait=0s``
    (the route answers at once) and ``floor`` as the lowest index it may answer with (``FLOOR_KEY``)."""
    if floor < 0:
        return None
    query = [(k, v) for k, v in _query(scope) if k != "wait"] + [("wait", "0s")]
    return {**scope, "query_string": urlencode(query).encode(), FLOOR_KEY: floor}
