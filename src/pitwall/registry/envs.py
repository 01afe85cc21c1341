"""Environments over Consul KV: ``config/<env>/<service>/<key>``, and the difference between two of them.

An environment is a KV prefix: ``config/staging/web/timeout`` is service
``web``'s ``timeout`` in ``staging``. Comparing environments compares the
keys relative to each one's prefix (``web/timeout``), at the store's
current revision, in one read each.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from pitwall.registry.kv import KVStore
from pitwall.registry.model import ConsulError, check_key

__all__ = ["ENV_ROOT", "EnvDiff", "diff_envs", "env_prefix"]

ENV_ROOT = "config/"
MAX_ENV_KEYS = 10_000  # per side: a diff larger than this is answered with 413, not built in memory


def env_prefix(env: str, service: str = "") -> str:
    """``config/<env>/`` (or ``config/<env>/<service>/``); a clear 400 for a name with ``/`` or nothing."""
    for what, name in (("environment", env), ("service", service)):
        if name == "" and what == "service":
            continue
        if not name or "/" in name:
            raise ConsulError(400, f"{what} must be a non-empty name without '/', got {name!r}")
        check_key(name)
    return f"{ENV_ROOT}{env}/" + (f"{service}/" if service else "")


@dataclass
class EnvDiff:
    """Keys (relative to the environment's prefix) only in A, only in B, and with different values."""

    a: str
    b: str
    service: str
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    different: list[tuple[str, bytes, bytes]] = field(default_factory=list)

    def to_api(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "service": self.service, "only_in_a": self.only_in_a,
                "only_in_b": self.only_in_b,
                "different": [{"Key": k, "A": base64.b64encode(va).decode(), "B": base64.b64encode(vb).decode()}
                              for k, va, vb in self.different]}


async def _values(kv: KVStore, prefix: str) -> dict[str, bytes]:
    entries, _ = await kv.tree(prefix)
    if len(entries) > MAX_ENV_KEYS:
        raise ConsulError(413, f"{prefix} holds more than {MAX_ENV_KEYS} keys: compare one service (--service)")
    return {e.key.removeprefix(prefix): e.value for e in entries if not e.key.endswith("/")}


async def diff_envs(kv: KVStore, a: str, b: str, service: str = "") -> EnvDiff:
    """How environment ``b`` differs from ``a`` (only ``service``'s keys when given)."""
    pa, pb = env_prefix(a, service), env_prefix(b, service)
    va, vb = await _values(kv, pa), await _values(kv, pb)
    out = EnvDiff(a, b, service)
    prefix = f"{service}/" if service else ""
    out.only_in_a = [prefix + k for k in sorted(va.keys() - vb.keys())]
    out.only_in_b = [prefix + k for k in sorted(vb.keys() - va.keys())]
    out.different = [(prefix + k, va[k], vb[k]) for k in sorted(va.keys() & vb.keys()) if va[k] != vb[k]]
    return out
