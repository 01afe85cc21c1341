"""Loki's ``detected_level``: the level every entry gets at ingest (``discover_log_levels``).

Follows Loki 3.x's distributor (``pkg/distributor/field_detection.go``), in
its order of precedence:

1. a ``detected_level`` already in the entry's structured metadata (only
   normalized: no second one is added);
2. a stream label named by ``log_level_fields`` (first name in list order);
3. structured metadata named by ``log_level_fields`` (OTLP's ``severity_text``);
4. OTLP ``severity_number`` in structured metadata (1-4 trace ... 21-24 fatal,
   0 and > 24 unknown, not a number: info);
5. the line: a level field of a JSON object (string values, up to
   ``log_level_from_json_max_depth`` levels deep, first in document order)
   or of a logfmt line (keys case-insensitive, first field name in list
   order wins); when that names no known level, the earliest well-known level
   word standing alone in the line; ``unknown`` otherwise.

Values from labels and metadata are normalized (``WARNING`` -> ``warn``)
and kept as they are when they are no known level (``notice``); values read
from the line must be a known level. ``LevelDetector.detect_column`` decides
the common JSON shape for a whole Arrow column at once and runs the
per-line code only for the rest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from pitwall.core.arrow_compute import pc
from pitwall.logs.model import LEVEL_LABEL, EntryColumns
from pitwall.logs.settings import DEFAULT_LEVEL_FIELDS

__all__ = [
    "DEFAULT_LEVEL_FIELDS",
    "LEVEL_LABEL",
    "LevelDetector",
    "assign_levels",
    "detect_level_in_line",
    "normalize_level",
]

UNKNOWN = "unknown"


# Case-insensitive spellings and the level they stand for.
_KNOWN = {
    "trace": "trace", "trc": "trace",
    "debug": "debug", "dbg": "debug",
    "info": "info", "inf": "info", "information": "info",
    "warn": "warn", "wrn": "warn", "warning": "warn",
    "error": "error", "err": "error",
    "critical": "critical",
    "fatal": "fatal",
}

# Level words searched in free text; ordered as Loki's levelPatterns (longer spellings first
# where one is a prefix of another). A word counts only between boundary characters: the left
# one excludes ':' (``misc:error`` is no level), the right one allows it (``debug: ...``).
_WORD_RE = re.compile(
    r"(?<![^ \t\n\[({\"'=|])(trace|debug|fatal|critical|error|err|warning|warn|info)"
    r"(?![^ \t\n\[\](){}:,!\"'=|])"
)
_WORD_LEVEL = {"warning": "warn", "err": "error"}
_KNOWN_KEYS = pa.array(list(_KNOWN), pa.string())
_KNOWN_VALUES = pa.array(list(_KNOWN.values()), pa.string())

_GO_SPACE_BYTES = frozenset(b" \t\n\v\f\r\x85\xa0")
_JSON_WS = " \t\n\r"


def _known(value: str | None) -> str | None:
    """The level ``value`` spells (ASCII case-insensitive), or None."""
    if not value or len(value) > 11:
        return None
    return _KNOWN.get(value.lower()) if value.isascii() else None


def normalize_level(value: str) -> str:
    """Loki's normalizeLogLevel: a known spelling in lower case, anything else unchanged."""
    return _known(value) or value


def _go_lower(line: str) -> str:
    # Go's strings.ToLower maps U+0130 to 'i' (simple case mapping); Python's full mapping adds a dot.
    return line.translate({0x130: "i"}).lower() if "\u0130" in line else line.lower()


def detect_level_in_line(line: str) -> str:
    """The earliest level word standing alone in ``line`` (case-insensitive), or ``unknown``."""
    m = _WORD_RE.search(_go_lower(line))
    if m is None:
        return UNKNOWN
    w = m.group(1)
    return _WORD_LEVEL.get(w, w)


def _is_json(line: str) -> bool:
    """Loki's isJSON: first non-space character ``{`` and last non-space byte ``}``."""
    first = line.lstrip()[:1]
    if first != "{":
        return False
    raw = line.encode("utf-8", "surrogatepass")
    i = len(raw) - 1
    while i >= 0 and raw[i] in _GO_SPACE_BYTES:
        i -= 1
    return i >= 0 and raw[i] == 0x7D


# ---------------------------------------------------------------- JSON (buger/jsonparser's ObjectEach)


