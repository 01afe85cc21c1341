"""Parse Prometheus text format 0.0.4 and OpenMetrics 1.0 scrape bodies.

The parser splits every sample line into its raw series text (``name{...}``),
value and timestamp without decoding the labels: label decoding happens only
in ``parse_series``, which the scraper calls once per previously unseen raw
series (Prometheus' scrape cache works the same way). Values are converted
column-wise with numpy.

Results: ``Exposition`` holding per-sample columns, metric metadata (family
name, type, help, unit) and OpenMetrics exemplars.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from pitwall.core.errors import BadData
from pitwall.core.labels import METRIC_NAME, Labels
from pitwall.metrics.model import MetricMetadata

__all__ = [
    "Exposition",
    "ExpositionError",
    "RawExemplar",
    "negotiate_format",
    "parse",
    "parse_openmetrics",
    "parse_series",
    "parse_text",
]

Format = Literal["text", "openmetrics"]


class ExpositionError(BadData):
    """The scrape body (or its Content-Type) cannot be parsed."""


_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
# A label block; possessive quantifiers keep a malformed line from backtracking.
_LBLOCK = r'\{(?:[^"}]++|"(?:[^"\\]++|\\.)*+")*+\}'
_TEXT_SAMPLE = re.compile(
    rf"[ \t]*({_NAME})(?:[ \t]*({_LBLOCK})[ \t]*|[ \t]+)([^ \t]+)(?:[ \t]+([^ \t]+))?[ \t]*\Z"
)
_OM_SAMPLE = re.compile(
    rf"({_NAME})({_LBLOCK})? ([^ ]+)(?: ([^ #][^ ]*))?(?: # ({_LBLOCK}) ([^ ]+)(?: ([^ ]+))?)?\Z"
)
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]++|\\.)*+)"[ \t]*(,?)')
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_TEXT_TYPES = {"counter": "counter", "gauge": "gauge", "histogram": "histogram", "summary": "summary", "untyped": "unknown"}
_OM_TYPES = {"counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset", "unknown"}


@dataclass(frozen=True)
class RawExemplar:
    """An OpenMetrics exemplar attached to sample ``index``; ``ts`` in ms or None."""

    index: int
    labels: Labels
    value: float
    ts: int | None


@dataclass
class Exposition:
    """A parsed scrape body, column-wise (one row per sample line)."""

    format: Format
    series: list[str]  # raw series text, the scrape-cache key
    values: np.ndarray  # float64
    timestamps: np.ndarray  # int64 ms; meaningful where has_ts
    has_ts: np.ndarray  # bool
    metadata: list[MetricMetadata] = field(default_factory=list)
    exemplars: list[RawExemplar] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.series)

    def rows(self) -> list[tuple[Labels, float, int | None]]:
        """(sorted labels incl. __name__, value, timestamp ms or None) per sample; for tests and tools."""
        out: list[tuple[Labels, float, int | None]] = []
        for i, raw in enumerate(self.series):
            lbl = tuple(sorted(p for p in parse_series(raw) if p[1] != ""))
            ts = int(self.timestamps[i]) if self.has_ts[i] else None
            out.append((lbl, float(self.values[i]), ts))
        return out


def _unescape_label(v: str) -> str:
    # Only \\, \" and \n are escapes; any other backslash pair stays as written (Prometheus' replacer).
    if "\\" not in v:
        return v
    return _ESCAPE.sub(lambda m: {"\\": "\\", '"': '"', "n": "\n"}.get(m.group(1), m.group(0)), v)


def _parse_label_block(block: str, where: str) -> list[tuple[str, str]]:
    """Decode ``{a="1",b="2"}`` (braces included) into pairs."""
    pairs: list[tuple[str, str]] = []
    pos = 1
    end = len(block) - 1
    while True:
        while pos < end and block[pos] in " \t":
            pos += 1
        if pos >= end:
            break
        m = _LABEL.match(block, pos, end)
        if m is None:
            raise ExpositionError(f"invalid label set in {where!r}")
        pairs.append((m.group(1), _unescape_label(m.group(2))))
        pos = m.end()
        if not m.group(3) and pos < end and block[pos:end].strip(" \t"):
            raise ExpositionError(f"expected ',' or '}}' after label value in {where!r}")
    return pairs


def parse_series(raw: str) -> list[tuple[str, str]]:
    """Labels of a raw series text (``name{a="1"}``) incl. ``__name__``, in exposition order."""
    brace = raw.find("{")
    if brace < 0:
        return [(METRIC_NAME, raw)]
    pairs = [(METRIC_NAME, raw[:brace].rstrip(" \t"))]
    pairs.extend(_parse_label_block(raw[brace:], raw))
    names = [p[0] for p in pairs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ExpositionError(f"duplicate label name {dup!r} in {raw!r}")
    return pairs


def _to_floats(vals: list[str], lines: list[str]) -> np.ndarray:
    """Go ParseFloat semantics, vectorised: numpy handles the common forms, hex floats fall back."""
    if not vals:
        return np.empty(0, dtype=np.float64)
    if "_" in "\x00".join(vals):
        i = next(i for i, v in enumerate(vals) if "_" in v)
        raise ExpositionError(f"strconv.ParseFloat: parsing {vals[i]!r}: invalid syntax (line {lines[i]!r})")
    try:
        return np.array(vals, dtype=np.str_).astype(np.float64)
    except ValueError:
        out = np.empty(len(vals), dtype=np.float64)
        for i, v in enumerate(vals):
            out[i] = _go_float(v, lines[i])
        return out


def _go_float(v: str, line: str) -> float:
    try:
        return float(v)
    except ValueError:
        pass
    try:
        return float.fromhex(v)
    except ValueError:
        raise ExpositionError(f"strconv.ParseFloat: parsing {v!r}: invalid syntax (line {line!r})") from None


def _unescape_help(text: str, openmetrics: bool) -> str:
    if "\\" not in text:
        return text
    table = {"\\": "\\", "n": "\n"}
    if openmetrics:
        table['"'] = '"'
    return _ESCAPE.sub(lambda m: table.get(m.group(1), m.group(0)), text)


class _Meta:
    """Accumulates HELP/TYPE/UNIT per family in first-seen order."""

    def __init__(self) -> None:
        self.fams: dict[str, list[str]] = {}

    def set(self, name: str, idx: int, value: str) -> None:
        rec = self.fams.setdefault(name, ["unknown", "", ""])
        rec[idx] = value

    def out(self) -> list[MetricMetadata]:
        return [MetricMetadata(n, t, h, u) for n, (t, h, u) in self.fams.items()]


def _text_comment(line: str, meta: _Meta) -> None:
    parts = line.lstrip(" \t")[1:].lstrip(" \t").split(None, 2)
    if len(parts) < 2 or parts[0] not in ("HELP", "TYPE") or line.lstrip(" \t")[1:2] not in (" ", "\t"):
        return  # an ordinary comment
    kind, name = parts[0], parts[1]
    if re.fullmatch(_NAME, name) is None:
        raise ExpositionError(f"invalid metric name in comment: {line!r}")
    if kind == "HELP":
        meta.set(name, 1, _unescape_help(parts[2] if len(parts) > 2 else "", False))
        return
    typ = parts[2].strip().lower() if len(parts) > 2 else ""
    if typ not in _TEXT_TYPES:
        raise ExpositionError(f'invalid metric type "{typ}"')
    meta.set(name, 0, _TEXT_TYPES[typ])


def parse_text(body: str) -> Exposition:
    """Parse Prometheus text format 0.0.4 (timestamps are integer milliseconds)."""
    meta = _Meta()
    series: list[str] = []
    vals: list[str] = []
    ts_idx: list[int] = []
    ts_vals: list[str] = []
    lines_kept: list[str] = []
    match = _TEXT_SAMPLE.match
    for line in body.split("\n"):
        if not line or line.isspace():
            continue
        first = line[0] if line[0] not in " \t" else line.lstrip(" \t")[:1]
        if first == "#":
            _text_comment(line, meta)
            continue
        m = match(line)
        if m is None:
            raise ExpositionError(f"invalid sample line: {line!r}")
        name, block, val, ts = m.groups()
        series.append(name + block if block else name)
        vals.append(val)
        lines_kept.append(line)
        if ts is not None:
            ts_idx.append(len(series) - 1)
            ts_vals.append(ts)
    n = len(series)
    timestamps = np.zeros(n, dtype=np.int64)
    has_ts = np.zeros(n, dtype=bool)
    if ts_idx:
        try:
            timestamps[ts_idx] = np.array([int(t) for t in ts_vals], dtype=np.int64)
        except (ValueError, OverflowError):
            bad = next(t for t in ts_vals if not re.fullmatch(r"[+-]?\d+", t))
            raise ExpositionError(f'invalid timestamp "{bad}"') from None
        has_ts[ts_idx] = True
    return Exposition("text", series, _to_floats(vals, lines_kept), timestamps, has_ts, meta.out())


def _om_comment(line: str, meta: _Meta) -> bool:
    """Handle an OpenMetrics comment line; True when it is ``# EOF``."""
    if line == "# EOF":
        return True
    parts = line.split(" ", 3)
    if len(parts) < 3 or parts[0] != "#" or parts[1] not in ("HELP", "TYPE", "UNIT"):
        raise ExpositionError(f"invalid comment line: {line!r}")
    kind, name = parts[1], parts[2]
    if re.fullmatch(_NAME, name) is None:
        raise ExpositionError(f"invalid metric name in comment: {line!r}")
    rest = parts[3] if len(parts) > 3 else ""
    if kind == "HELP":
        meta.set(name, 1, _unescape_help(rest, True))
    elif kind == "UNIT":
        meta.set(name, 2, rest)
    else:
        if rest not in _OM_TYPES:
            raise ExpositionError(f'invalid metric type "{rest}"')
        meta.set(name, 0, rest)
    return False


