"""Small readers of Kubernetes objects (plain dicts in their API shape) shared by the pages built on them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

__all__ = ["condition", "meta", "obj_time", "quote"]

Obj = dict[str, Any]


def meta(o: Obj) -> Obj:
    return o.get("metadata") or {}


def condition(o: Obj, type_: str) -> Obj:
    """The status condition of this type ({} when absent)."""
    return next((c for c in (o.get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})


def obj_time(s: Any) -> datetime | None:
    """An RFC 3339 time of an object (``2024-05-01T10:00:00Z``); None when absent or unreadable."""
    if not isinstance(s, str) or not s:
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None


def quote(v: str) -> str:
    """A label value inside a PromQL/LogQL double-quoted string."""
    return v.replace("\\", "\\\\").replace('"', '\\"')
