"""Prometheus remote write 1.0: snappy-compressed protobuf ``WriteRequest``.

The hot path keeps Python work per series, not per label: a series' raw
label bytes map straight to its sid through a per-tenant cache, and samples
go to numpy arrays. Labels are only decoded for series never seen before.
"""

from __future__ import annotations

from array import array
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from pitwall.core.body import snappy_block
from pitwall.core.errors import BadData
from pitwall.core.labels import Labels, format_labels
from pitwall.core.limits import LimitsSettings, Reservation
from pitwall.core.native import optional_module
from pitwall.metrics.errors import InvalidLabels, RequestTooLarge
from pitwall.metrics.ingest import prompb
from pitwall.metrics.model import Exemplar, MetricMetadata
from pitwall.metrics.store import SeriesAppender

# Built without a C compiler: the upb path below serves.
_rwdecode: Any = optional_module("pitwall._rwdecode")

_NATIVE_FALLBACK = 2 | 4  # exemplars/histograms present, or labels not contiguous

# The decompressed body, and the C decoder's columns (label spans, counts, timestamps, values, flags) if built.
Decoded = tuple[bytes, tuple[bytes, bytes, bytes, bytes, int] | None]


class RemoteWriteIngester:
    """Decodes, validates and durably stores remote-write requests."""

    def __init__(self, store: SeriesAppender, limits: LimitsSettings) -> None:
        self.store = store
        self.limits = limits
        self._cache: dict[str, dict[bytes, int]] = {}
        self._epoch = store.series_epoch

    def _tenant_cache(self, tenant: str) -> dict[bytes, int]:
        """Label bytes -> series id; emptied when the store forgets series (their ids are gone)."""
        if self._epoch != self.store.series_epoch:
            self._cache.clear()
            self._epoch = self.store.series_epoch
        return self._cache.setdefault(tenant, {})

    def decompress(self, body: bytes, reservation: Reservation | None = None) -> bytes:
        return snappy_block(body, self.limits.max_decompressed_bytes, reservation)

    def decode(self, body: bytes, reservation: Reservation | None = None) -> Decoded:
        """Snappy, then the protobuf when the C decoder is built: the CPU part, safe in a worker thread."""
        raw = self.decompress(body, reservation)
        if _rwdecode is None:
            return raw, None
        try:
            return raw, _rwdecode.decode(raw)
        except ValueError as e:
            raise BadData(f"proto: cannot parse request body: {e}") from e

    async def write(self, tenant: str, body: bytes, decoded: Decoded | None = None) -> int:
        """Store one request; returns the number of samples written.

        ``decoded`` is what ``decode(body)`` gave, when the caller ran it already (in a thread).
        """
        raw, native = decoded if decoded is not None else self.decode(body)
        if native is not None and not native[4] & _NATIVE_FALLBACK:
            return await self._write_native(tenant, raw, native)
        return await self._write_upb(tenant, raw)

    async def _write_native(self, tenant: str, raw: bytes, decoded: tuple[bytes, bytes, bytes, bytes, int]) -> int:
        span_b, count_b, ts_b, val_b, flags = decoded
        spans = np.frombuffer(span_b, dtype=np.int64).reshape(-1, 2)
        counts = np.frombuffer(count_b, dtype=np.int64)
        lim = self.limits
        if len(counts) > lim.max_series_per_request:
            raise RequestTooLarge(
                f"request has {len(counts)} series, more than the limit of {lim.max_series_per_request}"
            )
        if len(ts_b) // 8 > lim.max_samples_per_request:
            raise RequestTooLarge(
                f"request has {len(ts_b) // 8} samples, more than the limit of {lim.max_samples_per_request}"
            )
        cache = self._tenant_cache(tenant)
        get = cache.get
        per_series = np.empty(len(counts), dtype=np.int64)
        misses: dict[bytes, Labels] = {}
        miss_pos: list[tuple[int, bytes]] = []
        mv = memoryview(raw)
        for i, (a, b) in enumerate(spans.tolist()):
            key = bytes(mv[a:b])
            sid = get(key)
            if sid is None:
                if key not in misses:
                    misses[key] = self._decode_labels(_split_labels(key))
                miss_pos.append((i, key))
                sid = -1
            per_series[i] = sid
        metadata = None
        if flags & 1:  # parsed before anything is stored: a body upb refuses is refused whole
            req = prompb.FastWriteRequest()
            try:
                req.ParseFromString(raw)
            except DecodeError as e:  # e.g. a metadata string not UTF-8, which the C decoder does not check
                raise BadData(f"proto: cannot parse request body: {e}") from e
            metadata = self._metadata(req)
        new, new_keys = self._resolve_misses(tenant, misses, miss_pos, per_series)
        fut = self.store.commit(
            tenant, np.repeat(per_series, counts), np.frombuffer(ts_b, dtype=np.int64),
            np.frombuffer(val_b, dtype=np.float64), new,
        )
        for key, sid in new_keys:
            cache[key] = sid
        if metadata is not None:
            await self.store.append_metadata(tenant, metadata)
        await fut
        return len(ts_b) // 8

    def _resolve_misses(
        self, tenant: str, misses: dict[bytes, Labels], miss_pos: list[tuple[int, bytes]], per_series: np.ndarray
    ) -> tuple[list[tuple[int, Labels]], list[tuple[bytes, int]]]:
        if not misses:
            return [], []
        keys = list(misses)
        sids, new = self.store.resolve(tenant, [misses[k] for k in keys])
        by_key = dict(zip(keys, sids.tolist(), strict=True))
        for pos, key in miss_pos:
            per_series[pos] = by_key[key]
        return new, list(by_key.items())

    async def _write_upb(self, tenant: str, raw: bytes) -> int:
        req = prompb.FastWriteRequest()
        try:
            req.ParseFromString(raw)
        except DecodeError as e:
            raise BadData(f"proto: cannot parse request body: {e}") from e
        timeseries = req.timeseries
        lim = self.limits
        if len(timeseries) > lim.max_series_per_request:
            raise RequestTooLarge(
                f"request has {len(timeseries)} series, more than the limit of {lim.max_series_per_request}"
            )
        cache = self._tenant_cache(tenant)
        sid_arr = array("q")
        ts_arr = array("q")
        val_arr = array("d")
        counts = array("q")
        misses: dict[bytes, Labels] = {}
        miss_pos: list[tuple[int, bytes]] = []
        exemplars: list[Exemplar] = []
        max_labels = lim.max_labels_per_series
        get = cache.get
        for ts in timeseries:
            lab = ts.labels
            if len(lab) > max_labels:
                raise RequestTooLarge(
                    f"series {format_labels(self._decode_labels(lab))} has {len(lab)} labels, "
                    f"more than the limit of {max_labels}"
                )
            key = b"".join(lab)
            sid = get(key)
            if sid is None:
                if key not in misses:
                    misses[key] = self._decode_labels(lab)
                miss_pos.append((len(counts), key))
                sid = -1
            samples = ts.samples
            counts.append(len(samples))
            sid_arr.append(sid)
            for s in samples:
                val_arr.append(s.value)
                ts_arr.append(s.timestamp)
            if ts.exemplars:
                exemplars.extend(self._exemplars(key, misses, ts))
        if len(ts_arr) > lim.max_samples_per_request:
            raise RequestTooLarge(
                f"request has {len(ts_arr)} samples, more than the limit of {lim.max_samples_per_request}"
            )
        per_series = np.frombuffer(sid_arr, dtype=np.int64).copy()
        new, new_keys = self._resolve_misses(tenant, misses, miss_pos, per_series)
        sids_rep = np.repeat(per_series, np.frombuffer(counts, dtype=np.int64))
        fut = self.store.commit(
            tenant, sids_rep, np.frombuffer(ts_arr, dtype=np.int64), np.frombuffer(val_arr, dtype=np.float64), new
        )
        for key, sid in new_keys:
            cache[key] = sid
        if req.metadata:
            await self.store.append_metadata(tenant, self._metadata(req))
        if exemplars:
            await self.store.append_exemplars(tenant, exemplars)
        await fut
        return len(ts_arr)

    def _decode_labels(self, raw_labels: list[bytes]) -> Labels:
        lim = self.limits
        if len(raw_labels) > lim.max_labels_per_series:
            raise RequestTooLarge(
                f"series has {len(raw_labels)} labels, more than the limit of {lim.max_labels_per_series}"
            )
        pairs: dict[str, str] = {}
        lbl = prompb.Label()
        for raw in raw_labels:
            try:
                lbl.ParseFromString(raw)
            except DecodeError as e:  # a label the C decoder passed on unchecked, e.g. a value not UTF-8
                raise BadData(f"proto: cannot parse request body: {e}") from e
            name, value = lbl.name, lbl.value
            if len(name) > lim.max_label_name_length:
                raise InvalidLabels(f"label name {name[:64]!r}... longer than {lim.max_label_name_length}")
            if len(value) > lim.max_label_value_length:
                raise InvalidLabels(
                    f"value of label {name!r} is {len(value)} characters, longer than {lim.max_label_value_length}"
                )
            if name in pairs:
                raise InvalidLabels(f"duplicate label name {name!r} in series")
            if value:
                pairs[name] = value
        if not pairs.get("__name__"):
            raise InvalidLabels(f"series {format_labels(tuple(sorted(pairs.items())))} has no metric name")
        return tuple(sorted(pairs.items()))

    def _exemplars(self, key: bytes, misses: dict[bytes, Labels], ts: object) -> list[Exemplar]:
        labels = misses.get(key) or self._decode_labels(list(ts.labels))  # type: ignore[attr-defined]
        out = []
        for e in ts.exemplars:  # type: ignore[attr-defined]
            el = tuple(sorted((lb.name, lb.value) for lb in e.labels))
            out.append(Exemplar(labels, el, int(e.timestamp), float(e.value)))
        return out

    def _metadata(self, req: object) -> list[MetricMetadata]:
        return [
            MetricMetadata(m.metric_family_name, prompb.METRIC_TYPES.get(m.type, "unknown"), m.help, m.unit)
            for m in req.metadata  # type: ignore[attr-defined]
            if m.metric_family_name
        ]


def _split_labels(key: bytes) -> list[bytes]:
    """The raw ``Label`` messages inside a run of TimeSeries field-1 records."""
    out = []
    pos = 0
    while pos < len(key):
        pos += 1  # tag 0x0a
        length = shift = 0
        while True:
            c = key[pos]
            pos += 1
            length |= (c & 0x7F) << shift
            if not c & 0x80:
                break
            shift += 7
        out.append(key[pos : pos + length])
        pos += length
    return out
