"""Alerts as the pipeline holds them: identity, merge rules and the in-memory store.

An alert is identified by its label set's fingerprint (Prometheus' FNV-1a
label hash, printed as 16 hex digits, as Alertmanager shows it). Re-posting an
alert merges it with the stored one as Alertmanager's ``types.Alert.Merge``
does: the younger update wins, the earliest start is kept, and an explicit end
time beats one that only came from ``resolve_timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

__all__ = ["AlertStore", "StoredAlert", "fingerprint", "labels_before", "labels_string", "sort_alerts"]

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_MASK = (1 << 64) - 1
_SEP = 0xFF


def _fnv_add(h: int, data: bytes) -> int:
    for b in data:
        h ^= b
        h = (h * _FNV_PRIME) & _MASK
    return h


def fingerprint(labels: Mapping[str, str]) -> int:
    """Prometheus' ``LabelSet.Fingerprint``: FNV-1a over sorted name, 0xff, value, 0xff."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        h = _fnv_add(h, name.encode())
        h = _fnv_add(h, bytes([_SEP]))
        h = _fnv_add(h, labels[name].encode())
        h = _fnv_add(h, bytes([_SEP]))
    return h


def labels_string(labels: Mapping[str, str]) -> str:
    """``{a="1", b="2"}``: Prometheus' ``LabelSet.String`` (used in group keys)."""
    from pitwall.core.gofmt import go_quote

    return "{" + ", ".join(f"{k}={go_quote(labels[k])}" for k in sorted(labels)) + "}"


def labels_before(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """Prometheus' ``LabelSet.Before``: fewer labels first, then by sorted name/value pairs."""
    if len(a) != len(b):
        return len(a) < len(b)
    for name in sorted({*a, *b}):
        if name not in a:
            return True
        if name not in b:
            return False
        if a[name] != b[name]:
            return a[name] < b[name]
    return False


@dataclass(frozen=True)
class StoredAlert:
    """One alert in the pipeline. ``ends_at`` is None only for an ongoing alert being notified."""

    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    updated_at: datetime
    generator_url: str = ""
    timeout: bool = False  # ends_at came from resolve_timeout, not from the sender
    fp: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if not self.fp:
            object.__setattr__(self, "fp", fingerprint(self.labels))

    @property
    def fingerprint(self) -> str:
        return f"{self.fp:016x}"

    def resolved_at(self, now: datetime) -> bool:
        return self.ends_at is not None and self.ends_at <= now

    def merge(self, other: StoredAlert) -> StoredAlert:
        """Alertmanager's Merge: ``other`` is the newer post of the same alert."""
        if other.updated_at < self.updated_at:
            return other.merge(self)
        res = other
        if self.starts_at < other.starts_at:
            res = replace(res, starts_at=self.starts_at)
        now = datetime.now(UTC)
        if other.resolved_at(now):
            if self.resolved_at(now) and _after(self.ends_at, other.ends_at):
                res = replace(res, ends_at=self.ends_at)
        elif _after(self.ends_at, other.ends_at) and not self.timeout:
            res = replace(res, ends_at=self.ends_at)
        return res


def _after(a: datetime | None, b: datetime | None) -> bool:
    if a is None:
        return False
    return b is None or a > b


def sort_alerts(alerts: Iterable[StoredAlert]) -> list[StoredAlert]:
    """Alertmanager's AlertSlice order: by ``job``, then ``instance`` (present first), then labels."""
    import functools

    def cmp(x: StoredAlert, y: StoredAlert) -> int:
        for key in ("job", "instance"):
            xv, yv = x.labels.get(key), y.labels.get(key)
            if xv is None and yv is None:
                continue
            if xv is None:
                return 1
            if yv is None:
                return -1
            if xv != yv:
                return -1 if xv < yv else 1
        if labels_before(x.labels, y.labels):
            return -1
        return 1 if labels_before(y.labels, x.labels) else 0

    return sorted(alerts, key=functools.cmp_to_key(cmp))


Listener = Callable[[StoredAlert], None]


class AlertStore:
    """Alerts by fingerprint, with listeners (the dispatcher, the inhibitor) told of each put."""

    def __init__(self, max_alerts: int) -> None:
        self.max_alerts = max_alerts
        self._alerts: dict[int, StoredAlert] = {}
        self._listeners: list[Listener] = []
        self.lock = asyncio.Lock()

    def subscribe(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def unsubscribe(self, fn: Listener) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def __len__(self) -> int:
        return len(self._alerts)

    def get(self, fp: int) -> StoredAlert | None:
        return self._alerts.get(fp)

    def list(self) -> list[StoredAlert]:
        return list(self._alerts.values())

    def put(self, alert: StoredAlert) -> StoredAlert:
        """Store (merging with an overlapping older post) and tell listeners."""
        old = self._alerts.get(alert.fp)
        if old is not None and _overlaps(old, alert):
            alert = old.merge(alert)
        self._alerts[alert.fp] = alert
        for fn in list(self._listeners):
            fn(alert)
        return alert

    def gc(self, now: datetime, keep: timedelta) -> int:
        """Drop alerts resolved longer than ``keep`` ago; returns how many."""
        limit = now - keep
        dead = [fp for fp, a in self._alerts.items() if a.ends_at is not None and a.ends_at < limit]
        for fp in dead:
            del self._alerts[fp]
        return len(dead)


def _overlaps(old: StoredAlert, new: StoredAlert) -> bool:
    """Alertmanager merges only when the new activity range overlaps the stored one."""
    old_end = old.ends_at or datetime.max.replace(tzinfo=UTC)
    if new.ends_at is not None and old.starts_at < new.ends_at < old_end:
        return True
    return old.starts_at < new.starts_at < old_end
