"""Consul's KV and session records as they live in the revisioned store, and Consul's key rules.

A Consul key ``a/b`` is the store key ``<KV_PREFIX>a/b``; its value is a
small JSON envelope (the user's bytes base64-encoded, ``Flags``, the holding
``Session`` and ``LockIndex``). Consul's ``CreateIndex``/``ModifyIndex`` are
the store's create and mod revisions, so an index is a store revision and a
blocking query is a watch from it. Sessions are keys under
``SESSION_PREFIX`` bound to a store lease (a session's TTL).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson

from pitwall.core.errors import PitwallError
from pitwall.storage.revstore import KeyValue

__all__ = ["HELD_PREFIX", "KV_PREFIX", "MAX_VALUE_BYTES", "ROOT", "SESSION_PREFIX", "ConsulError", "Entry", "Session",
           "check_key"]

ROOT = "/pitwall/consul/"
KV_PREFIX = ROOT + "kv/"
SESSION_PREFIX = ROOT + "sessions/"
HELD_PREFIX = ROOT + "held/"  # <session>/<key>: the keys a session holds, so ending it reads only those
MAX_VALUE_BYTES = 512 * 1024  # Consul's kv_max_value_size default (raft's suggested entry size)


class ConsulError(PitwallError):
    """An answer in Consul's own shape: an HTTP status and a plain-text reason (``core.http_errors``'
    ``text`` format renders it with this status)."""

    kind = "bad_data"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_key(key: str, *, allow_empty: bool = False) -> None:
    """Consul's key checks: no empty key (unless listing), no leading ``/``, no ``..`` traversal, no NUL
    or other control characters (raft and every client treat those as corruption)."""
    if key == "":
        if allow_empty:
            return
        raise ConsulError(400, "Missing key name")
    if key.startswith("/"):
        raise ConsulError(400, "key must not begin with a '/'")
    for i, ch in enumerate(key):
        if ch < " " or ch == "\x7f":
            raise ConsulError(400, f"key contains invalid character {ch!r} at position {i}")
    if "../" in key or "..\\" in key or key == ".." or key.endswith("/.."):
        raise ConsulError(400, "key contains path traversal sequence")


@dataclass(frozen=True, slots=True)
class Entry:
    """One Consul KV pair (a ``DirEntry``)."""

    key: str
    value: bytes
    flags: int
    session: str
    lock_index: int
    create_index: int
    modify_index: int

    @staticmethod
    def encode(value: bytes, flags: int = 0, session: str = "", lock_index: int = 0) -> bytes:
        return orjson.dumps({"v": base64.b64encode(value).decode(), "f": flags, "s": session, "l": lock_index})

    @staticmethod
    def from_kv(kv: KeyValue) -> Entry:
        d = orjson.loads(kv.value)
        return Entry(kv.key[len(KV_PREFIX):], base64.b64decode(d["v"]), int(d["f"]), d["s"], int(d["l"]),
                     kv.create_revision, kv.mod_revision)

    def stored(self) -> bytes:
        return Entry.encode(self.value, self.flags, self.session, self.lock_index)

    def to_api(self, *, with_value: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "LockIndex": self.lock_index, "Key": self.key, "Flags": self.flags,
            "Value": (base64.b64encode(self.value).decode() if self.value else None) if with_value else None,
            "CreateIndex": self.create_index, "ModifyIndex": self.modify_index,
        }
        if self.session:
            out["Session"] = self.session
        return out


@dataclass(frozen=True, slots=True)
class Session:
    """A Consul session: who holds locks, for how long, and what happens to them when it ends."""

    id: str
    name: str
    node: str
    lock_delay_ns: int
    behavior: str  # "release" | "delete"
    ttl: str  # Consul's duration text ("30s"), "" for none
    lease: int
    create_index: int = 0
    modify_index: int = 0

    def stored(self) -> bytes:
        return orjson.dumps({"id": self.id, "name": self.name, "node": self.node, "lock_delay": self.lock_delay_ns,
                             "behavior": self.behavior, "ttl": self.ttl, "lease": self.lease})

    @staticmethod
    def from_kv(kv: KeyValue) -> Session:
        d = orjson.loads(kv.value)
        return Session(d["id"], d["name"], d["node"], int(d["lock_delay"]), d["behavior"], d["ttl"],
                       int(d["lease"]), kv.create_revision, kv.mod_revision)

    def to_api(self) -> dict[str, Any]:
        return {"ID": self.id, "Name": self.name, "Node": self.node, "LockDelay": self.lock_delay_ns,
                "Behavior": self.behavior, "TTL": self.ttl, "NodeChecks": ["serfHealth"], "ServiceChecks": None,
                "CreateIndex": self.create_index, "ModifyIndex": self.modify_index}
