"""The one gate every log intake path goes through (Loki's distributor, in one process).

Decoders turn a request into ``EntryColumns``; ``LogIngester.push`` checks
Loki's per-entry limits (line size, age, structured metadata) and the
tenant's ingestion rate, hands the valid entries to the store and awaits the
WAL fsync. As Loki does, invalid entries are dropped and reported while the
valid ones are kept; request-wide limits refuse the whole request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pitwall.core.arrow_compute import pc
from pitwall.core.labels import format_labels
from pitwall.logs.errors import EntryRejected, LineTooLong, RateLimited, RequestTooLarge
from pitwall.logs.ingest.levels import LevelDetector, assign_levels
from pitwall.logs.labels import validate
from pitwall.logs.model import EntryColumns, Labels, ns_to_rfc3339
from pitwall.logs.settings import LogLimits
from pitwall.logs.store import LogCommitter

_MB = 1 << 20


class TokenBucket:
    """Bytes per second with a burst, per tenant (Loki's local ingestion rate strategy)."""

    def __init__(self, rate_bytes: float, burst_bytes: float) -> None:
        self.rate = rate_bytes
        self.burst = burst_bytes
        self._tokens: dict[str, tuple[float, float]] = {}

    def take(self, tenant: str, n: int, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, last = self._tokens.get(tenant, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if n > tokens:
            self._tokens[tenant] = (tokens, now)
            return False
        self._tokens[tenant] = (tokens - n, now)
        return True


@dataclass
class PushOutcome:
    """How many entries were stored; for refused ones, their index and Loki's reason."""

    accepted: int
    rejected: int
    reasons: dict[int, str]


class LogIngester:
    """Validates and stores pushed entries for every intake path."""

    def __init__(self, store: LogCommitter, limits: LogLimits) -> None:
        self.store = store
        self.limits = limits
        self.rate = TokenBucket(limits.ingestion_rate_mb * _MB, limits.ingestion_burst_size_mb * _MB)
        self._valid_labels: dict[Labels, None] = {}
        self._service_named: dict[Labels, Labels] = {}
        self.levels = LevelDetector(limits.log_level_fields, limits.log_level_from_json_max_depth) \
            if limits.discover_log_levels else None

    def check_request(self, n_streams: int, n_entries: int) -> None:
        lim = self.limits
        if n_streams > lim.max_streams_per_request:
            raise RequestTooLarge(
                f"request has {n_streams} streams, more than the limit of {lim.max_streams_per_request}")
        if n_entries > lim.max_entries_per_request:
            raise RequestTooLarge(
                f"request has {n_entries} entries, more than the limit of {lim.max_entries_per_request}")

    def with_service_name(self, labels: Labels) -> Labels:
        """``labels`` plus Loki's ``service_name`` when absent: the first ``discover_service_name``
        label with a value, else ``unknown_service``."""
        got = self._service_named.get(labels)
        if got is not None:
            return got
        d = dict(labels)
        out = labels
        if "service_name" not in d:
            svc = next((d[k] for k in self.limits.discover_service_name if d.get(k)), "unknown_service")
            out = tuple(sorted((*labels, ("service_name", svc))))
        if len(self._service_named) > 200_000:
            self._service_named.clear()
        self._service_named[labels] = out
        return out

    def validate_labels(self, labels: Labels) -> None:
        if labels in self._valid_labels:
            return
        validate(labels, self.limits)
        if len(self._valid_labels) > 200_000:
            self._valid_labels.clear()
        self._valid_labels[labels] = None

    async def push(self, tenant: str, cols: EntryColumns, *, now_ns: int | None = None,
                   raise_on_reject: bool = True) -> PushOutcome:
        """Store the valid entries of ``cols`` durably; raise ``EntryRejected`` naming the others.

        With ``raise_on_reject=False`` the outcome lists refused entries instead
        (Elasticsearch's per-item answers).
        """
        n = len(cols)
        self.check_request(len(cols.streams), n)
        if self.limits.discover_service_name:
            cols.streams = [self.with_service_name(lbl) for lbl in cols.streams]
        for lbl in cols.streams:
            self.validate_labels(lbl)
        if not n:
            return PushOutcome(0, 0, {})
        now_ns = time.time_ns() if now_ns is None else now_ns
        line_arr = cols.line_array if cols.line_array is not None else pa.array(cols.lines, pa.string())
        nbytes = pc.binary_length(line_arr).to_numpy(zero_copy_only=False).astype(np.int64)
        keep, reasons = self._entry_checks(cols, nbytes, now_ns)
        total = int(nbytes[keep].sum())
        n_keep = int(keep.sum())
        if n_keep and not self.rate.take(tenant, total):
            raise RateLimited(
                f"Ingestion rate limit exceeded for user {tenant} (limit: {int(self.limits.ingestion_rate_mb * _MB)} "
                f"bytes/sec) while attempting to ingest '{n_keep}' lines totaling '{total}' bytes, reduce log "
                "volume or contact your Loki administrator to see if the limit can be increased",
                retry_after=1.0,
            )
        cols.line_array = line_arr
        kept_idx = np.flatnonzero(keep)
        if len(kept_idx) < n:
            cols = _subset(cols, keep)
        if self.levels is not None:
            # After validation, as Loki's distributor: the added metadata counts against no limit.
            cols = assign_levels(cols, self.levels)
        res = self.store.commit(tenant, cols)
        if res.fsynced is not None:
            await res.fsynced
        if res.keep is not None:
            refused = kept_idx[~res.keep]
            for j, i in enumerate(refused[: len(res.errors)].tolist()):
                reasons[i] = res.errors[j]
            for i in refused[len(res.errors):].tolist():
                reasons[i] = "entry out of order"
        rejected = n - res.accepted
        if rejected and raise_on_reject:
            shown = "\n".join(list(reasons.values())[:10])
            raise EntryRejected(f"{shown}\nuser '{tenant}', total ignored: {rejected} out of {n}")
        return PushOutcome(res.accepted, rejected, reasons)

    def _entry_checks(self, cols: EntryColumns, nbytes: np.ndarray, now_ns: int) -> tuple[np.ndarray, dict[int, str]]:
        lim = self.limits
        ts = cols.ts
        too_long = nbytes > lim.max_line_size
        too_new = ts > now_ns + lim.creation_grace_period * 1_000_000
        too_old = (ts < now_ns - lim.reject_old_samples_max_age * 1_000_000) if lim.reject_old_samples_max_age \
            else np.zeros(len(ts), dtype=bool)
        bad = too_long | too_new | too_old
        md_bad = self._metadata_checks(cols)
        if md_bad is not None:
            bad |= md_bad
        if not bad.any():
            return ~bad, {}
        errors: dict[int, str] = {}
        for i in np.flatnonzero(bad)[:1000].tolist():
            stream = format_labels(cols.streams[int(cols.stream_idx[i])])
            if too_long[i]:
                errors[i] = str(LineTooLong(
                    f"max entry size '{lim.max_line_size}' bytes exceeded for stream '{stream}' while adding an "
                    f"entry with length '{int(nbytes[i])}' bytes"))
            elif too_new[i]:
                errors[i] = f"entry for stream '{stream}' has timestamp too new: {ns_to_rfc3339(int(ts[i]))}"
            elif too_old[i]:
                oldest = now_ns - lim.reject_old_samples_max_age * 1_000_000
                errors[i] = (f"entry for stream '{stream}' has timestamp too old: {ns_to_rfc3339(int(ts[i]))}, "
                             f"oldest acceptable timestamp is: {ns_to_rfc3339(oldest)}")
            else:
                errors[i] = (f"stream '{stream}' has structured metadata too large or with too many entries "
                             f"(limits: {lim.max_structured_metadata_size} bytes, "
                             f"{lim.max_structured_metadata_entries} entries); see "
                             "limits_config.max_structured_metadata_size")
        return ~bad, errors

    def _metadata_checks(self, cols: EntryColumns) -> np.ndarray | None:
        if cols.metadata is None:
            return None
        lim = self.limits
        bad = np.zeros(len(cols), dtype=bool)
        for i, md in enumerate(cols.metadata):
            if md and (len(md) > lim.max_structured_metadata_entries
                       or sum(len(k) + len(v) for k, v in md) > lim.max_structured_metadata_size):
                bad[i] = True
        return bad


def _subset(cols: EntryColumns, keep: np.ndarray) -> EntryColumns:
    mask = keep.tolist()
    return EntryColumns(
        streams=cols.streams,
        stream_idx=cols.stream_idx[keep],
        ts=cols.ts[keep],
        lines=[x for x, k in zip(cols.lines, mask, strict=True) if k],
        metadata=None if cols.metadata is None else [x for x, k in zip(cols.metadata, mask, strict=True) if k],
        line_array=None if cols.line_array is None else cols.line_array.filter(pa.array(keep)),
    )
