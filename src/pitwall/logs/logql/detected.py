"""Loki's "detected" answers for Grafana's Logs Drilldown: labels worth offering and fields in lines.

``detected_labels`` follows Loki's querier (``countLabelsAndCardinality``):
a label is dropped when it has no value or when every value is an id
(parses as a float or a UUID), unless it is one of the static labels
``cluster``, ``namespace``, ``instance``, ``pod``; two values ``0``/``1``
are a boolean, not ids. ``detected_fields`` follows the query frontend's
``parseDetectedFields``: structured metadata first (no parser), then each
line parsed as JSON, falling back to logfmt; a field's type is guessed
from its value in the last entry read (int, float, boolean, duration,
bytes, else string). Cardinalities are exact (Loki estimates with HyperLogLog).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pitwall.core.durations import parse_duration_ns
from pitwall.logs.logql.pipeline import (
    _DUPLICATE_SUFFIX,
    ERROR_DETAILS_LABEL,
    ERROR_LABEL,
    _json_decode,
    _logfmt_pairs,
    _sanitize_key,
)
from pitwall.logs.logql.units import parse_bytes, parse_go_float

__all__ = ["DetectedField", "detect_fields", "detected_labels", "determine_type", "field_values"]

STATIC_LABELS = frozenset({"cluster", "namespace", "instance", "pod"})
_SKIPPED = frozenset({ERROR_LABEL, ERROR_DETAILS_LABEL, "__preserve_error__", "__stream_shard__"})
_GO_BOOLS = frozenset({"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"})
_INT64 = (-(1 << 63), (1 << 63) - 1)


# ---------------------------------------------------------------- labels


def _is_id(v: str) -> bool:
    try:
        parse_go_float(v)
        return True
    except ValueError:
        pass
    try:
        uuid.UUID(v)  # Go's uuid.Parse also takes the urn: and braced forms, as Python's does
        return True
    except ValueError:
        return False


def _reject(values: Sequence[str]) -> bool:
    """Loki's ``shouldRejectLabel``: no values, or all ids (two-valued 0/1 is a boolean)."""
    if not values:
        return True
    if len(values) <= 2 and all(v in ("0", "1") for v in values):
        return False
    return all(_is_id(v) for v in values)


def detected_labels(values_by_label: Mapping[str, Iterable[str]]) -> list[dict[str, Any]]:
    """``detectedLabels`` items, sorted by label: ``{"label": name, "cardinality": distinct values}``."""
    out = []
    for name in sorted(values_by_label):
        if name in _SKIPPED:
            continue
        vals = sorted(set(values_by_label[name]))
        if (name in STATIC_LABELS and vals) or not _reject(vals):
            out.append({"label": name, "cardinality": len(vals)})
    return out


# ---------------------------------------------------------------- fields


def determine_type(value: str) -> str:
    """Loki's ``determineType``: the first of int, float, boolean, duration, bytes that parses."""
    if not value:
        return "string"
    try:
        n = int(value, 10) if value.lstrip("+-").isdigit() and value.isascii() else None
    except ValueError:
        n = None
    if n is not None and _INT64[0] <= n <= _INT64[1]:
        return "int"
    try:
        parse_go_float(value)
        return "float"
    except ValueError:
        pass
    if value in _GO_BOOLS:
        return "boolean"
    try:
        parse_duration_ns(value, go_only=True)
        return "duration"
    except ValueError:
        pass
    try:
        parse_bytes(value)
        return "bytes"
    except ValueError:
        return "string"


@dataclass
class DetectedField:
    """One field: its type (from the last value read), parsers and distinct values."""

    type: str = "string"
    parsers: list[str] = field(default_factory=list)
    json_path: list[str] | None = None
    values: set[str] = field(default_factory=set)

    def to_loki(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"label": name, "type": self.type, "cardinality": len(self.values),
                               "parsers": self.parsers or None}
        if self.json_path:
            out["jsonPath"] = self.json_path
        return out


