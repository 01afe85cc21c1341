"""Column-wise ``| json`` extraction and label filters over many entries at once.

The per-entry pipeline (``pipeline.py``) is the reference; this module only
decides what it can decide exactly and leaves every other entry to it. For a
batch of lines it reads the top-level values of the few labels a query uses
(from the text of flat objects, matched by one RE2 pattern over an Arrow
column; by decoding the others once with orjson), and evaluates label filters
column-wise in
three-valued logic: ``FALSE`` (the pipeline surely drops the entry), ``TRUE``
(it surely keeps it, with no error label) or ``UNKNOWN`` (run the pipeline).

A line is decided only when it is a JSON object whose keys are all label
names already, with no nested object that could flatten into a used label,
and the entry carries no structured metadata; numbers compare by value
(orjson and Go's ``ParseFloat`` both round correctly), and text is read back
only where it is exact.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np
import orjson
import pyarrow as pa

from pitwall.core.arrow_compute import pc
from pitwall.logs.logql import ast
from pitwall.logs.logql.jsontext import V_NUMBER, JsonText
from pitwall.logs.logql.pipeline import _CMP, _DUPLICATE_SUFFIX, _Inexact, _number_text, _sanitize_key
from pitwall.logs.logql.units import parse_bytes, parse_duration_ns, parse_go_float
from pitwall.logs.model import ArrowLines

__all__ = [
    "FALSE",
    "K_MISSING",
    "K_NUMBER",
    "K_TEXT",
    "K_UNKNOWN",
    "TRUE",
    "UNKNOWN",
    "JsonColumns",
    "filter_prefix",
    "label_filter_names",
    "text_drops",
    "tri_filter",
    "tri_filters",
]

FALSE = np.int8(0)
TRUE = np.int8(1)
UNKNOWN = np.int8(2)

# kinds of a value per line
K_MISSING = 0  # the label is not set
K_NUMBER = 1  # a JSON number: ``num`` holds its value, ``raw`` the Python number
K_TEXT = 2  # a string label value in ``text``
K_UNKNOWN = 3  # only the per-entry pipeline can tell

_FILTERS = (
    ast.StringLabelFilter,
    ast.NumericLabelFilter,
    ast.DurationLabelFilter,
    ast.BytesLabelFilter,
    ast.BinaryLabelFilter,
)
_VALID_KEYS: set[str] = set()
_MISSING = object()


def filter_prefix(stages: Sequence[ast.Stage]) -> list[ast.LabelFilter] | None:
    """The label filters right after a leading ``| json`` (no parameters), or None.

    Dropping an entry these filters drop is exact whatever follows them.
    """
    if not stages or not isinstance(stages[0], ast.JsonParser) or stages[0].params:
        return None
    out: list[ast.LabelFilter] = []
    for st in stages[1:]:
        if not isinstance(st, _FILTERS) or _has_ip(st):
            break
        out.append(st)
    return out


def _has_ip(f: ast.LabelFilter) -> bool:
    """An ``ip()`` filter inside ``and``/``or``: only the per-entry pipeline evaluates it."""
    if isinstance(f, ast.BinaryLabelFilter):
        return _has_ip(f.left) or _has_ip(f.right)
    return isinstance(f, ast.IpLabelFilter)


def label_filter_names(filters: Sequence[ast.LabelFilter]) -> set[str]:
    names: set[str] = set()
    todo: list[ast.LabelFilter] = list(filters)
    while todo:
        f = todo.pop()
        if isinstance(f, ast.BinaryLabelFilter):
            todo.extend((f.left, f.right))
        elif isinstance(f, ast.StringLabelFilter):
            names.add(f.matcher.name)
        else:
            names.add(f.name)
    return names


def _decode(lines: Sequence[str]) -> list[object]:
    loads = orjson.loads
    try:
        return [loads(x) for x in lines]
    except orjson.JSONDecodeError:
        out: list[object] = []
        for x in lines:
            try:
                out.append(loads(x))
            except orjson.JSONDecodeError:
                out.append(None)
        return out


@dataclass
class _Column:
    kind: np.ndarray  # int8 per line, K_*
    num: np.ndarray  # float64 per line (K_NUMBER)
    # Decoded lines (``JsonColumns.others``): per such line the decoded value or _MISSING; None when unread.
    raw: list[object] | None
    in_base: np.ndarray  # per line: the value is a stream label (``base[stream]``)
    base: list[str | None]  # per stream: its label of this name
    # Flat lines whose value was read from the text: the lines (ascending) and the texts.
    flat_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    flat_texts: pa.Array | None = None
    _flat_list: list[str] | None = None
    _flat_pos: np.ndarray | None = None

    def flat_text(self, i: int) -> str:
        """The text read for flat line ``i`` (one of ``flat_rows``)."""
        if self._flat_list is None or self._flat_pos is None:
            assert self.flat_texts is not None
            self._flat_list = self.flat_texts.to_pylist()
            self._flat_pos = np.full(len(self.kind), -1, dtype=np.int64)
            self._flat_pos[self.flat_rows] = np.arange(len(self.flat_rows))
        return self._flat_list[int(self._flat_pos[i])]


_WS = "[ \\t\\n\\r]*"
_KEY = '"[a-zA-Z_][a-zA-Z0-9_]*"'
# JSON strings without escapes or control characters, numbers small enough for every decoder, literals.
_VALUE = '"[^"\\\\\\x00-\\x1f]*"|-?(?:0|[1-9][0-9]{0,17})(?:\\.[0-9]+)?(?:[eE][+-]?[0-9]{1,2})?|true|false|null'
_MEMBER = f"{_KEY}{_WS}:{_WS}(?:{_VALUE}){_WS}"
_FLAT_OBJECT = f"^{_WS}\\{{{_WS}(?:{_MEMBER}(?:,{_WS}{_MEMBER})*)?\\}}{_WS}$"
_LABEL_NAME = re.compile("[a-zA-Z_][a-zA-Z0-9_]*")
_EMPTY: dict[str, object] = {}

_KIND: dict[type, int] = {str: K_TEXT, bool: K_TEXT, type(None): K_TEXT, float: K_NUMBER, int: -1, list: K_MISSING,
                          object: K_MISSING}
_FLAT_KIND = np.array([K_MISSING, K_TEXT, K_NUMBER, K_TEXT, K_TEXT, K_TEXT, K_UNKNOWN], dtype=np.int8)  # by V_*


class JsonColumns:
    """Top-level JSON values of ``names`` for every line, as ``| json`` would set them.

    ``stream_idx[i]`` indexes ``bases`` (the stream labels of line i);
    ``undecidable[i]`` marks lines only the pipeline can handle (not a plain
    JSON object, metadata present...). Lines stay Arrow bytes: only the lines
    that are not flat objects become Python strings (to be decoded).
    """

    def __init__(
        self,
        lines: Sequence[str],
        stream_idx: np.ndarray,
        bases: Sequence[dict[str, str]],
        names: set[str],
        undecidable: np.ndarray | None = None,
    ) -> None:
        n = len(lines)
        self.lines = ArrowLines.of(lines)
        self.stream_idx = stream_idx
        self.bases = bases
        bad = np.zeros(n, dtype=bool) if undecidable is None else undecidable.copy()
        # Flat objects of plain values (the common log line) are read from the Arrow bytes, never decoded.
        self._arr = self.lines.arrow
        self._text = JsonText(self._arr)
        flat = pc.match_substring_regex(self._arr, _FLAT_OBJECT).to_numpy(zero_copy_only=False) if n else bad
        self.flat = flat & ~bad
        self.others = np.flatnonzero(~self.flat)
        self._other_pos = np.full(n, -1, dtype=np.int64)
        self._other_pos[self.others] = np.arange(len(self.others))
        self._other_lines = self.lines.take(self.others.tolist()) if len(self.others) else []
        self._dicts = self._decode_others(bad, names)
        self.bad = bad
        self._cols: dict[str, _Column] = {}

    def _decode_others(self, bad: np.ndarray, names: set[str]) -> list[dict[str, object]]:
        """The lines that are not flat objects, decoded (aligned with ``others``); marks undecidable ones."""
        others = self.others.tolist()
        if not others:
            return []
        sub_lines = self._other_lines
        objs = _decode(sub_lines)
        dicts: list[dict[str, object]] = [_EMPTY] * len(others)
        for j, (i, o) in enumerate(zip(others, objs, strict=True)):
            if type(o) is dict:
                dicts[j] = o
            else:
                bad[i] = True
        keys: set[str] = set().union(*dicts)
        invalid = set()
        for k in keys - _VALID_KEYS:
            if k and _sanitize_key(k) == k:
                if len(_VALID_KEYS) < 100_000:  # keys repeat across lines; bound the cache for hostile input
                    _VALID_KEYS.add(k)
            else:
                invalid.add(k)
        if invalid:
            for i, d in zip(others, dicts, strict=True):
                if not d.keys().isdisjoint(invalid):
                    bad[i] = True
        # A nested object under a prefix of a used name could flatten into it (``a: {b: 1}`` -> ``a_b``).
        prefixes = ({nm[:i] for nm in names for i in range(1, len(nm)) if nm[i] == "_"} | set(names)) & keys
        if prefixes:
            # only lines with a second "{" can hold a nested object
            for i, d, line in zip(others, dicts, sub_lines, strict=True):
                if line.find("{", 1) >= 0 and any(type(d.get(p)) is dict for p in prefixes):
                    bad[i] = True
        return dicts

    def __len__(self) -> int:
        return len(self.lines)

    def column(self, name: str) -> _Column:
        col = self._cols.get(name)
        if col is None:
            col = self._cols[name] = self._column(name)
        return col

    def _column(self, name: str) -> _Column:
        n = len(self.lines)
        base: list[str | None] = [b.get(name) for b in self.bases]
        if name.startswith("__") or name.endswith(_DUPLICATE_SUFFIX):
            return _Column(np.full(n, K_UNKNOWN, dtype=np.int8), np.full(n, np.nan), None, np.zeros(n, dtype=bool),
                           base)
        has = np.asarray([v is not None for v in base], dtype=bool)
        in_base = has[self.stream_idx] if has.any() else np.zeros(n, dtype=bool)
        num = np.full(n, np.nan)
        col = _Column(np.full(n, K_MISSING, dtype=np.int8), num, None, in_base, base)
        if in_base.all():
            # A stream label wins: the parsed key would go to ``<name>_extracted``.
            col.kind[:] = K_TEXT
        else:
            if len(self.others):
                self._decoded_values(name, col)
            if self.flat.any():
                self._flat_values(name, col)
            col.kind[in_base] = K_TEXT
            num[in_base] = np.nan
        col.kind[self.bad] = K_UNKNOWN
        return col

    def _decoded_values(self, name: str, col: _Column) -> None:
        """Values of ``name`` on the decoded (not flat) lines."""
        m = len(self.others)
        raw = col.raw = list(map(dict.get, self._dicts, repeat(name), repeat(_MISSING)))
        kind = np.fromiter(map(_KIND.get, map(type, raw), repeat(K_UNKNOWN)), dtype=np.int8, count=m)
        num = np.full(m, np.nan)
        ints = kind == -1
        numeric = ints | (kind == K_NUMBER)
        idx = np.flatnonzero(numeric)
        if len(idx):
            num[idx] = np.asarray([raw[i] for i in idx.tolist()], dtype=np.float64)
        kind[numeric] = K_NUMBER
        kind[ints & (num == 0)] = K_UNKNOWN  # "-0" keeps its sign in text only
        col.kind[self.others] = kind
        col.num[self.others] = num

    def _flat_values(self, name: str, col: _Column) -> None:
        """Values of ``name`` on flat lines, from the text: numbers keep their source text."""
        flat = self.flat
        if not _LABEL_NAME.fullmatch(name):
            col.kind[flat] = K_UNKNOWN
            return
        # In a flat object every quote delimits a key or a value, so the quoted name occurs once per
        # key or value it is: none, the label is not set; more, a duplicate key or a value: the pipeline;
        # once but not followed by ``:``, a value: not set.
        kv = self._text.values(name)
        kind = np.where(kv.count > 1, K_UNKNOWN, _FLAT_KIND[kv.kind]).astype(np.int8)
        col.kind[flat] = kind[flat]
        keep = flat[kv.rows]
        rows = kv.rows[keep]
        texts = kv.texts.filter(pa.array(keep)) if not keep.all() else kv.texts
        nums = np.flatnonzero(kind[rows] == K_NUMBER)
        if len(nums):
            col.num[rows[nums]] = pc.cast(texts.take(pa.array(nums)), pa.float64()).to_numpy(zero_copy_only=False)
        col.flat_rows, col.flat_texts = rows, texts

    def text(self, name: str, i: int) -> str | None:
        """The label text of line ``i``; None when not set. ``_Inexact`` when it cannot be proven."""
        col = self.column(name)
        k = col.kind[i]
        if k == K_MISSING:
            return None
        if k == K_UNKNOWN:
            raise _Inexact
        if col.in_base[i]:
            return col.base[int(self.stream_idx[i])]
        if self.flat[i]:
            return col.flat_text(i)
        assert col.raw is not None
        j = int(self._other_pos[i])
        return _text(col.raw[j], name, self._other_lines[j])

    def codes(self, name: str) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Per line an index into the returned texts (-1: not set) and a mask of lines whose text is unknown."""
        col = self.column(name)
        n = len(self.lines)
        vocab: dict[str, int] = {}
        codes = np.full(n, -1, dtype=np.int64)
        unknown = col.kind == K_UNKNOWN
        wanted = ((col.kind == K_TEXT) | (col.kind == K_NUMBER)) & ~col.in_base
        if col.flat_texts is not None and len(col.flat_rows):
            sel = wanted[col.flat_rows]
            enc = pc.dictionary_encode(col.flat_texts.filter(pa.array(sel)))
            vocab = {v: j for j, v in enumerate(enc.dictionary.to_pylist())}
            codes[col.flat_rows[sel]] = enc.indices.to_numpy(zero_copy_only=False)
        if col.raw is not None:
            self._decoded_codes(name, col, wanted, vocab, codes, unknown)
        if col.in_base.any():
            per_stream = np.asarray([-1 if v is None else vocab.setdefault(v, len(vocab)) for v in col.base],
                                    dtype=np.int64)
            sel_b = col.in_base & ((col.kind == K_TEXT) | (col.kind == K_NUMBER))
            codes[sel_b] = per_stream[self.stream_idx[sel_b]]
        codes[unknown] = -1
        return codes, list(vocab), unknown

    def _decoded_codes(self, name: str, col: _Column, wanted: np.ndarray, vocab: dict[str, int], codes: np.ndarray,
                       unknown: np.ndarray) -> None:
        """``codes`` for the decoded lines: their values' texts join ``vocab``."""
        assert col.raw is not None
        raw = col.raw
        pos = np.flatnonzero(wanted[self.others])
        if not len(pos):
            return
        rows = self.others[pos].tolist()
        out: list[int] = []
        for i, j in zip(rows, pos.tolist(), strict=True):
            try:
                v = _text(raw[j], name, self._other_lines[j])
            except _Inexact:
                unknown[i] = True
                out.append(-1)
                continue
            out.append(vocab.setdefault(v, len(vocab)))
        codes[rows] = out


