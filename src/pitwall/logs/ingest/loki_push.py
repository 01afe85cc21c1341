"""Loki push ``POST /loki/api/v1/push``: JSON, or snappy-compressed protobuf (promtail, Alloy, Fluent Bit).

Both decoders produce ``EntryColumns``: per stream, timestamps go straight
into numpy and lines into one list, so no object is built per entry beyond
what the wire decoder itself creates. A stream's label string is parsed once
per tenant and cached.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import cramjam
import numpy as np
from google.protobuf.message import DecodeError

from pitwall.core.errors import BadData
from pitwall.logs.errors import InvalidPush, RequestTooLarge
from pitwall.logs.ingest import logproto
from pitwall.logs.labels import canonical, parse_labels
from pitwall.logs.model import Labels
from pitwall.storage.logs_store import EntryColumns, Metadata

JSON = "application/json"


class LabelCache:
    """Label string -> canonical Labels, bounded (label strings repeat on every push)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._cache: dict[str, Labels] = {}

    def get(self, text: str) -> Labels:
        lbl = self._cache.get(text)
        if lbl is None:
            lbl = parse_labels(text)
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            self._cache[text] = lbl
        return lbl


def decompress(body: bytes, content_encoding: str, max_bytes: int) -> bytes:
    """Undo ``Content-Encoding`` gzip/deflate/snappy within ``max_bytes``."""
    enc = content_encoding.strip().lower()
    if enc in ("", "identity"):
        return body
    if enc in ("gzip", "deflate"):
        d = zlib.decompressobj(16 + zlib.MAX_WBITS if enc == "gzip" else zlib.MAX_WBITS)
        try:
            out = d.decompress(body, max_bytes + 1)
        except zlib.error as e:
            raise InvalidPush(f"invalid {enc} body: {e}") from e
        if len(out) > max_bytes:
            raise RequestTooLarge(f"decompressed body exceeds the limit of {max_bytes} bytes")
        return out
    if enc == "snappy":
        return snappy_block(body, max_bytes)
    raise BadData(f"unsupported Content-Encoding {content_encoding!r}")


def snappy_block(body: bytes, max_bytes: int) -> bytes:
    try:
        n = cramjam.snappy.decompress_raw_len(body)
    except Exception as e:
        raise InvalidPush(f"snappy: {str(e).removeprefix('snappy: ')}") from e
    if n > max_bytes:
        raise RequestTooLarge(f"decompressed body of {n} bytes exceeds the limit of {max_bytes}")
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except Exception as e:
        raise InvalidPush(f"snappy: {str(e).removeprefix('snappy: ')}") from e


def decode_json(body: bytes) -> EntryColumns:
    """Loki's JSON push body: ``{"streams": [{"stream": {...}, "values": [["<ns>", "<line>", {md}?]]}]}``."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise InvalidPush(f"loghttp.PushRequest: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("streams"), list):
        raise InvalidPush('loghttp.PushRequest: expected an object with a "streams" array')
    streams: list[Labels] = []
    counts: list[int] = []
    ts_parts: list[np.ndarray] = []
    lines: list[str] = []
    metadata: list[Metadata] = []
    any_md = False
    for i, st in enumerate(doc["streams"]):
        if not isinstance(st, dict):
            raise InvalidPush(f"streams[{i}]: expected an object")
        streams.append(_json_labels(st.get("stream"), i))
        values = st.get("values")
        if not isinstance(values, list):
            raise InvalidPush(f"streams[{i}].values: expected an array")
        try:
            ts_strs = [v[0] for v in values]
            new_lines = [v[1] for v in values]
        except (TypeError, IndexError, KeyError):
            raise InvalidPush(f"streams[{i}].values: each value must be [\"<unix ns>\", \"<line>\"]") from None
        ts_parts.append(_parse_ts(ts_strs, i))
        if not all(type(x) is str for x in new_lines):
            raise InvalidPush(f"streams[{i}].values: log lines must be strings")
        lines.extend(new_lines)
        md = _json_metadata(values, i)
        if md is not None:
            any_md = True
        else:
            md = [()] * len(values)
        metadata.extend(md)
        counts.append(len(values))
    idx = np.repeat(np.arange(len(streams), dtype=np.int64), counts)
    ts = np.concatenate(ts_parts) if ts_parts else np.empty(0, dtype=np.int64)
    return EntryColumns(streams, idx, ts, lines, metadata if any_md else None)


def _json_labels(obj: Any, i: int) -> Labels:
    if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
        raise InvalidPush(f"streams[{i}].stream: expected an object of string label values")
    return canonical(obj)


def _parse_ts(ts_strs: list[Any], i: int) -> np.ndarray:
    if not all(type(t) is str for t in ts_strs):
        raise InvalidPush(f"streams[{i}].values: timestamps must be strings of unix nanoseconds")
    try:
        return np.array(ts_strs, dtype=np.str_).astype(np.int64) if ts_strs else np.empty(0, dtype=np.int64)
    except (ValueError, OverflowError):
        bad = next((t for t in ts_strs if not t.lstrip("-").isdigit()), ts_strs[0])
        raise InvalidPush(f"streams[{i}].values: cannot parse timestamp {bad!r} as unix nanoseconds") from None


def _json_metadata(values: list[Any], i: int) -> list[Metadata] | None:
    if all(len(v) == 2 for v in values):
        return None
    out: list[Metadata] = []
    for v in values:
        if len(v) == 2:
            out.append(())
            continue
        md = v[2]
        if len(v) > 3 or not isinstance(md, dict) or not all(
                isinstance(k, str) and isinstance(x, str) for k, x in md.items()):
            raise InvalidPush(f"streams[{i}].values: structured metadata must be an object of strings")
        out.append(tuple(sorted(md.items())))
    return out


def decode_protobuf(raw: bytes, cache: LabelCache) -> EntryColumns:
    """A decompressed ``logproto.PushRequest``."""
    req = logproto.PushRequest()
    try:
        req.ParseFromString(raw)
    except (DecodeError, RecursionError, ValueError) as e:
        raise InvalidPush(f"proto: cannot parse push request: {e}") from e
    streams: list[Labels] = []
    counts: list[int] = []
    secs: list[int] = []
    nanos: list[int] = []
    lines: list[str] = []
    metadata: list[Metadata] = []
    any_md = False
    for st in req.streams:
        streams.append(cache.get(st.labels))
        entries = st.entries
        counts.append(len(entries))
        for ent in entries:
            t = ent.timestamp
            secs.append(t.seconds)
            nanos.append(t.nanos)
            lines.append(ent.line)
            sm = ent.structuredMetadata
            if sm:
                any_md = True
                metadata.append(tuple(sorted((p.name, p.value) for p in sm)))
            else:
                metadata.append(())
    idx = np.repeat(np.arange(len(streams), dtype=np.int64), counts)
    ts = np.array(secs, dtype=np.int64) * 1_000_000_000 + np.array(nanos, dtype=np.int64)
    return EntryColumns(streams, idx, ts, lines, metadata if any_md else None)


def decode_push(body: bytes, content_type: str, content_encoding: str, cache: LabelCache,
                max_bytes: int) -> EntryColumns:
    """Decode a push body as Loki does: JSON when the content type says so, else snappy protobuf."""
    media = content_type.split(";", 1)[0].strip().lower()
    raw = decompress(body, content_encoding, max_bytes)
    if media == JSON:
        return decode_json(raw)
    if media not in ("", "application/x-protobuf", "application/octet-stream"):
        raise BadData(f"unsupported Content-Type {content_type!r}")
    return decode_protobuf(snappy_block(raw, max_bytes), cache)
