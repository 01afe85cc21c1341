"""Decoded and serialized objects by (version, key, mod revision), for the list path.

A list still reads the store at one revision (so it is exactly as consistent
as before) but decodes and re-encodes only the objects that changed since
they were last served, as kube-apiserver's cacher keeps serialized objects.
An entry never goes stale: a write gives the key a new mod revision. Objects
handed out are shared and must not be mutated.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

from pitwall.storage.revstore import KeyValue

__all__ = ["ObjectCache"]

Obj = dict[str, Any]
_Key = tuple[str, str, int]


class ObjectCache:
    """An LRU of ``(object, its JSON)`` per stored version of a key, bounded by the JSON's total size (the
    decoded objects take a few times that)."""

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[_Key, tuple[Obj, bytes]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, api_version: str, kv: KeyValue, decode: Callable[[KeyValue], Obj]) -> tuple[Obj, bytes]:
        """The decoded object and its JSON, decoding with ``decode`` on a miss."""
        k = (api_version, kv.key, kv.mod_revision)
        hit = self._entries.get(k)
        if hit is not None:
            self._entries.move_to_end(k)
            self.hits += 1
            return hit
        self.misses += 1
        obj = decode(kv)
        entry = (obj, orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS))
        self._entries[k] = entry
        self._bytes += len(entry[1])
        while self._bytes > self.max_bytes and len(self._entries) > 1:
            _, (_, old) = self._entries.popitem(last=False)
            self._bytes -= len(old)
        return entry

    def __len__(self) -> int:
        return len(self._entries)