def _text(v: object, name: str, line: str) -> str:
    tv = type(v)
    if tv is str:
        return v  # type: ignore[return-value]
    if tv is bool:
        return "true" if v else "false"
    if v is None:
        return ""
    if tv is int:
        return str(v)
    return _number_text(v, name, line)  # type: ignore[arg-type]


def tri_filter(f: ast.LabelFilter, cols: JsonColumns) -> np.ndarray:
    """``FALSE``/``TRUE``/``UNKNOWN`` per line for one label filter (``label_filter_predicate``'s logic)."""
    if isinstance(f, ast.BinaryLabelFilter):
        a = tri_filter(f.left, cols)
        b = tri_filter(f.right, cols)
        if f.and_:
            out = np.where((a == FALSE) | (b == FALSE), FALSE, UNKNOWN)
            out[(a == TRUE) & (b == TRUE)] = TRUE
        else:
            out = np.where((a == TRUE) | (b == TRUE), TRUE, UNKNOWN)
            out[(a == FALSE) & (b == FALSE)] = FALSE
        return out.astype(np.int8)
    if isinstance(f, ast.StringLabelFilter):
        return _tri_string(f, cols)
    if isinstance(f, ast.IpLabelFilter):  # left to the per-entry pipeline
        return np.full(len(cols.column(f.name).kind), UNKNOWN, dtype=np.int8)
    conv: Callable[[str], float]
    if isinstance(f, ast.NumericLabelFilter):
        conv, target, numeric_ok = parse_go_float, float(f.value), True
    elif isinstance(f, ast.DurationLabelFilter):
        conv, target, numeric_ok = (lambda s: float(parse_duration_ns(s, go_only=True))), float(f.value_ns), False
    else:
        conv, target, numeric_ok = (lambda s: float(parse_bytes(s))), float(f.value), False
    cmp = _CMP[f.op]
    col = cols.column(f.name)
    out = np.full(len(col.kind), UNKNOWN, dtype=np.int8)
    out[col.kind == K_MISSING] = FALSE
    if numeric_ok:
        nums = col.kind == K_NUMBER
        if nums.any():
            with np.errstate(invalid="ignore"):
                hit = _np_cmp(f.op, col.num, target)
            out[nums & hit] = TRUE
            out[nums & ~hit] = FALSE
    cache: dict[str, np.int8] = {}
    for i in np.flatnonzero(col.kind == K_TEXT).tolist():
        s = cols.text(f.name, i)
        assert s is not None
        r = cache.get(s)
        if r is None:
            try:
                r = TRUE if cmp(conv(s), target) else FALSE
            except ValueError:
                r = UNKNOWN  # the pipeline sets LabelFilterErr and keeps the entry
            cache[s] = r
        out[i] = r
    return out


