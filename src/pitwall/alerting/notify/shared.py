"""One alert space across servers: alerts posted to any server reach every server's pipeline.

Several servers share the state store (etcd or PostgreSQL through ``RevStore``). Each valid alert a server
receives (``POST /api/v2/alerts``, its own rule evaluation) is also written to the store under
``/pitwall/alertmanager/alerts/<fingerprint>`` with a lease that lasts until the alert's ``endsAt`` (at least
``MIN_TTL_S``, so a resolved alert still reaches the leader to be notified as resolved). Every server watches
that key space and puts what other servers wrote into its own alert store, so the leader notifies an alert
posted to a follower at its next flush, and a new leader already holds every live alert: nothing depends on
which server a load balancer picked, and nothing is lost when the leader dies. Expired keys vanish with their
lease; each server drops resolved alerts from memory as before.

Bounds: a value is at most ``MAX_VALUE_BYTES``; ingesting stops adding new alerts at the pipeline's
``max_alerts`` (the same bound a POST has); one write holds at most ``MAX_TXN_OPS`` alerts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pitwall.alerting.notify.alerts import StoredAlert
from pitwall.storage.revstore import Compacted, Event, Op, RevStore

__all__ = ["MAX_VALUE_BYTES", "PREFIX", "SharedAlerts", "decode_alert", "encode_alert"]

log = logging.getLogger(__name__)

PREFIX = "/pitwall/alertmanager/alerts/"
MAX_VALUE_BYTES = 64 * 1024
MAX_TXN_OPS = 100  # below etcd's default --max-txn-ops (128)
MIN_TTL_S = 300.0  # a resolved alert (endsAt passed) stays this long, for the leader to send "resolved"
MAX_TTL_S = 7 * 86400.0
TTL_STEP_S = 10.0
LOAD_PAGE = 500  # keys per read when a server (re)loads the shared alerts  # alerts of one write whose TTLs round up to the same step share a lease


def encode_alert(a: StoredAlert, origin: str) -> bytes:
    """The stored form of an alert (JSON), tagged with the server that received it."""
    return json.dumps({
        "origin": origin, "labels": a.labels, "annotations": a.annotations,
        "startsAt": a.starts_at.timestamp(), "endsAt": a.ends_at.timestamp() if a.ends_at else None,
        "updatedAt": a.updated_at.timestamp(), "generatorURL": a.generator_url, "timeout": a.timeout,
    }, separators=(",", ":")).encode()


def decode_alert(raw: bytes) -> tuple[str, StoredAlert]:
    """(origin, alert) from ``encode_alert``'s bytes; ValueError/KeyError/TypeError when malformed."""
    d: dict[str, Any] = json.loads(raw)

    def ts(x: float) -> datetime:
        return datetime.fromtimestamp(float(x), UTC)

    labels = {str(k): str(v) for k, v in dict(d["labels"]).items()}
    annotations = {str(k): str(v) for k, v in dict(d["annotations"]).items()}
    alert = StoredAlert(labels, annotations, ts(d["startsAt"]), ts(d["endsAt"]) if d["endsAt"] is not None else None,
                        ts(d["updatedAt"]), str(d.get("generatorURL", "")), bool(d.get("timeout", False)))
    return str(d["origin"]), alert


def _ttl_s(a: StoredAlert, now: datetime) -> float:
    """Until ``endsAt`` (rounded up to ``TTL_STEP_S``), within [MIN_TTL_S, MAX_TTL_S]."""
    left = (a.ends_at - now).total_seconds() if a.ends_at is not None else MAX_TTL_S
    return min(MAX_TTL_S, max(MIN_TTL_S, math.ceil(left / TTL_STEP_S) * TTL_STEP_S))


class SharedAlerts:
    """Publishes a server's received alerts to the state store and feeds other servers' alerts to ``ingest``."""

    def __init__(self, store: RevStore, ingest: Callable[[StoredAlert], bool], *, prefix: str = PREFIX) -> None:
        self.store = store
        self.ingest = ingest  # puts one alert into the local pipeline; False when it was refused (full)
        self.prefix = prefix
        self.origin = uuid.uuid4().hex  # this server's writes, so its own watch skips them
        self.published = 0
        self.received = 0
        self.refused = 0

    async def publish(self, alerts: Sequence[StoredAlert]) -> None:
        """Write ``alerts`` (already validated and held locally) with leases until their ``endsAt``."""
        now = datetime.now(UTC)
        by_ttl: dict[float, list[Op]] = {}
        for a in alerts:
            value = encode_alert(a, self.origin)
            if len(value) > MAX_VALUE_BYTES:
                log.warning("alert too large to share with the other servers; held on this one only",
                            extra={"alert": a.fingerprint, "bytes": len(value), "limit": MAX_VALUE_BYTES})
                continue
            by_ttl.setdefault(_ttl_s(a, now), []).append(Op.put(self.prefix + a.fingerprint, value))
        for ttl, ops in sorted(by_ttl.items()):
            lease = await self.store.grant(ttl)
            for i in range(0, len(ops), MAX_TXN_OPS):
                await self.store.txn([], [Op.put(o.key, o.value, lease) for o in ops[i:i + MAX_TXN_OPS]])
            self.published += len(ops)

    async def run(self) -> None:
        """Follow the key space until cancelled: every live alert first, then each change."""
        while True:
            try:
                rev = await self._load()
                await self._watch(rev + 1)
            except asyncio.CancelledError:
                raise
            except Compacted:
                continue  # fell behind the compaction: read the current keys again
            except Exception as e:  # the store is unreachable: retry, the alerts in memory stay
                log.warning("following shared alerts failed; retrying", extra={"error": repr(e)})
                await asyncio.sleep(1.0)

    async def _load(self) -> int:
        """Take in every live key, a page at a time at one revision; returns that revision."""
        res = await self.store.range(self.prefix, limit=LOAD_PAGE)
        rev = res.revision
        while True:
            for kv in res.kvs:
                self._take(kv.value)
            if not res.more or not res.kvs:
                return rev
            res = await self.store.range(self.prefix, start=res.kvs[-1].key + "\0", limit=LOAD_PAGE, revision=rev)

    async def _watch(self, start: int) -> None:
        async for batch in self.store.watch(self.prefix, start_revision=start):
            self._events(batch)

    def _events(self, batch: list[Event]) -> None:
        for ev in batch:
            if ev.type == "PUT":
                self._take(ev.kv.value)

    def _take(self, raw: bytes) -> None:
        try:
            origin, alert = decode_alert(raw)
        except (ValueError, KeyError, TypeError) as e:
            log.warning("skipping a malformed shared alert", extra={"error": repr(e)})
            return
        if origin == self.origin:
            return
        if self.ingest(alert):
            self.received += 1
        else:
            self.refused += 1
