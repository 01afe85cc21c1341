"""Silences, persisted in the state store, with Alertmanager's state rules.

A silence is pending before ``startsAt``, active until ``endsAt``, then
expired. Updating keeps the id only when Alertmanager would (same matchers,
and an active silence keeps its start); otherwise the old one is expired and
a new id issued. Expired silences are kept for ``retention`` then dropped.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pitwall.alerting.notify.errors import SilenceAlreadyExpired, SilenceNotFound
from pitwall.alerting.notify.matchers import Matcher, MatcherError, is_valid_label_name
from pitwall.core.errors import BadData
from pitwall.storage.state import SilenceRow, StateStore

__all__ = ["Silence", "SilenceState", "Silences", "filter_labels_match"]

SilenceState = Literal["expired", "active", "pending"]
_STATE_ORDER = {"active": 0, "pending": 1, "expired": 2}


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    annotations: dict[str, str] = field(default_factory=dict)

    def state(self, now: datetime) -> SilenceState:
        if now < self.starts_at:
            return "pending"
        if now > self.ends_at:
            return "expired"
        return "active"

    def mutes(self, labels: Mapping[str, str], now: datetime) -> bool:
        return self.state(now) == "active" and all(m.matches(labels.get(m.name, "")) for m in self.matchers)

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": [{"name": m.name, "type": m.type, "value": m.value} for m in self.matchers],
            "startsAt": self.starts_at.timestamp(), "endsAt": self.ends_at.timestamp(),
            "updatedAt": self.updated_at.timestamp(), "createdBy": self.created_by, "comment": self.comment,
            "annotations": self.annotations,
        }

    @classmethod
    def from_doc(cls, d: Mapping[str, Any]) -> Silence:
        def ts(x: float) -> datetime:
            return datetime.fromtimestamp(x, UTC)

        return cls(
            id=d["id"],
            matchers=tuple(Matcher.create(m["name"], m["type"], m["value"]) for m in d["matchers"]),
            starts_at=ts(d["startsAt"]), ends_at=ts(d["endsAt"]), updated_at=ts(d["updatedAt"]),
            created_by=d.get("createdBy", ""), comment=d.get("comment", ""),
            annotations=dict(d.get("annotations") or {}),
        )


def _validate(s: Silence) -> None:
    if not s.matchers:
        raise BadData("at least one matcher required")
    for m in s.matchers:
        if not is_valid_label_name(m.name):
            raise BadData(f'invalid label name "{m.name}"')
    if all(m.matches("") for m in s.matchers):
        raise BadData("at least one matcher must not match the empty string")
    if s.ends_at < s.starts_at:
        raise BadData("end time must not be before start time")


def _can_update(a: Silence, b: Silence, now: datetime) -> bool:
    if a.matchers != b.matchers:
        return False
    st = a.state(now)
    if st == "active":
        return b.starts_at == a.starts_at and not b.ends_at < now
    if st == "pending":
        return not b.starts_at < now
    return False


def _ms(t: datetime) -> datetime:
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def filter_labels_match(filters: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    """Alertmanager's API ``filter`` semantics against a label set (or a silence's matchers)."""
    for m in filters:
        present = m.name in labels
        v = labels.get(m.name, "")
        if m.type in ("!=", "!~"):
            if m.value == "" and present:
                continue
        elif m.value == "" and not present:
            continue
        if not m.matches(v):
            return False
    return True


class Silences:
    """All silences of a tenant, kept in memory and written through to the state store."""

    def __init__(self, store: StateStore, retention: timedelta,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.retention = retention
        self.now = now
        self._by_id: dict[str, Silence] = {}

    def load(self) -> None:
        self._by_id = {}
        for row in self.store.load_silences():
            try:
                s = Silence.from_doc(row.doc)
            except (KeyError, ValueError, MatcherError):
                continue  # a row written by a newer version; keep serving the rest
            self._by_id[s.id] = s

    def _save(self, s: Silence) -> None:
        self._by_id[s.id] = s
        self.store.put_silence(SilenceRow(s.id, s.to_doc(), s.ends_at.timestamp(), s.updated_at.timestamp()))

    def get(self, id_: str) -> Silence:
        try:
            return self._by_id[id_]
        except KeyError:
            raise SilenceNotFound("silence not found") from None

    def all(self) -> list[Silence]:
        return list(self._by_id.values())

    def set(self, s: Silence) -> str:
        """Create (empty id) or update a silence; returns the id it ends up with."""
        now = _ms(self.now())
        # The API shows milliseconds; storing no finer lets a client send a silence back unchanged.
        s = replace(s, starts_at=_ms(s.starts_at), ends_at=_ms(s.ends_at))
        if s.id:
            prev = self.get(s.id)
            if _can_update(prev, s, now):
                upd = replace(s, updated_at=now)
                _validate(upd)
                self._save(upd)
                return upd.id
            if prev.state(now) != "expired":
                self.expire(prev.id)
        new = replace(s, id=str(uuid.uuid4()), updated_at=now,
                      starts_at=max(s.starts_at, now))
        _validate(new)
        self._save(new)
        return new.id

    def expire(self, id_: str) -> None:
        s = self.get(id_)
        now = self.now()
        st = s.state(now)
        if st == "expired":
            raise SilenceAlreadyExpired(f"silence {id_} already expired")
        if st == "pending":
            s = replace(s, starts_at=now, ends_at=now, updated_at=now)
        else:
            s = replace(s, ends_at=now, updated_at=now)
        self._save(s)

    def mutes(self, labels: Mapping[str, str], now: datetime | None = None) -> list[str]:
        """Ids of active silences matching ``labels``, sorted."""
        t = now or self.now()
        return sorted(s.id for s in self._by_id.values() if s.mutes(labels, t))

    def query(self, filters: Sequence[Matcher] = ()) -> list[Silence]:
        """Silences whose matchers satisfy the API filter, in Alertmanager's order."""
        now = self.now()
        out = [s for s in self._by_id.values()
               if filter_labels_match(filters, {m.name: m.value for m in s.matchers})]

        def key(s: Silence) -> tuple[int, float]:
            st = s.state(now)
            if st == "active":
                return (0, s.ends_at.timestamp())
            if st == "pending":
                return (1, s.starts_at.timestamp())
            return (2, -s.ends_at.timestamp())

        return sorted(out, key=key)

    def gc(self) -> int:
        """Forget silences expired longer than the retention ago."""
        limit = self.now() - self.retention
        dead = [i for i, s in self._by_id.items() if s.ends_at < limit]
        for i in dead:
            del self._by_id[i]
        self.store.delete_silences_ended_before(limit.timestamp())
        return len(dead)
