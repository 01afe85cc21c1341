"""Loki push ``POST /loki/api/v1/push``: JSON, or snappy-compressed protobuf (promtail, Alloy, Fluent Bit).

Both decoders produce ``EntryColumns``: per stream, timestamps go straight
into numpy and lines into one list, so no object is built per entry beyond
what the wire decoder itself creates. A stream's label string is parsed once
per tenant and cached.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
from google.protobuf.message import DecodeError

from pitwall.core import jsonchunks
from pitwall.core.body import Body
from pitwall.core.errors import BadData
from pitwall.logs.errors import InvalidPush
from pitwall.logs.ingest import logproto
from pitwall.logs.labels import canonical, parse_labels
from pitwall.logs.model import EntryColumns, Labels, Metadata

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


def decode_json(body: bytes) -> EntryColumns:
    """Loki's JSON push body: ``{"streams": [{"stream": {...}, "values": [["<ns>", "<line>", {md}?]]}]}``.

    Parsed in slices (``core.jsonchunks``): a large push never holds the GIL
    for long, and only one slice of parsed entries is alive at a time.
    """
    out = _Streams()
    try:
        root = jsonchunks.parse(body)
        streams: Any = None
        if root.kind == "object":
            for m in root.members():
                if isinstance(m, dict):
                    streams = m.get("streams", streams)
                elif m[0] == "streams":
                    streams = m[1]
        else:
            doc = root.load()
            streams = doc.get("streams") if isinstance(doc, dict) else None
        if isinstance(streams, jsonchunks.Value):
            streams = streams.batches() if streams.kind == "array" else streams.load()
        if isinstance(streams, list):
            streams = [streams]
        if not isinstance(streams, Iterator | list):
            raise InvalidPush('loghttp.PushRequest: expected an object with a "streams" array')
        for batch in streams:
            if isinstance(batch, jsonchunks.Value):
                out.add_large(batch)
            else:
                for st in batch:
                    out.add(st)
    except (ValueError, RecursionError) as e:
        raise InvalidPush(f"loghttp.PushRequest: {e}") from e
    return out.columns()


class _Streams:
    """Streams of a JSON push as they are parsed, one values slice at a time."""

    def __init__(self) -> None:
        self.streams: list[Labels] = []
        self.counts: list[int] = []
        self.ts_parts: list[np.ndarray] = []
        self.lines: list[str] = []
        self.metadata: list[Metadata] = []
        self.any_md = False

    def add(self, st: Any) -> None:
        i = len(self.streams)
        if not isinstance(st, dict):
            raise InvalidPush(f"streams[{i}]: expected an object")
        labels = _json_labels(st.get("stream"), i)
        self._append(labels, [_values(st.get("values"), i)])

    def add_large(self, st: jsonchunks.Value) -> None:
        """A stream object too large to parse in one go: its values come in slices."""
        i = len(self.streams)
        if st.kind != "object":
            self.add(st.load())
            return
        labels: Any = None
        parts: list[tuple[np.ndarray, list[str], list[Metadata] | None]] = []
        have_values = False
        for m in st.members():
            if isinstance(m, dict):
                labels = m.get("stream", labels)
                if "values" in m:
                    parts, have_values = [_values(m["values"], i)], True
            elif m[0] == "stream":
                labels = m[1].load()
            elif m[0] == "values":
                have_values = True
                v = m[1]
                if v.kind != "array":
                    parts = [_values(v.load(), i)]
                    continue
                parts = []
                for b in v.batches():
                    parts.append(_values([b.load()] if isinstance(b, jsonchunks.Value) else b, i))
        if not have_values:
            _values(None, i)
        self._append(_json_labels(labels, i), parts)

    def _append(self, labels: Labels, parts: list[tuple[np.ndarray, list[str], list[Metadata] | None]]) -> None:
        self.streams.append(labels)
        n = 0
        for ts, lines, md in parts:
            self.ts_parts.append(ts)
            self.lines.extend(lines)
            if md is not None:
                self.any_md = True
                self.metadata.extend(md)
            else:
                self.metadata.extend([()] * len(lines))
            n += len(lines)
        self.counts.append(n)

    def columns(self) -> EntryColumns:
        idx = np.repeat(np.arange(len(self.streams), dtype=np.int64), self.counts)
        ts = np.concatenate(self.ts_parts) if self.ts_parts else np.empty(0, dtype=np.int64)
        return EntryColumns(self.streams, idx, ts, self.lines, self.metadata if self.any_md else None)


def _values(values: Any, i: int) -> tuple[np.ndarray, list[str], list[Metadata] | None]:
    """Timestamps, lines and structured metadata (None when no entry has any) of values ``[[ts, line, md?]...]``."""
    if not isinstance(values, list):
        raise InvalidPush(f"streams[{i}].values: expected an array")
    try:
        ts_strs = [v[0] for v in values]
        lines = [v[1] for v in values]
    except (TypeError, IndexError, KeyError):
        raise InvalidPush(f"streams[{i}].values: each value must be [\"<unix ns>\", \"<line>\"]") from None
    ts = _parse_ts(ts_strs, i)
    if not all(type(x) is str for x in lines):
        raise InvalidPush(f"streams[{i}].values: log lines must be strings")
    return ts, lines, _json_metadata(values, i)


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


def decode_push(body: Body, content_type: str, cache: LabelCache) -> EntryColumns:
    """Decode a push body as Loki does: JSON when the content type says so, else snappy protobuf.

    As Loki's, ``Content-Encoding: snappy`` on a protobuf push names the
    snappy block the body already is. The lines are also handed over as Arrow,
    built here (in the decoding thread) rather than on the event loop.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media == JSON:
        cols = decode_json(body.decoded())
    elif media not in ("", "application/x-protobuf", "application/octet-stream"):
        raise BadData(f"unsupported Content-Type {content_type!r}")
    else:
        raw = body.data if body.content_encoding.strip().lower() == "snappy" else body.decoded()
        cols = decode_protobuf(body.snappy(raw), cache)
    cols.line_array = arrow_lines(cols.lines)
    return cols


def arrow_lines(lines: list[str], step: int = 1 << 16) -> pa.Array:
    """``lines`` as an Arrow string array, converted a slice at a time (no long hold of the GIL)."""
    if len(lines) <= step:
        return pa.array(lines, pa.string())
    return pa.concat_arrays([pa.array(lines[i : i + step], pa.string()) for i in range(0, len(lines), step)])
