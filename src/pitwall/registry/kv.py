"""Consul's KV semantics over the revisioned store: get/list/keys, set, CAS, lock/unlock, delete, txn.

Every write is one store transaction that compares the state it read (the
key's mod revision, or its absence) and retries on a race, so concurrent
writers from several pitwall servers on one etcd never lose an update. The
same transaction writes the change's history record (``history.py``), so a
change and its audit trail share one revision. Locks follow Consul's rules:
``acquire`` needs a live session and fails while another session holds the
key or while the key's lock-delay (set when a holding session ended) runs.

A plain set or CAS does not read the key first: it takes the state this
process last committed for it (``_recent``, the 4,096 most recently written
keys) or guesses it absent, and lets the transaction's compare check the
guess. A wrong guess fails the compare; the same transaction's failure
branch reads the key (one trip to the store, no commit), and the write is
planned again from what it read. So a write's answer, history record and
change event come from a state the store confirmed at commit, as before,
and a PUT to a new or recently written key costs no read on the event loop
(on SQLite that read hit a page cache every commit invalidated).
"""

from __future__ import annotations

import base64
import time
from collections import ChainMap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pitwall.registry.history import ConfigHistory, HistoryRecord
from pitwall.registry.model import (
    HELD_PREFIX,
    KV_PREFIX,
    MAX_VALUE_BYTES,
    SESSION_PREFIX,
    ConsulError,
    Entry,
    check_key,
)
from pitwall.storage.revstore import Compacted, Compare, FutureRevision, Op, RevStore, prefix_end

__all__ = ["MAX_TXN_OPS", "KVStore", "TxnOutcome"]

MAX_TXN_OPS = 64  # Consul's maxTxnOps
_RETRIES = 20
_LEVEL_PAGE = 256  # keys read at most at once by level()
_WRITE_VERBS = frozenset({"set", "cas", "lock", "unlock", "delete", "delete-cas", "delete-tree"})
_READ_VERBS = frozenset({"get", "get-tree", "check-index", "check-session", "check-not-exists"})
_GUESSED_VERBS = frozenset({"set", "cas"})  # single writes planned from a guessed state (see the module doc)
_RECENT_MAX = 4096  # keys whose last committed state is kept to plan their next write from
_RECENT_VALUE_MAX = 1024  # larger values are not kept (4,096 of them would be 4 MiB), their keys read again
_READ = Entry("", b"", 0, "", 0, 0, -1)  # in ``_recent``: a key known to exist whose state is not kept


@dataclass
class TxnOutcome:
    """A transaction's ``Results`` (on success) or ``Errors`` (on failure), as Consul's JSON."""

    results: list[dict[str, Any]] | None
    errors: list[dict[str, Any]] | None
    index: int = 0

    def to_api(self) -> dict[str, Any]:
        errors = None if self.errors is None else [{"OpIndex": e["OpIndex"], "What": e["What"]} for e in self.errors]
        return {"Results": self.results, "Errors": errors}


class _Conflict(Exception):
    """The store changed between read and write (or a guess was wrong): plan again; ``current`` holds the
    guessed keys' states as the failed transaction found them."""

    def __init__(self, current: Mapping[str, Entry | None] | None = None) -> None:
        super().__init__()
        self.current = current or {}


class _Unverified(Exception):
    """An outcome rests on a guessed state that no compare checked (a failed condition, no write): plan
    again from reads."""


@dataclass
class _Work:
    """A transaction being planned: what was read (to compare) and each key's state after the ops."""

    store: RevStore
    read: dict[str, Entry | None]
    state: dict[str, Entry | None]
    trees: dict[str, list[str]]
    hints: Mapping[str, Entry | None] | None = None  # states to take instead of reading (None: read)
    guessed: list[str] = field(default_factory=list)  # keys whose state came from ``hints``, not a read

    async def entry(self, key: str) -> Entry | None:
        if key not in self.state:
            e = _READ if self.hints is None else self.hints.get(key)  # not in the hints: guessed absent
            if e is _READ:
                kv = await self.store.get(KV_PREFIX + key)
                e = Entry.from_kv(kv) if kv else None
            else:
                self.guessed.append(key)
            self.read[key] = self.state[key] = e
        return self.state[key]

    async def tree(self, prefix: str) -> list[Entry]:
        if prefix not in self.trees:
            res = await self.store.range(KV_PREFIX + prefix)
            keys = []
            for kv in res.kvs:
                e = Entry.from_kv(kv)
                keys.append(e.key)
                if e.key not in self.state:
                    self.read[e.key] = self.state[e.key] = e
            self.trees[prefix] = keys
        known = set(self.trees[prefix]) | {k for k in self.state if k.startswith(prefix)}
        return [found for k in sorted(known) if (found := self.state.get(k)) is not None]

    def compares(self) -> list[Compare]:
        out = []
        for key, e in self.read.items():
            out.append(Compare(KV_PREFIX + key, "mod", "=", e.modify_index) if e else
                       Compare(KV_PREFIX + key, "create", "=", 0))
        return out