def _np_cmp(op: str, a: np.ndarray, b: float) -> np.ndarray:
    ops: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
        "==": np.equal, "!=": np.not_equal, ">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal,
    }
    return ops[op](a, b)


def _tri_string(f: ast.StringLabelFilter, cols: JsonColumns) -> np.ndarray:
    m = f.matcher
    codes, vocab, unknown = cols.codes(m.name)
    # index 0: the label is not set (the filter sees ""); then one result per distinct text
    table = m.matches_many(["", *vocab])
    out = np.where(table[codes + 1], TRUE, FALSE).astype(np.int8)
    out[unknown] = UNKNOWN
    return out


def tri_filters(filters: Sequence[ast.LabelFilter], cols: JsonColumns) -> np.ndarray:
    """Every filter in sequence: FALSE when one drops the entry, TRUE when all surely keep it."""
    out = np.full(len(cols), TRUE, dtype=np.int8)
    for f in filters:
        r = tri_filter(f, cols)
        out[r == FALSE] = FALSE
        out[(r == UNKNOWN) & (out == TRUE)] = UNKNOWN
    return out


_JSON_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"


def _conjuncts(f: ast.LabelFilter) -> list[ast.LabelFilter]:
    if isinstance(f, ast.BinaryLabelFilter) and f.and_:
        return _conjuncts(f.left) + _conjuncts(f.right)
    return [f]


