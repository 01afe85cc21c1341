"""Leader election on a lease, etcd's pattern, over any ``RevStore``.

Several pitwall servers sharing one etcd must run the controllers exactly
once. Each server runs an ``Election`` on the same name:

1. grant a lease of ``ttl_s`` and keep it alive every ``ttl_s / 3``;
2. campaign: a transaction creates the election key with our identity and
   lease if it does not exist (``create == 0``), else reads the holder;
3. the winner leads until its key disappears; a loser watches the key from
   the transaction's revision and campaigns again when it is deleted —
   which happens when the holder resigns (revokes its lease) or dies (its
   lease expires after at most ``ttl_s``).

A leader that cannot renew its lease steps down two thirds of a TTL after
its last successful renewal was sent, before the store can expire the lease
and elect someone else, so two leaders never overlap as long as clocks run
at similar rates. ``leader_revision`` (the key's create revision) is a
fencing token: a controller may add ``Compare(election.key, "create", "=",
election.leader_revision)`` to its writes so a deposed leader's late write
fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from pitwall.core.tasks import Supervisor

from . import Compare, LeaseNotFound, Op, RevStore

__all__ = ["Election"]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/pitwall/elections/"


class Election:
    """One candidate in the election ``name``; ``identity`` is what the key holds while it leads.

    ``on_change(is_leader)`` is awaited on every change of leadership.
    """

    def __init__(
        self,
        store: RevStore,
        name: str,
        identity: str,
        *,
        ttl_s: float = 10.0,
        on_change: Callable[[bool], Awaitable[None]] | None = None,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self.store = store
        self.key = prefix + name
        self.identity = identity
        self.ttl_s = ttl_s
        self.on_change = on_change
        self.leader_revision = 0  # our key's create revision while we lead
        self.elected = asyncio.Event()
        self._tasks = Supervisor(f"election {name}")
        self._abandoned = False

    @property
    def is_leader(self) -> bool:
        """Whether this candidate leads now."""
        return self.elected.is_set()

    async def start(self) -> None:
        """Start campaigning (returns at once; see ``elected``/``on_change``)."""
        self._tasks.spawn(self._run(), name="campaign")

    async def stop(self) -> None:
        """Resign (revoke our lease, which deletes the key) and stop campaigning."""
        await self._tasks.stop()
        await self._set(False)

    async def abandon(self) -> None:
        """Stop without resigning, as a crashed server would: the key lives until the lease expires."""
        self._abandoned = True
        await self._tasks.stop()
        self.elected.clear()

    async def leader(self) -> str | None:
        """Who leads now, as the store says (None: nobody)."""
        kv = await self.store.get(self.key)
        return kv.value.decode() if kv is not None else None

    async def _set(self, leading: bool) -> None:
        if leading == self.elected.is_set():
            return
        if leading:
            self.elected.set()
        else:
            self.elected.clear()
            self.leader_revision = 0
        log.info("leadership changed", extra={"election": self.key, "leader": leading, "identity": self.identity})
        if self.on_change is not None:
            try:
                await self.on_change(leading)
            except Exception:
                log.exception("election on_change callback failed", extra={"election": self.key})

    async def _run(self) -> None:
        while True:
            try:
                await self._campaign_once()
            except Exception as e:  # the store is unreachable or refused: step down, campaign again
                log.warning("election round failed", extra={"election": self.key, "error": repr(e)})
            await self._set(False)
            await asyncio.sleep(min(self.ttl_s / 3, 1.0))

    async def _campaign_once(self) -> None:
        lease = await self.store.grant(self.ttl_s)
        lost = asyncio.Event()
        keeper = asyncio.get_running_loop().create_task(self._keep(lease, lost))
        try:
            while not lost.is_set():
                r = await self.store.txn(
                    [Compare(self.key, "create", "=", 0)],
                    [Op.put(self.key, self.identity.encode(), lease)],
                    [Op.get(self.key)],
                )
                if r.succeeded:
                    self.leader_revision = r.results[0][0].create_revision
                    await self._set(True)
                    await self._until_deleted(r.revision + 1, lost)
                    return  # lost the key or the lease: start over with a fresh lease
                await self._until_deleted(r.revision + 1, lost)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            if not self._abandoned:
                # Resign: revoking deletes our key at once, so a follower need not wait out the TTL.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.store.revoke(lease), timeout=max(self.ttl_s / 3, 1.0))

    async def _keep(self, lease: int, lost: asyncio.Event) -> None:
        """Renew every TTL/3; give up (``lost``) two thirds of a TTL after the last renewal was sent."""
        deadline = time.monotonic() + self.ttl_s * 2 / 3
        ok = True
        while True:
            pause = self.ttl_s / 3 if ok else self.ttl_s / 10
            await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            sent = time.monotonic()
            if sent >= deadline:
                lost.set()
                return
            try:
                await asyncio.wait_for(self.store.keepalive(lease), timeout=deadline - sent)
                deadline = sent + self.ttl_s * 2 / 3
                ok = True
            except LeaseNotFound:
                lost.set()
                return
            except Exception as e:
                log.info("lease keepalive failed", extra={"election": self.key, "error": repr(e)})
                ok = False

    async def _until_deleted(self, from_rev: int, lost: asyncio.Event) -> None:
        """Return when the election key is deleted at or after ``from_rev``, or ``lost`` is set."""
        async def deleted() -> None:
            events = self.store.watch(self.key, start_revision=from_rev)
            try:
                async for batch in events:
                    if any(ev.type == "DELETE" and ev.kv.key == self.key for ev in batch):
                        return
            finally:
                await _aclose(events)

        waiter = asyncio.get_running_loop().create_task(deleted())
        loser = asyncio.get_running_loop().create_task(lost.wait())
        try:
            done, _ = await asyncio.wait({waiter, loser}, return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                waiter.result()  # a watch error (e.g. Compacted) ends the round
        finally:
            for t in (waiter, loser):
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t


async def _aclose(it: AsyncIterator[object]) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        await close()
