"""Consul sessions on store leases: create, renew, destroy, read; what happens to locks when one ends.

A session is a key under ``SESSION_PREFIX``; one with a TTL is bound to a
store lease of twice the TTL (Consul's own multiplier: a TTL is a lower
bound on invalidation), so it ends by itself when not renewed, on every
pitwall sharing the store. However it ends (destroyed, expired), the keys it
holds are released or deleted per its ``Behavior`` and get a lock-delay
during which no session may acquire them (kept in memory, as Consul keeps
it). ``SessionReaper`` reacts to the session key's deletion, so an expiry
seen by any server is handled by all of them, idempotently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import orjson

from pitwall.core.tasks import Supervisor
from pitwall.registry.blocking import parse_go_duration
from pitwall.registry.kv import KVStore
from pitwall.registry.model import SESSION_PREFIX, ConsulError, Session
from pitwall.storage.revstore import Event, LeaseNotFound, RevStore

__all__ = ["LockDelays", "SessionStore"]

TTL_MIN_S = 10.0
TTL_MAX_S = 86400.0
TTL_MULTIPLIER = 2.0  # Consul's SessionTTLMultiplier
DEFAULT_LOCK_DELAY_S = 15.0
MAX_LOCK_DELAY_S = 60.0  # Consul's MaxLockDelay
_NS = 1_000_000_000
log = logging.getLogger(__name__)


class LockDelays:
    """Keys' lock-delay deadlines (wall clock seconds), bounded: expired entries are dropped as it grows."""

    def __init__(self, limit: int = 100_000) -> None:
        self._until: dict[str, float] = {}
        self.limit = limit

    def set(self, key: str, until: float) -> None:
        if len(self._until) >= self.limit:
            now = time.time()
            self._until = {k: v for k, v in self._until.items() if v > now}
            if len(self._until) >= self.limit:  # all live: forget the soonest to end
                del self._until[min(self._until, key=self._until.__getitem__)]
        self._until[key] = max(until, self._until.get(key, 0.0))

    def until(self, key: str) -> float:
        return self._until.get(key, 0.0)


def _field(body: dict[str, Any], name: str) -> Any:
    """Consul decodes JSON field names case-insensitively (py-consul sends ``lockdelay``, ``ttl``)."""
    for k, v in body.items():
        if k.lower() == name:
            return v
    return None


def _lock_delay_ns(raw: Any) -> int:
    if raw is None:
        return int(DEFAULT_LOCK_DELAY_S * _NS)
    if isinstance(raw, str):
        try:
            secs = parse_go_duration(raw)
        except ValueError as e:
            raise ConsulError(400, f"Request decode failed: {e}") from None
        ns = int(secs * _NS)
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        # Consul: a small number is seconds (lockDelayMinThreshold), a large one nanoseconds.
        ns = int(raw * _NS) if raw < 1000 else int(raw)
    else:
        raise ConsulError(400, f"Request decode failed: LockDelay: unexpected {type(raw).__name__}")
    return max(0, min(ns, int(MAX_LOCK_DELAY_S * _NS)))


class SessionStore:
    """Sessions of one agent node (``node``) over ``store``; ``kv`` releases what they hold."""

    name = "consul-sessions"

    def __init__(self, store: RevStore, kv: KVStore, delays: LockDelays, *, node: str) -> None:
        self.store = store
        self.kv = kv
        self.delays = delays
        self.node = node
        self.tasks = Supervisor(self.name)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self.tasks.stop()

    async def create(self, body: dict[str, Any]) -> str:
        behavior = _field(body, "behavior") or "release"
        if behavior not in ("release", "delete"):
            raise ConsulError(500, f"Invalid Behavior setting '{behavior}'")
        node = _field(body, "node") or self.node
        if node != self.node:
            raise ConsulError(500, f"Failed to create session: Missing node registration for node {node!r}")
        checks = [*(_field(body, "checks") or []), *(_field(body, "nodechecks") or [])]
        if any(c != "serfHealth" for c in checks) or _field(body, "servicechecks"):
            raise ConsulError(500, "Failed to create session: only the serfHealth node check is supported")
        ttl_text = _field(body, "ttl") or ""
        ttl_s = 0.0
        if ttl_text:
            try:
                ttl_s = parse_go_duration(str(ttl_text))
            except ValueError as e:
                raise ConsulError(400, f"Request decode failed: {e}") from None
            if ttl_s != 0 and not TTL_MIN_S <= ttl_s <= TTL_MAX_S:
                raise ConsulError(500, f"Invalid Session TTL '{int(ttl_s * _NS)}', must be between [10s=24h0m0s]")
        name = _field(body, "name") or ""
        if not isinstance(name, str) or len(name) > 1024:
            raise ConsulError(400, "Request decode failed: Name must be a string of at most 1024 characters")
        sid = str(uuid.uuid4())
        lease = await self.store.grant(ttl_s * TTL_MULTIPLIER) if ttl_s else 0
        s = Session(sid, name, node, _lock_delay_ns(_field(body, "lockdelay")), behavior, str(ttl_text) if ttl_s
                    else "", lease)
        await self.store.put(SESSION_PREFIX + sid, s.stored(), lease=lease)
        return sid

    async def get(self, sid: str) -> Session | None:
        kv = await self.store.get(SESSION_PREFIX + sid)
        return Session.from_kv(kv) if kv else None

    async def listing(self, node: str = "") -> tuple[list[Session], int]:
        res = await self.store.range(SESSION_PREFIX)
        out = [Session.from_kv(kv) for kv in res.kvs]
        idx = max((s.modify_index for s in out), default=0)
        return [s for s in out if not node or s.node == node], idx

    async def renew(self, sid: str) -> Session:
        s = await self.get(sid)
        if s is None:
            raise ConsulError(404, f"Session id '{sid}' not found")
        if s.lease:
            try:
                await self.store.keepalive(s.lease)
            except LeaseNotFound:
                raise ConsulError(404, f"Session id '{sid}' not found") from None
        return s

    async def destroy(self, sid: str, *, who: str) -> None:
        """End a session now; its keys are released (or deleted) before this returns."""
        s = await self.get(sid)
        if s is None:
            return  # Consul answers true for an unknown session too
        if s.lease:
            with contextlib.suppress(LeaseNotFound):
                await self.store.revoke(s.lease)
        await self.store.delete(SESSION_PREFIX + sid)
        await self.invalidate(s, who=who)

    async def invalidate(self, s: Session, *, who: str) -> None:
        """Release or delete what ``s`` held and start the keys' lock-delay."""
        held = await self.kv.release_session(s.id, s.behavior, who=who)
        until = time.time() + s.lock_delay_ns / _NS
        for key in held:
            self.delays.set(key, until)

    def on_events(self, batch: list[Event]) -> None:
        """The hub's listener: a session key that disappeared (expired lease) ends that session here too."""
        for ev in batch:
            if ev.type == "DELETE" and ev.kv.key.startswith(SESSION_PREFIX) and ev.prev_kv is not None:
                try:
                    s = Session.from_kv(ev.prev_kv)
                except (orjson.JSONDecodeError, KeyError):
                    continue
                self.tasks.spawn(self._reap(s), name=f"session-reap {s.id}", loop=False)

    async def _reap(self, s: Session) -> None:
        try:
            await self.invalidate(s, who=f"session {s.id} ended")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("releasing the keys of an ended session failed", extra={"session": s.id})