def _om_ts(s: str, line: str) -> int:
    try:
        f = float(s)
    except ValueError:
        raise ExpositionError(f"invalid timestamp {s!r} in line {line!r}") from None
    if f != f or f in (float("inf"), float("-inf")):
        raise ExpositionError(f"invalid timestamp {s!r}")
    # Prometheus truncates seconds*1000 toward zero.
    return int(f * 1000)


def parse_openmetrics(body: str) -> Exposition:
    """Parse OpenMetrics 1.0 text: float-second timestamps, exemplars, mandatory ``# EOF``."""
    meta = _Meta()
    series: list[str] = []
    vals: list[str] = []
    lines_kept: list[str] = []
    ts_idx: list[int] = []
    ts_ms: list[int] = []
    exemplars: list[RawExemplar] = []
    match = _OM_SAMPLE.match
    lines = body.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    eof = False
    for line in lines:
        if eof:
            raise ExpositionError("unexpected data after # EOF")
        if line.startswith("#"):
            eof = _om_comment(line, meta)
            continue
        m = match(line)
        if m is None:
            raise ExpositionError(f"invalid sample line: {line!r}")
        name, block, val, ts, ex_block, ex_val, ex_ts = m.groups()
        i = len(series)
        series.append(name + block if block else name)
        vals.append(val)
        lines_kept.append(line)
        if ts is not None:
            ts_idx.append(i)
            ts_ms.append(_om_ts(ts, line))
        if ex_block is not None:
            ex_labels = tuple(sorted(_parse_label_block(ex_block, line)))
            exemplars.append(
                RawExemplar(i, ex_labels, _go_float(ex_val, line), _om_ts(ex_ts, line) if ex_ts else None)
            )
    if not eof:
        raise ExpositionError("data does not end with # EOF")
    n = len(series)
    timestamps = np.zeros(n, dtype=np.int64)
    has_ts = np.zeros(n, dtype=bool)
    if ts_idx:
        timestamps[ts_idx] = ts_ms
        has_ts[ts_idx] = True
    return Exposition("openmetrics", series, _to_floats(vals, lines_kept), timestamps, has_ts, meta.out(), exemplars)


