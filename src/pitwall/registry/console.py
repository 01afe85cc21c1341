"""The config pages' reads and actions: Consul KV keys, the change history of a key or of a ConfigMap or
Secret, a rollback to a revision, and the difference between two environments.

The same operations ``/api/config/v1`` serves (its rollback calls ``ConfigConsole.rollback``), arranged for
a page: values as text (binary ones named as such), each change with its line diff.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import orjson

from pitwall.kube import KubeError
from pitwall.registry.envs import EnvDiff, diff_envs
from pitwall.registry.history import ConfigHistory, HistoryRecord
from pitwall.registry.kube_history import KubeConfigHistory
from pitwall.registry.kv import KVStore
from pitwall.registry.model import ConsulError, check_key
from pitwall.storage.revstore import Compacted, FutureRevision

__all__ = ["ChangeView", "ConfigConsole", "KeyRow"]

MAX_SHOWN = 64 << 10  # bytes of a value shown on a page (the rest is cut, with a note)
MAX_KEYS = 2000  # keys listed under one prefix (the first ones in key order)


@dataclass(frozen=True)
class KeyRow:
    """One entry under a prefix: a key with its value's size and last change, or a folder (ends with ``/``)."""

    key: str
    folder: bool
    size: int = 0
    modify_index: int = 0


@dataclass(frozen=True)
class ChangeView:
    """One recorded change, newest first on a page: who, when, the store revision, old and new as text."""

    revision: int
    who: str
    ts_ns: int
    old: str | None
    new: str | None

    @property
    def kind(self) -> str:
        return "created" if self.old is None else "deleted" if self.new is None else "changed"

    @property
    def diff(self) -> list[str]:
        """The unified diff of old to new (lines without the file headers)."""
        lines = difflib.unified_diff((self.old or "").splitlines(), (self.new or "").splitlines(), lineterm="", n=2)
        return [ln for ln in lines if not ln.startswith(("---", "+++"))]


def as_text(value: bytes | None) -> str | None:
    """A stored value as page text: UTF-8 (cut at ``MAX_SHOWN``), or a note for binary data."""
    if value is None:
        return None
    try:
        text = value[:MAX_SHOWN].decode()
    except UnicodeDecodeError:
        return f"<{len(value)} bytes of binary data>"
    return text + (f"\n… ({len(value) - MAX_SHOWN} more bytes)" if len(value) > MAX_SHOWN else "")


def _kube_text(value: bytes | None) -> str | None:
    """A ConfigMap's or Secret's recorded data as ``key: value`` lines (a Secret's values are digests)."""
    if value is None:
        return None
    d = orjson.loads(value)
    data = {**d.get("data", {}), **d.get("binaryData", {})}
    return "\n".join(f"{k}: {v}" for k, v in sorted(data.items()))


class ConfigConsole:
    """What the config pages show and do, over the registry's KV store and histories."""

    def __init__(self, kv: KVStore, history: ConfigHistory, kube_history: KubeConfigHistory | None) -> None:
        self.kv = kv
        self.history_ = history
        self.kube_history = kube_history

    async def keys(self, prefix: str) -> list[KeyRow]:
        """One level under ``prefix`` (Consul's ``?keys&separator=/``): folders first, then keys."""
        check_key(prefix, allow_empty=True)
        level = await self.kv.level(prefix, "/", MAX_KEYS + 1)  # one more: the key named by the prefix itself
        folders = [KeyRow(x, True) for x in level if isinstance(x, str)]
        rows = [KeyRow(x.key, False, len(x.value), x.modify_index) for x in level
                if not isinstance(x, str) and x.key != prefix]
        return (folders + rows)[:MAX_KEYS]

    def kube_named(self, key: str) -> KubeConfigHistory:
        if self.kube_history is None:
            raise ConsulError(404, "the Kubernetes API is off (kube.enabled: false): no ConfigMap history")
        if not key.startswith(("configmap/", "secret/")) or key.count("/") != 2 or key.endswith("/"):
            raise ConsulError(400, f"source=kubernetes names configmap/NAMESPACE/NAME or "
                                   f"secret/NAMESPACE/NAME, not {key!r}")
        return self.kube_history

    async def records(self, key: str, source: str = "consul", limit: int = 100) -> list[HistoryRecord]:
        """The recorded changes of a Consul key or (``source=kubernetes``) of ``configmap|secret/NS/NAME``,
        oldest first."""
        check_key(key)
        n = max(1, min(limit, 1000))
        if source == "kubernetes":
            return await self.kube_named(key).of(key, limit=n)
        if source == "consul":
            return await self.history_.of(key, limit=n)
        raise ConsulError(400, f"source must be consul or kubernetes, not {source!r}")

    async def changes(self, key: str, source: str = "consul", limit: int = 100) -> list[ChangeView]:
        """The same as ``records``, newest first, as text."""
        text = _kube_text if source == "kubernetes" else as_text
        return [ChangeView(r.revision, r.who, r.ts_ns, text(r.old), text(r.new))
                for r in reversed(await self.records(key, source, limit))]

    async def rollback(self, key: str, to: int, *, who: str) -> dict[str, object]:
        """Put a Consul key, or a ConfigMap/Secret (``configmap|secret/NS/NAME``), back as it was at store
        revision ``to``; what ``POST /api/config/v1/rollback`` answers. Errors are ``ConsulError``s."""
        check_key(key)
        if key.startswith(("configmap/", "secret/")):
            try:
                done = await self.kube_named(key).rollback(key, to, who=who)
            except LookupError as e:
                raise ConsulError(404, str(e)) from None
            except Compacted as e:
                raise ConsulError(410, f"{key} at revision {to} is no longer kept ({e}); a Secret's old values "
                                       f"live only in the store's revisions") from None
            except FutureRevision:
                raise ConsulError(400, f"revision {to} is newer than the store's") from None
            except KubeError as e:  # e.g. a concurrent edit (409): the Kubernetes API's own status
                raise ConsulError(e.code, f"the Kubernetes API refused the rollback: {e}") from None
            return done.to_api()
        recs = [rec for rec in await self.history_.of(key, limit=self.history_.keep) if rec.revision <= to]
        if not recs:
            raise ConsulError(404, f"no recorded change of {key!r} at or before revision {to}")
        value = recs[-1].new
        if value is None:
            await self.kv.delete(key, who=who)
        else:
            await self.kv.put(key, value, who=who)
        now, _ = await self.kv.get(key)
        return {"key": key, "to": to, "revision": now.modify_index if now else None, "deleted": value is None}

    async def envs(self, a: str, b: str, service: str = "") -> EnvDiff:
        return await diff_envs(self.kv, a, b, service)