def text_drops(
    lines: Sequence[str], filters: Sequence[ast.LabelFilter], base_names: frozenset[str]
) -> np.ndarray:
    """Lines that ``| json | <filters>`` surely drops, told from the raw text without decoding it.

    For a numeric filter on a name without ``_`` (so no other key, sanitized
    or nested, can become that label) and a line without backslashes (so no
    key is escaped and every quote delimits a string): if ``"name"`` does not
    occur, the label is not set; if it occurs once followed by ``:`` and a
    number, that is the label's value when it is a top-level key, and the
    label is not set otherwise. Either way a failed comparison drops the
    entry, whether or not the rest of the line is valid JSON. Entries with
    structured metadata must be excluded by the caller.
    """
    n = len(lines)
    drop = np.zeros(n, dtype=bool)
    checks = [c for f in filters for c in _conjuncts(f)
              if isinstance(c, ast.NumericLabelFilter) and "_" not in c.name and c.name not in base_names
              and _sanitize_key(c.name) == c.name]
    if not checks or not n:
        return drop
    text = JsonText(ArrowLines.of(lines).arrow)
    backslash = text.has_byte(ord("\\"))
    for f in checks:
        count, num = _number_after(text, f.name)
        with np.errstate(invalid="ignore"):
            fails = ~_np_cmp(f.op, num, float(f.value))
        drop |= (count == 0) | ((count == 1) & ~np.isnan(num) & fails)
    if backslash is not None:
        drop &= ~backslash
    return drop