class KVStore:
    """Consul KV on a ``RevStore``; ``lock_delay_until`` is consulted before every ``acquire``."""

    def __init__(self, store: RevStore, history: ConfigHistory,
                 lock_delay_until: Callable[[str], float] = lambda key: 0.0) -> None:
        self.store = store
        self.history = history
        self.lock_delay_until = lock_delay_until
        self._recent: dict[str, Entry | None] = {}  # key -> its state as this process last committed it

    # ---- reads --------------------------------------------------------------------------------------

    async def get(self, key: str) -> tuple[Entry | None, int]:
        kv = await self.store.get(KV_PREFIX + key)
        return (Entry.from_kv(kv), kv.mod_revision) if kv else (None, 0)

    async def tree(self, prefix: str) -> tuple[list[Entry], int]:
        res = await self.store.range(KV_PREFIX + prefix)
        entries = [Entry.from_kv(kv) for kv in res.kvs]
        return entries, max((e.modify_index for e in entries), default=0)

    async def at(self, prefix: str, revision: int) -> dict[str, bytes]:
        """Values under ``prefix`` as they were at ``revision`` (Consul errors: 410 once compacted away, 400
        for a revision not reached yet)."""
        try:
            res = await self.store.range(KV_PREFIX + prefix, revision=revision)
        except Compacted as e:
            raise ConsulError(410, str(e)) from None
        except FutureRevision:
            raise ConsulError(400, f"revision {revision} is newer than the store's") from None
        return {e.key: e.value for e in map(Entry.from_kv, res.kvs)}

    async def keys(self, prefix: str, separator: str) -> tuple[list[str], int]:
        """Keys under ``prefix``; with a separator, each key cut after the first separator past the prefix
        (Consul's "directories"), deduplicated. The index is the whole tree's, as Consul's."""
        entries, idx = await self.tree(prefix)
        out: list[str] = []
        for e in entries:
            k = _folder_of(e.key, prefix, separator) or e.key
            if not out or out[-1] != k:
                out.append(k)
        return out, idx

    async def level(self, prefix: str, separator: str, limit: int) -> list[Entry | str]:
        """The first ``limit`` names of ``keys(prefix, separator)``, in key order: a folder as its name (ending
        with ``separator``), a key directly under ``prefix`` as its entry. The folders' contents are skipped
        in the store rather than read, so this costs about one read per folder and a few for the keys."""
        out: list[Entry | str] = []
        start: str | None = None
        rev = 0  # every read at the first one's revision: one consistent listing
        page = 1  # one key read after a skipped folder, doubling while keys follow one another
        while len(out) < limit:
            res = await self.store.range(KV_PREFIX + prefix, start=start, limit=min(page, limit - len(out)),
                                         revision=rev)
            rev = rev or res.revision
            for kv in res.kvs:
                e = Entry.from_kv(kv)
                folder = _folder_of(e.key, prefix, separator)
                if folder is not None:
                    out.append(folder)
                    start, page = prefix_end(KV_PREFIX + folder), 1
                    break
                out.append(e)
                start = kv.key + "\0"
            else:
                if not res.more:
                    break
                page = min(page * 2, _LEVEL_PAGE)
        return out

    # ---- single writes (each a one-operation transaction) -------------------------------------------

    async def put(self, key: str, value: bytes, *, who: str, flags: int = 0, cas: int | None = None,
                  acquire: str = "", release: str = "") -> bool:
        """``PUT /v1/kv/<key>``: a plain set answers true; CAS, acquire and release answer whether they
        took effect."""
        check_value(key, value)
        verb, op = "set", {"Key": key, "Value": value, "Flags": flags}
        if cas is not None:
            verb, op["Index"] = "cas", cas
        elif acquire:
            verb, op["Session"] = "lock", acquire
        elif release:
            verb, op["Session"] = "unlock", release
        return _ok(await self._run([(verb, op)], who=who, render=False))

    async def delete(self, key: str, *, who: str, recurse: bool = False, cas: int | None = None) -> bool:
        if recurse:
            return _ok(await self._run([("delete-tree", {"Key": key})], who=who, render=False))
        if cas is not None:
            return _ok(await self._run([("delete-cas", {"Key": key, "Index": cas})], who=who, render=False))
        return _ok(await self._run([("delete", {"Key": key})], who=who, render=False))

    async def txn(self, ops: Sequence[dict[str, Any]], *, who: str) -> TxnOutcome:
        """``PUT /v1/txn`` (KV operations): all or nothing; per-operation errors as Consul reports them."""
        parsed: list[tuple[str, dict[str, Any]]] = []
        for i, op in enumerate(ops):
            kv = op.get("KV") if isinstance(op, dict) else None
            if not isinstance(kv, dict):
                raise ConsulError(400, f"Failed to parse body: operation {i} is not a KV operation "
                                       "(only KV operations are served)")
            verb = kv.get("Verb")
            key = kv.get("Key", "")
            if not isinstance(verb, str) or not isinstance(key, str):
                raise ConsulError(400, f"Failed to parse body: operation {i} needs a string Verb and Key")
            raw = kv.get("Value")
            try:
                value = base64.b64decode(raw, validate=True) if raw else b""
            except (ValueError, TypeError) as e:
                raise ConsulError(400, f"Failed to parse body: failed to decode value: {e}") from None
            check_value(key, value, txn=True)
            parsed.append((verb, {"Key": key, "Value": value, "Flags": _uint(kv.get("Flags", 0)),
                                  "Index": _uint(kv.get("Index", 0)), "Session": str(kv.get("Session") or "")}))
        return await self._run(parsed, who=who)

    # ---- the engine ---------------------------------------------------------------------------------

    async def _run(self, ops: Sequence[tuple[str, dict[str, Any]]], *, who: str, render: bool = True) -> TxnOutcome:
        """``ops`` as one transaction, retried on a race; ``render``: build Consul's ``Results`` (a single
        write answers only true or false)."""
        guess = len(ops) == 1 and ops[0][0] in _GUESSED_VERBS
        found: dict[str, Entry | None] = {}  # what failed compares found, for the next plan
        for _ in range(_RETRIES):
            try:
                return await self._attempt(ops, who, render, ChainMap(found, self._recent) if guess else None)
            except _Conflict as c:
                found.update(c.current)
            except _Unverified:
                guess = False
        raise ConsulError(500, "transaction kept conflicting with concurrent writes; retry")

    async def _attempt(self, ops: Sequence[tuple[str, dict[str, Any]]], who: str, render: bool,
                       hints: Mapping[str, Entry | None] | None = None) -> TxnOutcome:
        w = _Work(self.store, {}, {}, {}, hints)
        results: list[tuple[str, str, bool]] = []  # (verb, key, with value) to render after the commit
        errors: list[dict[str, Any]] = []
        sessions: dict[str, bool] = {}
        for i, (verb, op) in enumerate(ops):
            try:
                results.extend(await self._apply(w, verb, op, sessions))
            except ConsulError as e:
                errors.append({"OpIndex": i, "What": e.message, "_status": e.status})
        if errors:
            if w.guessed:
                raise _Unverified
            return TxnOutcome(None, errors)
        rev = await self._commit(w, who, [s for s, ok in sessions.items() if ok])
        return TxnOutcome(self._render(w, results, rev) if render else [], None, rev)

    async def _commit(self, w: _Work, who: str, live_sessions: Sequence[str] = ()) -> int:
        """Write what ``w`` changed, its history records and the lock index (``HELD_PREFIX``) in one
        transaction that holds only if nothing it read has changed (else ``_Conflict``); the revision."""
        compares = w.compares() + [Compare(SESSION_PREFIX + s, "create", ">", 0) for s in live_sessions]
        writes: list[Op] = []
        changes: list[tuple[str, Entry | None, Entry | None]] = []
        for key, new in w.state.items():
            old = w.read.get(key)
            if new == old:
                continue
            writes.append(Op.put(KV_PREFIX + key, new.stored()) if new else Op.delete(KV_PREFIX + key))
            writes.extend(_held_ops(key, old, new))
            changes.append((key, old, new))
        if not writes:
            if w.guessed:
                raise _Unverified
            return await self.store.revision()
        now_ns = time.time_ns()
        plan = self.history.plan([HistoryRecord(key, who, now_ns, old.value if old else None,
                                                new.value if new else None, 0) for key, old, new in changes])
        at = len(writes)
        writes.extend(plan.ops)
        announced = [(key, who, old is None, new is None) for key, old, new in changes]
        try:
            # answer_first: Consul reads go to the store, and blocking queries follow the hub's watch, which a
            # client's next request finds caught up (its task is queued before that request is read).
            res = await self.store.txn(compares, writes, [Op.get(KV_PREFIX + k) for k in w.guessed],
                                       answer_first=True)
        except BaseException:
            self.history.abandoned(plan)
            raise
        if not res.succeeded:
            self.history.abandoned(plan)
            raise _Conflict({k: Entry.from_kv(kvs[0]) if kvs else None for k, kvs in zip(w.guessed, res.results,
                                                                                           strict=True)})
        self._remember(changes, res.revision)
        over = self.history.committed(plan, res.results[at:at + len(plan.ops)])
        await self.history.announce(announced, res.revision, over, ts_ns=now_ns)
        return res.revision

    def _remember(self, changes: Sequence[tuple[str, Entry | None, Entry | None]], rev: int) -> None:
        """Keep what a commit wrote, to plan the keys' next writes from (the oldest key forgotten first)."""
        for key, _old, new in changes:
            self._recent.pop(key, None)
            if new is not None:
                new = _READ if len(new.value) > _RECENT_VALUE_MAX else Entry(
                    new.key, new.value, new.flags, new.session, new.lock_index, new.create_index or rev, rev)
            self._recent[key] = new
        while len(self._recent) > _RECENT_MAX:
            del self._recent[next(iter(self._recent))]

    def _render(self, w: _Work, results: list[tuple[str, str, bool]], rev: int) -> list[dict[str, Any]]:
        out = []
        for _verb, key, with_value in results:
            found = w.state.get(key) or w.read.get(key)
            if found is None:
                continue
            e = found
            if found != w.read.get(key):  # written by this transaction: its indexes are the commit's revision
                e = replace(e, modify_index=rev, create_index=e.create_index or rev)
            out.append({"KV": e.to_api(with_value=with_value)})
        return out

    async def _apply(self, w: _Work, verb: str, op: dict[str, Any],
                     sessions: dict[str, bool]) -> list[tuple[str, str, bool]]:
        key: str = op["Key"]
        if verb not in _WRITE_VERBS | _READ_VERBS:
            raise ConsulError(400, f"unknown KV verb {verb!r}")
        check_key(key, allow_empty=verb in ("get-tree", "delete-tree"))
        if verb == "get-tree":
            return [(verb, e.key, True) for e in await w.tree(key)]
        if verb == "delete-tree":
            for e in await w.tree(key):
                w.state[e.key] = None
            return []
        cur = await w.entry(key)
        flags = op.get("Flags")
        value: bytes = op.get("Value") or b""
        if verb == "get":
            if cur is None:
                raise ConsulError(409, f'key "{key}" doesn\'t exist')
            return [(verb, key, True)]
        if verb == "check-not-exists":
            if cur is not None:
                raise ConsulError(409, f'key "{key}" exists')
            return []
        if verb == "check-index":
            if cur is None:
                raise ConsulError(409, f'failed index check for key "{key}", key doesn\'t exist')
            if cur.modify_index != op["Index"]:
                raise ConsulError(409, f'failed index check for key "{key}", current modify index '
                                       f'{cur.modify_index} != {op["Index"]}')
            return [(verb, key, False)]
        if verb == "check-session":
            if cur is None:
                raise ConsulError(409, f'failed session check for key "{key}", key doesn\'t exist')
            if cur.session != op["Session"]:
                raise ConsulError(409, f'failed session check for key "{key}", current session '
                                       f'"{cur.session}" != "{op["Session"]}"')
            return [(verb, key, False)]
        if verb == "delete":
            w.state[key] = None
            return []
        if verb == "delete-cas":
            if cur is not None and cur.modify_index != op["Index"]:
                raise ConsulError(409, f'failed to delete key "{key}", index is stale')
            w.state[key] = None
            return []
        base = cur or Entry(key, b"", 0, "", 0, 0, 0)
        new_flags = int(flags or 0)
        if verb == "set":  # (a constructor, not ``replace``: every plain PUT runs this)
            w.state[key] = Entry(key, value, new_flags, base.session, base.lock_index, base.create_index,
                                 base.modify_index)
        elif verb == "cas":
            if (op["Index"] == 0 and cur is not None) or (op["Index"] != 0 and (
                    cur is None or cur.modify_index != op["Index"])):
                raise ConsulError(409, f'failed to set key "{key}", index is stale')
            w.state[key] = replace(base, value=value, flags=new_flags)
        elif verb == "lock":
            await self._check_session(op["Session"], sessions)
            if self.lock_delay_until(key) > time.time():
                raise ConsulError(409, f'failed to lock key "{key}" due to lock delay')
            if cur is not None and cur.session and cur.session != op["Session"]:
                raise ConsulError(409, f'failed to lock key "{key}", lock is already held')
            same = cur is not None and cur.session == op["Session"]
            w.state[key] = replace(base, value=value, flags=new_flags, session=op["Session"],
                                   lock_index=base.lock_index + (0 if same else 1))
        elif verb == "unlock":
            if cur is None or cur.session != op["Session"]:
                raise ConsulError(409, f'failed to unlock key "{key}", lock isn\'t held, or is held by another '
                                       "session")
            w.state[key] = replace(base, value=value, flags=new_flags, session="")
        return [(verb, key, False)]

    async def _check_session(self, sid: str, seen: dict[str, bool]) -> None:
        if sid not in seen:
            seen[sid] = await self.store.get(SESSION_PREFIX + sid) is not None
        if not seen[sid]:
            raise ConsulError(500, f'invalid session "{sid}"')

    async def release_session(self, sid: str, behavior: str, *, who: str) -> list[str]:
        """A session ended: release (or delete, per its Behavior) every key it holds; returns those keys.
        The keys come from the session's lock index, so this reads what the session holds, not all of KV."""
        res = await self.store.range(f"{HELD_PREFIX}{sid}/")
        held = [kv.key[len(HELD_PREFIX) + len(sid) + 1:] for kv in res.kvs]
        for key in held:
            for _ in range(_RETRIES):
                w = _Work(self.store, {}, {}, {})
                cur = await w.entry(key)
                if cur is None or cur.session != sid:
                    await self.store.delete(f"{HELD_PREFIX}{sid}/{key}")  # a stale index entry
                    break
                w.state[key] = None if behavior == "delete" else replace(cur, session="")
                try:
                    await self._commit(w, who)
                    break
                except _Conflict:
                    continue
        return held


