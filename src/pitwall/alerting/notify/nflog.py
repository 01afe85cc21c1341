"""The notification log: what each integration last sent for each group.

Alertmanager's ``nflog``: one entry per (receiver integration, group key)
holding the hashes of the firing and resolved alerts last notified and when.
The dedup stage compares the group's current state with it; entries are
persisted in the state store so a restart neither repeats nor forgets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pitwall.storage.state import NflogRow, StateStore

__all__ = ["NflogEntry", "NotificationLog", "needs_update"]


@dataclass(frozen=True)
class NflogEntry:
    timestamp: datetime
    firing: frozenset[int]
    resolved: frozenset[int]


class NotificationLog:
    def __init__(self, store: StateStore, retention: timedelta) -> None:
        self.store = store
        self.retention = retention
        self._entries: dict[tuple[str, str], NflogEntry] = {}

    def load(self) -> None:
        self._entries = {
            (r.receiver, r.group_key): NflogEntry(datetime.fromtimestamp(r.timestamp, UTC),
                                                  frozenset(r.firing), frozenset(r.resolved))
            for r in self.store.load_nflog()
        }

    def query(self, receiver: str, group_key: str) -> NflogEntry | None:
        return self._entries.get((receiver, group_key))

    def log(self, receiver: str, group_key: str, firing: frozenset[int], resolved: frozenset[int],
            now: datetime) -> None:
        self._entries[(receiver, group_key)] = NflogEntry(now, firing, resolved)
        self.store.put_nflog(NflogRow(receiver, group_key, now.timestamp(), sorted(firing), sorted(resolved),
                                      (now + self.retention).timestamp()))

    def gc(self, now: datetime) -> int:
        limit = now - self.retention
        dead = [k for k, e in self._entries.items() if e.timestamp < limit]
        for k in dead:
            del self._entries[k]
        self.store.delete_nflog_expired(now.timestamp())
        return len(dead)


def needs_update(entry: NflogEntry | None, firing: frozenset[int], resolved: frozenset[int],
                 send_resolved: bool, repeat: timedelta, now: datetime) -> bool:
    """Alertmanager's DedupStage rule for whether to notify again."""
    if entry is None:
        return bool(firing)
    if not firing <= entry.firing:
        return True
    if not firing:
        # Everything resolved: notify (even without send_resolved) so the log forgets the firing set,
        # unless nothing had been firing at the last notification either.
        return bool(entry.firing)
    if send_resolved and not resolved <= entry.resolved:
        return True
    return entry.timestamp < now - repeat