_NUMBER_END = list(b",} \t\n\f\r")  # what ``\s*[,}\s]`` needs right after a number (the line's end fails)


def _number_after(text: JsonText, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Per line: how often ``"name"`` occurs (2: more than once) and, where once, the number that
    ``"name"\\s*:\\s*(<JSON number>)\\s*[,}\\s]`` would capture (NaN: none)."""
    kv = text.values(name, strings=False)
    num = np.full(text.n, np.nan)
    is_num = (kv.kind[kv.rows] == V_NUMBER) & np.isin(kv.follow, _NUMBER_END)
    if is_num.any():
        texts = kv.texts.filter(pa.array(is_num))
        valid = pc.match_substring_regex(texts, f"^{_JSON_NUMBER}$").to_numpy(zero_copy_only=False)
        rows = kv.rows[is_num][valid]
        num[rows] = _floats(texts.filter(pa.array(valid)))
    return kv.count, num


def _floats(texts: pa.Array) -> np.ndarray:
    """Number texts as Go's ``ParseFloat`` reads them (too large: +-Inf)."""
    try:
        return pc.cast(texts, pa.float64()).to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]
    except pa.ArrowInvalid:  # e.g. an exponent beyond float64: Python's float() gives +-Inf as Go does
        return np.asarray([float(t) for t in texts.to_pylist()], dtype=np.float64)