_FALLBACK_FORMATS: dict[str, Format] = {
    "PrometheusText0.0.4": "text",
    "PrometheusText1.0.0": "text",
    "OpenMetricsText0.0.1": "openmetrics",
    "OpenMetricsText1.0.0": "openmetrics",
}


def negotiate_format(content_type: str | None, fallback: str | None = None) -> Format:
    """Pick the parser from the response Content-Type, as Prometheus 3 does.

    A blank, unparsable or unsupported Content-Type is an error unless a
    ``fallback_scrape_protocol`` is configured.
    """
    ct = (content_type or "").strip()
    fb = _FALLBACK_FORMATS.get(fallback or "")
    if ct == "":
        if fb is None:
            raise ExpositionError(
                "non-compliant scrape target sending blank Content-Type and no "
                "fallback_scrape_protocol specified for target"
            )
        return fb
    media = ct.split(";", 1)[0].strip().lower()
    if media == "application/openmetrics-text":
        return "openmetrics"
    if media == "text/plain":
        return "text"
    if fb is None:
        raise ExpositionError(
            f'received unsupported Content-Type "{ct}" and no fallback_scrape_protocol specified for target'
        )
    return fb


def parse(body: bytes | str, content_type: str | None, fallback: str | None = None) -> Exposition:
    """Parse a scrape body according to its Content-Type."""
    fmt = negotiate_format(content_type, fallback)
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ExpositionError(f"invalid UTF-8 in scrape body: {e}") from e
    else:
        text = body
    return parse_openmetrics(text) if fmt == "openmetrics" else parse_text(text)
