"""What the config pages read and do: ``ConfigSource`` is the registry's ``ConfigConsole`` (Consul KV keys,
the change history of a key or of a ConfigMap/Secret, rollback to a revision, environment diffs)."""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["ConfigSource", "breadcrumbs"]


class ConfigSource(Protocol):
    """The reads and the one action of the config pages (``pitwall.registry.ConfigConsole``)."""

    async def keys(self, prefix: str) -> list[Any]:
        """One level under a KV prefix: folders, then keys with size and last change."""

    async def changes(self, key: str, source: str = "consul", limit: int = 100) -> list[Any]:
        """A key's (or ``configmap|secret/NS/NAME``'s with source kubernetes) changes, newest first."""

    async def rollback(self, key: str, to: int, *, who: str) -> dict[str, object]:
        """Put the key or object back as it was at store revision ``to``."""

    async def envs(self, a: str, b: str, service: str = "") -> Any:
        """Keys only in environment A, only in B, and different, under ``config/<env>/[<service>/]``."""


def breadcrumbs(prefix: str) -> list[tuple[str, str]]:
    """(label, prefix) for each folder of ``prefix``, the root first: ``a/b/`` -> root, a/, a/b/."""
    out = [("(root)", "")]
    acc = ""
    for part in [p for p in prefix.split("/") if p]:
        acc += part + "/"
        out.append((part, acc))
    return out