class _Stop(Exception):
    """The scan ends: a level field was found, or the JSON is malformed at this point."""


def _skip_ws(s: str, i: int) -> int:
    n = len(s)
    while i < n and s[i] in _JSON_WS:
        i += 1
    if i >= n:
        raise _Stop
    return i


def _string_end(s: str, i: int) -> tuple[int, bool]:
    """Index just past the closing quote of the string whose content starts at ``i``; escaped?"""
    esc = False
    j = i
    n = len(s)
    while j < n:
        c = s[j]
        if c == "\\":
            esc = True
            j += 2
            continue
        if c == '"':
            return j + 1, esc
        j += 1
    raise _Stop


def _block_end(s: str, i: int, open_c: str, close_c: str) -> int:
    """Index just past the block starting at ``i`` (strings skipped, brackets counted)."""
    depth = 0
    j = i
    n = len(s)
    while j < n:
        c = s[j]
        if c == '"':
            j, _ = _string_end(s, j + 1)
            continue
        if c == open_c:
            depth += 1
        elif c == close_c:
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    raise _Stop


def _scalar_end(s: str, i: int) -> int:
    j = i
    n = len(s)
    while j < n and s[j] not in " \t\n\r,}]":
        j += 1
    return j


def _unescape_key(raw: str) -> str:
    try:
        out = json.loads('"' + raw + '"')
    except ValueError:
        raise _Stop from None
    return str(out)


def _object_each(s: str, i: int, fields: frozenset[str], depth: int, max_depth: int) -> None:
    """Walk the object at ``i``; raise ``_Found`` through ``_Stop`` semantics on a match."""
    i = _skip_ws(s, i)
    if s[i] != "{":
        raise _Stop
    i = _skip_ws(s, i + 1)
    if s[i] == "}":
        return
    while True:
        if s[i] == "}":
            return
        if s[i] != '"':
            raise _Stop
        end, esc = _string_end(s, i + 1)
        key = s[i + 1 : end - 1]
        if esc:
            key = _unescape_key(key)
        i = _skip_ws(s, end)
        if s[i] != ":":
            raise _Stop
        i = _skip_ws(s, i + 1)
        c = s[i]
        if c == '"':
            vend, _ = _string_end(s, i + 1)
            if key in fields:
                raise _Found(s[i + 1 : vend - 1])  # the raw (still escaped) text, as jsonparser gives it
            i = vend
        elif c == "{":
            vend = _block_end(s, i, "{", "}")
            if max_depth <= 0 or depth + 1 < max_depth:
                _object_each(s[: vend], i, fields, depth + 1, max_depth)
            i = vend
        elif c == "[":
            i = _block_end(s, i, "[", "]")
        elif c in "-0123456789tfn":
            i = _scalar_end(s, i)
        else:
            raise _Stop
        i = _skip_ws(s, i)
        if s[i] == "}":
            return
        if s[i] != ",":
            raise _Stop
        i = _skip_ws(s, i + 1)


class _Found(_Stop):
    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value


def json_level_value(line: str, fields: frozenset[str], max_depth: int) -> str:
    """The first string value of a key in ``fields`` (document order, nested objects within
    ``max_depth`` levels; <= 0 unlimited); empty when there is none or the JSON breaks first."""
    try:
        _object_each(line, 0, fields, 0, max_depth)
    except _Found as f:
        return f.value
    except (_Stop, IndexError, RecursionError):
        return ""
    return ""


# ---------------------------------------------------------------- logfmt (Loki's logfmt.Decoder)


def _logfmt_unquote(raw: bytes) -> bytes | None:
    try:
        v = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return None
    return v.encode() if isinstance(v, str) else None


