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
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import orjson
import pyarrow as pa

from pitwall.core.arrow_compute import pc
from pitwall.logs.logql import ast
from pitwall.logs.logql.pipeline import _CMP, _DUPLICATE_SUFFIX, _Inexact, _number_text, _sanitize_key
from pitwall.logs.logql.units import parse_bytes, parse_duration_ns, parse_go_float

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
    raw: list[object] | None  # per line: the decoded value, or _MISSING; None when every line's comes from ``base``
    in_base: np.ndarray  # per line: the value is a stream label (``base[stream]``)
    base: list[str | None]  # per stream: its label of this name


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


class JsonColumns:
    """Top-level JSON values of ``names`` for every line, as ``| json`` would set them.

    ``stream_idx[i]`` indexes ``bases`` (the stream labels of line i);
    ``undecidable[i]`` marks lines only the pipeline can handle (not a plain
    JSON object, metadata present...).
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
        self.lines = lines
        self.stream_idx = stream_idx
        self.bases = bases
        bad = np.zeros(n, dtype=bool) if undecidable is None else undecidable.copy()
        # Flat objects of plain values (the common log line) are read with RE2 over Arrow, never decoded.
        self._arr = pa.array(lines, pa.string())
        flat = pc.match_substring_regex(self._arr, _FLAT_OBJECT).to_numpy(zero_copy_only=False) if n else bad
        self.flat = flat & ~bad
        others = np.flatnonzero(~self.flat).tolist()
        dicts: list[dict[str, object]] = [_EMPTY] * n
        if others:
            sub_lines = [lines[i] for i in others] if len(others) < n else list(lines)
            objs = _decode(sub_lines)
            for i, o in zip(others, objs, strict=True):
                if type(o) is dict:
                    dicts[i] = o
                else:
                    bad[i] = True
            sub = [dicts[i] for i in others]
            keys: set[str] = set().union(*sub)
            invalid = set()
            for k in keys - _VALID_KEYS:
                if k and _sanitize_key(k) == k:
                    if len(_VALID_KEYS) < 100_000:  # keys repeat across lines; bound the cache for hostile input
                        _VALID_KEYS.add(k)
                else:
                    invalid.add(k)
            if invalid:
                for i in others:
                    if not dicts[i].keys().isdisjoint(invalid):
                        bad[i] = True
            # A nested object under a prefix of a used name could flatten into it (``a: {b: 1}`` -> ``a_b``).
            prefixes = ({nm[:i] for nm in names for i in range(1, len(nm)) if nm[i] == "_"} | set(names)) & keys
            if prefixes:
                # only lines with a second "{" can hold a nested object
                for i in others:
                    if lines[i].find("{", 1) >= 0 and any(type(dicts[i].get(p)) is dict for p in prefixes):
                        bad[i] = True
        self.bad = bad
        self._dicts = dicts
        self._cols: dict[str, _Column] = {}

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
        raw: list[object] | None = None
        if in_base.all():
            # A stream label wins: the parsed key would go to ``<name>_extracted``.
            kind = np.full(n, K_TEXT, dtype=np.int8)
        else:
            raw = list(map(dict.get, self._dicts, repeat(name), repeat(_MISSING)))
            kind = np.fromiter(map(_KIND.get, map(type, raw), repeat(K_UNKNOWN)), dtype=np.int8, count=n)
            ints = kind == -1
            numeric = ints | (kind == K_NUMBER)
            idx = np.flatnonzero(numeric)
            if len(idx):
                num[idx] = np.asarray([raw[i] for i in idx.tolist()], dtype=np.float64)
            kind[numeric] = K_NUMBER
            kind[ints & (num == 0)] = K_UNKNOWN  # "-0" keeps its sign in text only
            if self.flat.any():
                self._flat_values(name, kind, num, raw)
            kind[in_base] = K_TEXT
            num[in_base] = np.nan
        kind[self.bad] = K_UNKNOWN
        return _Column(kind, num, raw, in_base, base)

    def _flat_values(self, name: str, kind: np.ndarray, num: np.ndarray, raw: list[object]) -> None:
        """Values of ``name`` on flat lines, from the text: numbers keep their source text."""
        flat = self.flat
        if not _LABEL_NAME.fullmatch(name):
            kind[flat] = K_UNKNOWN
            return
        key = f'"{name}"{_WS}:'
        # In a flat object every quote delimits a key or a value, so the quoted name occurs once per
        # key or value it is: none, the label is not set; more, a duplicate key or a value: the pipeline.
        quoted = f'"{name}"'
        count = np.fromiter(map(str.count, self.lines, repeat(quoted)), dtype=np.int64, count=len(self.lines))
        kind[flat & (count == 0)] = K_MISSING
        kind[flat & (count > 1)] = K_UNKNOWN
        one = np.flatnonzero(flat & (count == 1))
        if not len(one):
            return
        sub = self._arr if len(one) == len(self.lines) else self._arr.take(pa.array(one))
        found = pc.extract_regex(sub, key + _WS + f"(?P<v>{_VALUE})")
        is_key = found.is_valid().to_numpy(zero_copy_only=False)
        kind[one[~is_key]] = K_MISSING  # the one occurrence is a value, not a key
        one = one[is_key]
        if not len(one):
            return
        got = found.field("v").filter(pa.array(is_key))
        first = pc.utf8_slice_codeunits(got, 0, 1)
        is_str = pc.equal(first, '"').to_numpy(zero_copy_only=False)
        is_lit = pc.is_in(first, pa.array(["t", "f", "n"])).to_numpy(zero_copy_only=False)
        is_num = ~is_str & ~is_lit
        texts = pc.if_else(is_str, pc.utf8_slice_codeunits(got, 1, -1), got)
        texts = pc.if_else(pc.equal(got, "null"), "", texts).to_pylist()
        for i, t in zip(one.tolist(), texts, strict=True):
            raw[i] = t
        kind[one] = np.where(is_num, K_NUMBER, K_TEXT)
        num[one[is_num]] = pc.cast(got.filter(pa.array(is_num)), pa.float64()).to_numpy(zero_copy_only=False)

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
        assert col.raw is not None
        return _text(col.raw[i], name, self.lines[i])

    def codes(self, name: str) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Per line an index into the returned texts (-1: not set) and a mask of lines whose text is unknown."""
        col = self.column(name)
        n = len(self.lines)
        vocab: dict[str, int] = {}
        codes = np.full(n, -1, dtype=np.int64)
        unknown = col.kind == K_UNKNOWN
        known = (col.kind == K_TEXT) | (col.kind == K_NUMBER)
        if col.raw is not None:
            raw = col.raw
            lines = self.lines
            idx = np.flatnonzero(known & ~col.in_base).tolist()
            picked = [raw[i] for i in idx]
            vals: list[str]
            if set(map(type, picked)) - {str}:
                vals = []
                for i, v in zip(idx, picked, strict=True):
                    try:
                        vals.append(_text(v, name, lines[i]))
                    except _Inexact:
                        unknown[i] = True
                        vals.append("")
            else:
                vals = picked  # type: ignore[assignment]
            vocab = {v: j for j, v in enumerate(dict.fromkeys(vals))}
            if idx:
                codes[idx] = list(map(vocab.__getitem__, vals))
        if col.in_base.any():
            per_stream = np.asarray([-1 if v is None else vocab.setdefault(v, len(vocab)) for v in col.base],
                                    dtype=np.int64)
            sel = col.in_base & known
            codes[sel] = per_stream[self.stream_idx[sel]]
        codes[unknown] = -1
        return codes, list(vocab), unknown


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
    # One scan of the joined text answers "no backslash anywhere" for the usual batch.
    plain: np.ndarray | None = None  # None: every line is plain
    if "\\" in "".join(lines):
        plain = ~pc.match_substring(pa.array(lines, pa.string()), "\\").to_numpy(zero_copy_only=False)
    for f in checks:
        # Lines an earlier check dropped need no second look.
        live = np.flatnonzero(~drop)
        if not len(live):
            break
        sub = lines if len(live) == n else [lines[i] for i in live.tolist()]
        key = f'"{f.name}"'
        count = np.fromiter(map(str.count, sub, repeat(key)), dtype=np.int64, count=len(sub))
        got = pc.extract_regex(pa.array(sub, pa.string()), key + r"\s*:\s*(?P<v>" + _JSON_NUMBER + r")\s*[,}\s]")
        num = _floats(got)
        with np.errstate(invalid="ignore"):
            fails = ~_np_cmp(f.op, num, float(f.value))
        sure = (count == 0) | ((count == 1) & ~np.isnan(num) & fails)
        drop[live] = sure if plain is None else sure & plain[live]
    return drop


def _floats(got: pa.StructArray) -> np.ndarray:
    """``extract_regex``'s number texts (no match: NaN) as Go's ``ParseFloat`` reads them (too large: +-Inf)."""
    valid = got.is_valid().to_numpy(zero_copy_only=False)
    out = np.full(len(got), np.nan)
    texts = got.field("v").filter(pa.array(valid))
    try:
        out[valid] = pc.cast(texts, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:  # e.g. an exponent beyond float64: Python's float() gives +-Inf as Go does
        out[valid] = np.asarray([float(t) for t in texts.to_pylist()], dtype=np.float64)
    return out