def _held_ops(key: str, old: Entry | None, new: Entry | None) -> list[Op]:
    """Keep ``HELD_PREFIX<session>/<key>`` in step with which session holds ``key``."""
    before, after = old.session if old else "", new.session if new else ""
    if before == after:
        return []
    ops = [Op.delete(f"{HELD_PREFIX}{before}/{key}")] if before else []
    if after:
        ops.append(Op.put(f"{HELD_PREFIX}{after}/{key}", b""))
    return ops


def _folder_of(key: str, prefix: str, separator: str) -> str | None:
    """The folder one level under ``prefix`` that ``key`` is in (up to and with the first ``separator`` past
    the prefix), or None for a key directly under it."""
    cut = key.find(separator, len(prefix)) if separator else -1
    return key[:cut + len(separator)] if cut >= 0 else None


def _ok(out: TxnOutcome) -> bool:
    """A single write's answer: false when its condition failed; an error other than a failed condition
    (an unknown session, a bad key) is raised with its own status."""
    for e in out.errors or ():
        if e["_status"] != 409:
            raise ConsulError(e["_status"], e["What"])
    return out.errors is None


def check_value(key: str, value: bytes, *, txn: bool = False) -> None:
    """Consul's value limit (kv_max_value_size, 512 KiB), answered with its status and message."""
    if len(value) > MAX_VALUE_BYTES:
        if txn:
            raise ConsulError(413, f'Value for key "{key}" is too large ({len(value)} > {MAX_VALUE_BYTES} bytes)')
        raise ConsulError(413, f"Request body({len(value)} bytes) too large, max size: {MAX_VALUE_BYTES} bytes. See "
                               "https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.")


def _uint(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ConsulError(400, f"Failed to parse body: expected an unsigned integer, got {v!r}")
    return v