def _logfmt_pairs(line: bytes) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` pairs up to the first syntax error, as ``for !EOL() && ScanKeyval()``."""
    out: list[tuple[bytes, bytes]] = []
    n = len(line)
    pos = 0
    while pos < n:
        while pos < n and line[pos] <= 0x20:
            pos += 1
        if pos >= n:
            break
        start = pos
        while pos < n and line[pos] > 0x20 and line[pos] not in b'="':
            pos += 1
        key = line[start:pos]
        if b"\xef\xbf\xbd" in key:
            break  # invalid key
        if pos >= n or line[pos] <= 0x20:
            out.append((key, b""))
            continue
        if line[pos] == 0x22 or not key:  # '"' in a key, or '=' with no key
            break
        pos += 1  # '='
        if pos >= n or line[pos] <= 0x20:
            out.append((key, b""))
            continue
        if line[pos] == 0x22:
            j = pos + 1
            esc = has_esc = False
            while j < n:
                c = line[j]
                if esc:
                    esc = False
                elif c == 0x5C:
                    has_esc = esc = True
                elif c == 0x22:
                    break
                j += 1
            if j >= n:
                break  # unterminated quoted value
            if has_esc:
                v = _logfmt_unquote(line[pos : j + 1])
                if v is None:
                    break
                out.append((key, v))
            else:
                out.append((key, line[pos + 1 : j]))
            pos = j + 1
            continue
        vstart = pos
        while pos < n and line[pos] > 0x20:
            if line[pos] in b'="':
                return out
            pos += 1
        out.append((key, line[vstart:pos]))
    return out


# A logfmt line the decoder reads to its end without a syntax error (possessive, so linear):
# keys of bytes > ' ' other than '=' and '"', values unquoted (same bytes) or quoted; a bare key
# or an unquoted value ends at a space byte or the end, a quoted value may touch the next key.
_LF_KEY = r'[^\x00-\x20="]++'
_LF_QUOTED = r'"(?:[^"\\]|\\.)*+"'
_LF_LINE = re.compile(
    rf'(?>[\x00-\x20]*+(?:{_LF_KEY}={_LF_QUOTED}|{_LF_KEY}(?:=[^\x00-\x20="]*+)?(?=[\x00-\x20]|\Z)))*+'
    r'[\x00-\x20]*+\Z', re.S)
_LF_PAIR = re.compile(rf'({_LF_KEY})(?:=(?:"((?:[^"\\]|\\.)*+)"|([^\x00-\x20="]*+)))?', re.S)


def _logfmt_pairs_fast(line: str) -> list[tuple[bytes, bytes]] | None:
    """``_logfmt_pairs`` for lines without syntax errors or escapes; None for the others."""
    if "\\" in line or "\ufffd" in line or _LF_LINE.match(line) is None:
        return None
    return [(m.group(1).encode(), (m.group(2) or m.group(3) or "").encode()) for m in _LF_PAIR.finditer(line)]


def logfmt_level_value(line: str, fields: Sequence[str]) -> str:
    """The value of the first occurrence of the earliest of ``fields`` (keys compared
    case-insensitively, as Go's EqualFold), or empty."""
    folded = [f.casefold() for f in fields]
    best = len(folded)
    res = b""
    pairs = _logfmt_pairs_fast(line)
    if pairs is None:
        pairs = _logfmt_pairs(line.encode("utf-8", "surrogatepass"))
    for k, v in pairs:
        kf = k.decode("utf-8", "replace").casefold()
        for x, f in enumerate(folded):
            if x >= best:
                break
            if kf == f:
                res, best = v, x
                if x == 0:
                    return res.decode("utf-8", "replace")
                break
    return res.decode("utf-8", "replace")


# ---------------------------------------------------------------- the detector


def _otlp_severity(text: str) -> str:
    try:
        n = int(text)
    except ValueError:
        return "info"
    if n == 0:
        return UNKNOWN
    for top, lvl in ((4, "trace"), (8, "debug"), (12, "info"), (16, "warn"), (20, "error"), (24, "fatal")):
        if n <= top:
            return lvl
    return UNKNOWN


class LevelDetector:
    """Loki's FieldDetector for levels, configured by ``log_level_fields`` and the JSON depth."""

    def __init__(self, fields: Sequence[str] = DEFAULT_LEVEL_FIELDS, json_max_depth: int = 2) -> None:
        self.fields = tuple(fields) or DEFAULT_LEVEL_FIELDS
        self.field_set = frozenset(self.fields)
        self.json_max_depth = json_max_depth
        alts = "|".join(re.escape(f) for f in self.fields)
        ws = "[ \\t\\n\\r]*"
        # A JSON object whose FIRST key is a level field with a plain string value: jsonparser
        # stops right there, whatever follows.
        self._json_head = f'^{ws}\\{{{ws}"(?:{alts})"{ws}:{ws}"(?P<v>[^"\\\\]*)"'

    def from_line(self, line: str) -> str:
        """Loki's extractLogLevelFromLogLine."""
        if _is_json(line):
            v = json_level_value(line, self.field_set, self.json_max_depth)
        elif "=" in line:
            v = logfmt_level_value(line, self.fields)
        else:
            return detect_level_in_line(line)
        return _known(v) or detect_level_in_line(line)

    def detect(self, stream_labels: dict[str, str], metadata: Sequence[tuple[str, str]], line: str) -> str:
        """The level of one entry that has no ``detected_level`` metadata yet."""
        for f in self.fields:
            v = stream_labels.get(f)
            if v is not None:
                return normalize_level(v)
        md = dict(reversed(metadata)) if metadata else {}  # the first of duplicate keys wins
        for f in self.fields:
            v = md.get(f)
            if v is not None:
                return normalize_level(v)
        sev = md.get("severity_number")
        if sev:
            return _otlp_severity(sev)
        return self.from_line(line)

    def stream_level(self, stream_labels: dict[str, str]) -> str | None:
        """The level every entry of a stream gets from its labels, or None when the entries decide."""
        for f in self.fields:
            v = stream_labels.get(f)
            if v is not None:
                return normalize_level(v)
        return None

    def detect_column(self, lines: pa.Array, todo: np.ndarray) -> pa.Array:
        """``from_line`` for the entries where ``todo`` is set (null elsewhere), column-wise where exact."""
        n = len(lines)
        idx = np.flatnonzero(todo)
        if not len(idx):
            return pa.nulls(n, pa.string())
        sub = lines if len(idx) == n else lines.take(pa.array(idx))
        head = pc.extract_regex(sub, self._json_head)
        ends = pc.match_substring_regex(sub, r"\}[ \t\n\r]*$")
        vals = pc.if_else(pc.and_(pc.is_valid(head), ends), pc.struct_field(head, [0]), pa.scalar(None, pa.string()))
        codes = pc.index_in(pc.ascii_lower(vals), value_set=_KNOWN_KEYS)
        got = pc.take(_KNOWN_VALUES, codes)
        slow = np.flatnonzero(np.asarray(pc.is_null(got).to_numpy(zero_copy_only=False), dtype=bool))
        if len(slow):
            texts = sub.take(pa.array(slow)).to_pylist()
            patched = got.to_pylist()
            for j, text in zip(slow.tolist(), texts, strict=True):
                patched[j] = self.from_line(text or "")
            got = pa.array(patched, pa.string())
        if len(idx) == n:
            return got
        full: list[str | None] = [None] * n
        for j, v in zip(idx.tolist(), got.to_pylist(), strict=True):
            full[j] = v
        return pa.array(full, pa.string())


def assign_levels(cols: EntryColumns, det: LevelDetector) -> EntryColumns:
    """``cols`` with ``levels`` set: each entry's ``detected_level`` (null: none), as Loki's distributor.

    A ``detected_level`` already in an entry's structured metadata moves out
    of the metadata into ``levels``, normalized (Loki normalizes it in place).
    """
    n = len(cols)
    if not n:
        return cols
    stream_dicts = [dict(lbl) for lbl in cols.streams]
    by_stream = pa.array([det.stream_level(d) for d in stream_dicts], pa.string())
    base = by_stream.take(pa.array(cols.stream_idx))
    todo = np.asarray(pc.is_null(base).to_numpy(zero_copy_only=False), dtype=bool)
    mds = cols.metadata
    has_md = np.zeros(n, dtype=bool)
    if mds is not None:
        has_md = np.fromiter((bool(m) for m in mds), dtype=bool, count=n)
        todo &= ~has_md
    lines = cols.line_array if cols.line_array is not None else pa.array(cols.lines, pa.string())
    levels = pc.coalesce(base, det.detect_column(lines, todo))
    if mds is not None and has_md.any():
        out = levels.to_pylist()
        new_md = list(mds)
        for i in np.flatnonzero(has_md).tolist():
            md = mds[i]
            own = [v for k, v in md if k == LEVEL_LABEL]
            if own:
                new_md[i] = tuple(p for p in md if p[0] != LEVEL_LABEL)
                out[i] = normalize_level(own[0])
            else:
                lvl = det.detect(stream_dicts[int(cols.stream_idx[i])], md, cols.lines[i])
                out[i] = lvl or None  # an empty level field adds no label (Loki: level "")
        levels = pa.array(out, pa.string())
        cols.metadata = new_md if any(new_md) else None
    cols.levels = levels
    cols.line_array = lines
    return cols