def _json_fields(obj: dict[str, Any], prefix: str, path: list[str],
                 out: dict[str, tuple[str, list[str]]]) -> None:
    """Flatten as Loki's json parser names keys (``a_b``), keeping each key's JSON path."""
    for k, v in obj.items():
        key = prefix + _sanitize_key(k, first=not prefix)
        if isinstance(v, dict):
            _json_fields(v, key + "_", [*path, k], out)
        elif isinstance(v, bool):
            out[key] = ("true" if v else "false", [*path, k])
        elif isinstance(v, str):
            out[key] = (v, [*path, k])
        elif v is None:
            out[key] = ("", [*path, k])
        # arrays are skipped, as Loki's json parser does


def parse_line(line: str, stream: frozenset[str]) -> tuple[str, dict[str, tuple[str, list[str] | None]]] | None:
    """The fields of one line: ``("json", ...)`` when it is a JSON object, else ``("logfmt", ...)``.

    Keys clashing with stream labels get ``_extracted``; ``None`` when neither parser finds a field.
    """
    found: dict[str, tuple[str, list[str] | None]] = {}
    parser = "json"
    try:
        obj = _json_decode(line)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        flat: dict[str, tuple[str, list[str]]] = {}
        _json_fields(obj, "", [], flat)
        found.update(flat)
    else:
        parser = "logfmt"
        for k, v in _logfmt_pairs(line, strict=False):
            key = _sanitize_key(k)
            if v and key:  # Loki's logfmt parser drops empty values
                found[key] = (v, None)
    if not found:
        return None
    return parser, {(k + _DUPLICATE_SUFFIX if k in stream else k): v for k, v in found.items() if k}


class FieldDetector:
    """Accumulates fields over result entries, at most ``limit`` distinct field names."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.fields: dict[str, DetectedField] = {}

    def _field(self, name: str) -> DetectedField | None:
        df = self.fields.get(name)
        if df is None and len(self.fields) < self.limit and name not in _SKIPPED:
            df = self.fields[name] = DetectedField()
        return df

    def _add(self, name: str, value: str, parser: str | None, path: list[str] | None) -> None:
        df = self._field(name)
        if df is None:
            return
        if parser and parser not in df.parsers:
            df.parsers.append(parser)
        if path and df.json_path is None:
            df.json_path = path
        df.type = determine_type(value)  # Loki re-detects on every entry: the last one wins
        df.values.add(value)

    def stream(self, labels: Mapping[str, str], entries: Sequence[Sequence[Any]]) -> None:
        """One result stream: entries as ``[ts, line, {"structuredMetadata":..., "parsed":...}]``."""
        names = frozenset(labels)
        for e in entries:
            cats = e[2] if len(e) > 2 else {}
            for k, v in (cats.get("structuredMetadata") or {}).items():
                self._add(k, v, None, None)
            got = parse_line(e[1], names)
            parser = got[0] if got else None
            for k, v in (cats.get("parsed") or {}).items():
                self._add(k, v, parser, None)
            if got:
                for k, (v, path) in got[1].items():
                    self._add(k, v, parser, path)


def detect_fields(streams: Sequence[Mapping[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Loki's ``fields`` list over categorized result streams, sorted by label."""
    det = FieldDetector(limit)
    for s in streams:
        det.stream(s["stream"], s["values"])
    return [det.fields[k].to_loki(k) for k in sorted(det.fields)]


def field_values(streams: Sequence[Mapping[str, Any]], name: str, limit: int) -> list[str]:
    """The distinct values of one detected field (metadata, parsed or found in the line), sorted."""
    seen: set[str] = set()
    for s in streams:
        names = frozenset(s["stream"])
        for e in s["values"]:
            cats = e[2] if len(e) > 2 else {}
            v = (cats.get("structuredMetadata") or {}).get(name)
            if v is None:
                v = (cats.get("parsed") or {}).get(name)
            if v is None:
                got = parse_line(e[1], names)
                hit = got[1].get(name) if got else None
                v = hit[0] if hit else None
            if v is not None:
                seen.add(v)
                if len(seen) >= limit:
                    return sorted(seen)
    return sorted(seen)
