"""Log pipeline stages: line filters, parsers, label filters, formatters.

A ``Pipeline`` is compiled once per query from the AST stages and runs per
entry over a mutable label map (stream labels, structured metadata, then
parsed labels) and the current line. A stage returns the (possibly new)
line, or ``None`` to drop the entry. Parse failures set ``__error__`` and
``__error_details__`` as Loki does, and later label filters can drop them.

Line filters that sit before any stage that rewrites the line are handed to
the store (pushdown); the pipeline then skips them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pitwall.core import regex
from pitwall.core.labels import Labels, Matcher
from pitwall.logs.logql import ast
from pitwall.logs.logql.errors import LogQLLimitError
from pitwall.logs.logql.ipfilter import compile_ip_pattern, text_has_ip
from pitwall.logs.logql.templates import TemplateError, compile_template
from pitwall.logs.logql.units import parse_bytes, parse_duration_ns, parse_go_float
from pitwall.logs.model import LineFilter, LineFilterOp

__all__ = [
    "ERROR_DETAILS_LABEL",
    "ERROR_LABEL",
    "Pipeline",
    "compile_pattern",
    "line_filter_predicate",
    "parse_json_path",
    "split_pushdown",
]

ERROR_LABEL = "__error__"
ERROR_DETAILS_LABEL = "__error_details__"
ERR_JSON = "JSONParserErr"
ERR_LOGFMT = "LogfmtParserErr"
ERR_LABEL_FILTER = "LabelFilterErr"
ERR_TEMPLATE = "TemplateFormatErr"
ERR_SAMPLE = "SampleExtractionErr"
_DUPLICATE_SUFFIX = "_extracted"

StageFn = Callable[[int, str, dict[str, str], frozenset[str]], "str | None"]

# Stages line filters may not be moved across: they rewrite the line, or (distinct) remember entries.
_LINE_REWRITERS = (ast.LineFormat, ast.Decolorize, ast.UnpackParser, ast.Distinct)
MAX_DISTINCT_KEYS = 1_000_000  # combinations one ``| distinct`` remembers before the query is refused
_PUSHABLE_OPS = {
    "|=": LineFilterOp.CONTAINS,
    "!=": LineFilterOp.NOT_CONTAINS,
    "|~": LineFilterOp.REGEX,
    "!~": LineFilterOp.NOT_REGEX,
}


def split_pushdown(stages: Sequence[ast.Stage]) -> tuple[list[LineFilter], list[ast.Stage]]:
    """Line filters the store can apply exactly, and the stages left for the pipeline.

    A line filter commutes with every stage that leaves the line unchanged
    (parsers, label filters), so all filters before the first line rewrite
    are pushed down; an ``or`` chain goes down as one regex (the store
    matches it over all lines at once); a pattern filter stays here.
    """
    pushed: list[LineFilter] = []
    rest: list[ast.Stage] = []
    rewritten = False
    for st in stages:
        if isinstance(st, _LINE_REWRITERS):
            rewritten = True
        if not rewritten and isinstance(st, ast.LineFilterExpr) and st.op in _PUSHABLE_OPS:
            if len(st.patterns) == 1:
                pushed.append(LineFilter(_PUSHABLE_OPS[st.op], st.patterns[0]))
            else:
                # ``|= a or b`` keeps lines holding either; ``!= a or b`` drops them.
                literal = st.op in ("|=", "!=")
                op = LineFilterOp.REGEX if st.op in ("|=", "|~") else LineFilterOp.NOT_REGEX
                pats = [regex.escape(p) for p in st.patterns] if literal else st.patterns
                pushed.append(LineFilter(op, line_regex(pats).pattern))
            continue
        rest.append(st)
    return pushed, rest


# ---------------------------------------------------------------- line filters


def line_filter_predicate(op: str, patterns: Sequence[str]) -> Callable[[str], bool]:
    """``line -> keep?`` for one line filter expression (``or`` chains included)."""
    positive = op in ("|=", "|~", "|>")
    if op in ("|=", "!="):
        pats = list(patterns)
        if len(pats) == 1:
            p = pats[0]
            return (lambda line: p in line) if positive else (lambda line: p not in line)
        return (
            (lambda line: any(x in line for x in pats))
            if positive
            else (lambda line: not any(x in line for x in pats))
        )
    if op in ("|~", "!~"):
        test = line_regex(patterns).matches
        return test if positive else (lambda line: not test(line))
    tests = [_pattern_filter_regex(p).matches for p in patterns]
    if positive:
        return lambda line: any(t(line) for t in tests)
    return lambda line: not any(t(line) for t in tests)


def line_regex(patterns: Sequence[str]) -> regex.Regex:
    """The one (unanchored) RE2 regex a line must match for ``|~ p1 or p2 ...``."""
    if len(patterns) == 1:
        return regex.compile(patterns[0])
    return regex.compile("|".join(f"(?:{p})" for p in patterns))


def _pattern_filter_regex(pattern: str) -> regex.Regex:
    nodes = _parse_pattern(pattern)
    parts = [regex.escape(n) if not is_capture else ".*" for is_capture, n in nodes]
    return regex.compile("".join(parts), anchored=True, dot_nl=True)


# ---------------------------------------------------------------- helpers


_KEY_CACHE: dict[tuple[str, bool], str] = {}
_NON_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def _sanitize_key(key: str, first: bool = True) -> str:
    """A parsed key as a label name: invalid characters become ``_``, a leading digit gets ``_``."""
    cached = _KEY_CACHE.get((key, first))
    if cached is not None:
        return cached
    out = _NON_LABEL_CHARS.sub("_", key) if key else ""
    if out and first and out[0].isdigit():
        out = "_" + out
    if len(_KEY_CACHE) < 100_000:  # keys repeat across lines; bound the cache for hostile input
        _KEY_CACHE[(key, first)] = out
    return out


def _set_parsed(labels: dict[str, str], base: frozenset[str], key: str, value: str) -> None:
    if key in base:
        key += _DUPLICATE_SUFFIX
    labels[key] = value


def _set_error(labels: dict[str, str], err: str, details: str) -> None:
    labels[ERROR_LABEL] = err
    labels[ERROR_DETAILS_LABEL] = details


# ---------------------------------------------------------------- json


def _flatten(obj: dict[str, object], prefix: str, out: list[tuple[str, str]]) -> None:
    for k, v in obj.items():
        key = prefix + _sanitize_key(k, first=not prefix)
        if isinstance(v, str):
            out.append((key, v))
        elif isinstance(v, dict):
            _flatten(v, key + "_", out)
        elif isinstance(v, bool):
            out.append((key, "true" if v else "false"))
        elif v is None:
            out.append((key, ""))
        # arrays are skipped, as Loki's json parser does without parameters


# Numbers keep their source text ("1e3" stays "1e3"), as Loki copies the raw bytes.
_json_decode_exact = json.JSONDecoder(parse_float=str, parse_int=str).decode
_NOT_OBJECT = "Value looks like object, but can't find closing '}' symbol"


class _Inexact(Exception):
    """orjson's number does not print back to its source text; decode the slow way."""


def _number_text(v: int | float, key: str, line: str) -> str:
    """Source text of a number orjson decoded, or ``_Inexact`` when it cannot be proven."""
    if type(v) is int:
        if v == 0 and "-0" in line:
            raise _Inexact
        return str(v)
    r = repr(v)
    probe = f'"{key}":{r}'
    i = line.find(probe)
    # the key must occur once and the number must end right after the probe
    if i < 0 or line.count(f'"{key}":') != 1:
        raise _Inexact
    end = i + len(probe)
    if end < len(line) and line[end] not in ",}] \t\r\n":
        raise _Inexact
    return r


def _texts(obj: dict[str, Any], line: str) -> dict[str, Any]:
    """orjson's object with numbers as their source text (nested objects too, arrays left alone)."""
    for k, v in obj.items():
        tv = type(v)
        if tv is int or tv is float:
            obj[k] = _number_text(v, k, line)
        elif tv is dict:
            _texts(v, line)
    return obj


def _json_decode(line: str) -> Any:
    """Decode one JSON line; numbers as source text. ``ValueError`` on bad JSON."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        if "64-bit" in str(e):  # big integers: the stdlib keeps them as text
            return _json_decode_exact(line)
        raise ValueError(str(e)) from None
    if type(obj) is not dict:
        return obj
    try:
        return _texts(obj, line)
    except _Inexact:
        return _json_decode_exact(line)


def _json_all(line: str, labels: dict[str, str], base: frozenset[str]) -> None:
    """Every field of a JSON object line as labels (the hot path of ``| json``)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        if "64-bit" not in str(e):
            raise ValueError(str(e)) from None
        obj = _json_decode_exact(line)
    if type(obj) is not dict:
        raise ValueError(_NOT_OBJECT)
    out: dict[str, str] = {}
    try:
        for k, v in obj.items():
            key = _KEY_CACHE.get((k, True))
            if key is None:
                key = _sanitize_key(k)
            tv = type(v)
            if tv is str:
                pass
            elif tv is int or tv is float:
                v = _number_text(v, k, line)
            elif tv is dict:
                pairs: list[tuple[str, str]] = []
                _flatten(_texts(v, line), key + "_", pairs)
                for pk, pv in pairs:
                    out[pk] = pv
                continue
            elif tv is bool:
                v = "true" if v else "false"
            elif v is None:
                v = ""
            else:
                continue
            if key:
                out[key] = v
    except _Inexact:
        out.clear()
        pairs = []
        _flatten(_json_decode_exact(line), "", pairs)
        out.update(pairs)
    for key, v in out.items():
        labels[key + _DUPLICATE_SUFFIX if key in base else key] = v


def _json_loads(line: str) -> object:
    return _json_decode(line)


def _json_stage(stage: ast.JsonParser, required: frozenset[str] | None) -> StageFn:
    if stage.params:
        return _json_expr_stage(stage.params)
    if required is not None:
        return _json_hinted_stage(required)

    def run(ts: int, line: str, labels: dict[str, str], base: frozenset[str]) -> str | None:
        try:
            _json_all(line, labels, base)
        except ValueError as e:
            _set_error(labels, ERR_JSON, str(e))
        return line

    return run


_VALID_KEYS: set[str] = set()  # JSON keys seen that are label names already (no sanitizing)
_MISSING = object()


def _plain_text(v: object, key: str, line: str) -> str | None:
    """A top-level JSON value as label text; None for arrays (not extracted)."""
    tv = type(v)
    if tv is str:
        return v  # type: ignore[return-value]
    if tv is int or tv is float:
        return _number_text(v, key, line)  # type: ignore[arg-type]
    if tv is bool:
        return "true" if v else "false"
    if v is None:
        return ""
    return None


def _json_hinted_stage(required: frozenset[str]) -> StageFn:
    """``| json`` extracting only the labels a metric query can use (Loki's parser hints)."""
    wanted = required | {r.removesuffix(_DUPLICATE_SUFFIX) for r in required}
    flat = sorted(wanted)

    def general(obj: dict[str, Any], line: str, labels: dict[str, str], base: frozenset[str]) -> None:
        pairs: list[tuple[str, str]] = []
        _flatten(_texts(obj, line), "", pairs)
        for k, v in pairs:
            if k in wanted:
                _set_parsed(labels, base, k, v)
        for k in obj:
            if _sanitize_key(k) == k:
                _VALID_KEYS.add(k)

    def run(ts: int, line: str, labels: dict[str, str], base: frozenset[str]) -> str | None:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            if "64-bit" not in str(e):
                _set_error(labels, ERR_JSON, str(e))
                return line
            obj = _json_decode_exact(line)
        if type(obj) is not dict:
            _set_error(labels, ERR_JSON, _NOT_OBJECT)
            return line
        try:
            # Fast path: every key is a label name already and nothing nests, so a
            # wanted label can only come from the key of the same name.
            if obj.keys() <= _VALID_KEYS and dict not in set(map(type, obj.values())):
                for name in flat:
                    v = obj.get(name, _MISSING)
                    if v is _MISSING:
                        continue
                    text = _plain_text(v, name, line)
                    if text is not None:
                        _set_parsed(labels, base, name, text)
            else:
                general(obj, line, labels, base)
        except _Inexact:
            pairs: list[tuple[str, str]] = []
            _flatten(_json_decode_exact(line), "", pairs)
            for k, v in pairs:
                if k in wanted:
                    _set_parsed(labels, base, k, v)
        return line

    return run


def parse_json_path(expr: str) -> list[str | int]:
    """Path segments of a json parameter: ``a.b[0]["c d"]`` -> ``["a", "b", 0, "c d"]``."""
    segs: list[str | int] = []
    i = 0
    n = len(expr)
    expect_key = True
    while i < n:
        c = expr[i]
        if c == ".":
            i += 1
            expect_key = True
            continue
        if c == "[":
            j = expr.find("]", i)
            if j < 0:
                raise ValueError("unterminated [")
            inner = expr[i + 1 : j].strip()
            if inner[:1] in "\"'" and inner[-1:] == inner[:1] and len(inner) >= 2:
                segs.append(inner[1:-1])
            elif inner.isdigit():
                segs.append(int(inner))
            else:
                raise ValueError(f"invalid index {inner!r}")
            i = j + 1
            expect_key = False
            continue
        if not expect_key:
            raise ValueError(f"unexpected {c!r}")
        m = re.compile(r"[^.\[\]]+").match(expr, i)
        assert m is not None
        segs.append(m.group(0))
        i = m.end()
        expect_key = False
    if not segs:
        raise ValueError("empty expression")
    return segs


def _json_value_text(v: object) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return ""
    # objects/arrays: their JSON text (numbers were kept as source text strings)
    return json.dumps(v, separators=(",", ":"))


def _json_step(cur: object, seg: str | int) -> object:
    """One path segment into a decoded JSON value, ``_MISSING`` when it is not there."""
    if isinstance(seg, int):
        return cur[seg] if isinstance(cur, list) and 0 <= seg < len(cur) else _MISSING
    return cur[seg] if isinstance(cur, dict) and seg in cur else _MISSING


def _json_expr_stage(params: tuple[tuple[str, str], ...]) -> StageFn:
    paths = [(name, parse_json_path(expr)) for name, expr in params]

    def run(ts: int, line: str, labels: dict[str, str], base: frozenset[str]) -> str | None:
        try:
            obj = _json_loads(line)
        except ValueError as e:
            _set_error(labels, ERR_JSON, str(e))
            return line
        for name, path in paths:
            cur: object = obj
            for seg in path:
                cur = _json_step(cur, seg)
                if cur is _MISSING:
                    cur = None
                    break
            _set_parsed(labels, base, name, _json_value_text(cur))
        return line

    return run


# ---------------------------------------------------------------- logfmt


class _LogfmtError(ValueError):
    pass


def _logfmt_pairs(line: str, strict: bool) -> list[tuple[str, str | None]]:
    """``key=value`` pairs of a logfmt line; a bare key yields ``(key, None)``.

    Non-strict mode skips malformed pairs; strict mode raises ``_LogfmtError``.
    """
    out: list[tuple[str, str | None]] = []
    i = 0
    n = len(line)
    while i < n:
        while i < n and line[i] <= " ":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and line[i] > " " and line[i] not in '="':
            i += 1
        key = line[start:i]
        if not key:
            if strict:
                raise _LogfmtError(f"logfmt syntax error at pos {i + 1} : unexpected '{line[i]}'")
            while i < n and line[i] > " ":
                i += 1
            continue
        if i >= n or line[i] <= " ":
            out.append((key, None))
            continue
        if line[i] == '"':
            if strict:
                raise _LogfmtError(f"logfmt syntax error at pos {i + 1} : unexpected '\"'")
            while i < n and line[i] > " ":
                i += 1
            continue
        i += 1  # '='
        if i < n and line[i] == '"':
            j = i + 1
            buf: list[str] = []
            while j < n and line[j] != '"':
                if line[j] == "\\" and j + 1 < n:
                    buf.append(line[j : j + 2])
                    j += 2
                    continue
                buf.append(line[j])
                j += 1
            if j >= n:
                if strict:
                    raise _LogfmtError(f"logfmt syntax error at pos {j + 1} : unterminated quoted value")
                break
            raw = "".join(buf)
            try:
                value = json.loads('"' + raw + '"') if "\\" in raw else raw
            except ValueError:
                value = raw
            out.append((key, value))
            i = j + 1
            continue
        vstart = i
        bad = False
        while i < n and line[i] > " ":
            if line[i] in '="':
                bad = True
            i += 1
        if bad:
            if strict:
                raise _LogfmtError(f"logfmt syntax error at pos {vstart + 1} : unexpected '='")
            continue
        out.append((key, line[vstart:i]))
    return out


def _logfmt_stage(stage: ast.LogfmtParser) -> StageFn:
    wanted = {expr: name for name, expr in stage.params}

    def run(ts: int, line: str, labels: dict[str, str], base: frozenset[str]) -> str | None:
        try:
            pairs = _logfmt_pairs(line, stage.strict)
        except _LogfmtError as e:
            _set_error(labels, ERR_LOGFMT, str(e))
            return line
        for key, value in pairs:
            if value is None:
                if not stage.keep_empty:
                    continue
                value = ""
            if wanted:
                name = wanted.get(key)
                if name is None:
                    continue
                _set_parsed(labels, base, name, value)
                continue
            k = _sanitize_key(key)
            if k:
                _set_parsed(labels, base, k, value)
        if wanted:
            for name in wanted.values():
                if name not in labels and name + _DUPLICATE_SUFFIX not in labels:
                    _set_parsed(labels, base, name, "")
        return line

    return run


# ---------------------------------------------------------------- regexp / pattern / unpack


def _regexp_stage(stage: ast.RegexpParser) -> StageFn:
    rx = regex.compile(stage.pattern)
    named = sorted(rx.groupindex.items(), key=lambda kv: kv[1])
    names = [_sanitize_key(name) for name, _ in named]
    extract = rx.extractor([idx for _, idx in named])

    def run(ts: int, line: str, labels: dict[str, str], base: frozenset[str]) -> str | None:
        values = extract(line)
        if values is None:
            return line
        for name, value in zip(names, values, strict=True):
            _set_parsed(labels, base, name, value)
        return line

    return run


def _parse_pattern(pattern: str) -> list[tuple[bool, str]]:
    """Pattern nodes: (True, name) for ``<name>`` captures, (False, text) for literals."""
    nodes: list[tuple[bool, str]] = []
    pos = 0
    for m in re.finditer(r"<(_|[a-zA-Z_][a-zA-Z0-9_]*)>", pattern):
        if m.start() > pos:
            nodes.append((False, pattern[pos : m.start()]))
        nodes.append((True, m.group(1)))
        pos = m.end()
    if pos < len(pattern):
        nodes.append((False, pattern[pos:]))
    return nodes


def compile_pattern(pattern: str) -> list[tuple[bool, str]]:
    """Validate a pattern expression as Loki does; returns its nodes."""
    nodes = _parse_pattern(pattern)
    if not any(is_cap and name != "_" for is_cap, name in nodes):
        raise ValueError("at least one capture is required")
    seen: set[str] = set()
    for k, (is_cap, name) in enumerate(nodes):
        if is_cap and k > 0 and nodes[k - 1][0]:
            raise ValueError(f"found consecutive capture '{name}': invalid expression")
        if is_cap and name != "_":
            if name in seen:
                raise ValueError(f"duplicate capture name ({name}): invalid expression")
            seen.add(name)
    return nodes


def pattern_matches(nodes: list[tuple[bool, str]], line: str) -> list[tuple[str, str]] | None:
    """Captures of ``line`` against a pattern, following Loki's left-to-right matcher."""
    if not line or not nodes:
        return None
    rest = line
    k = 0
    if not nodes[0][0]:
        lit = nodes[0][1]
        if not rest.startswith(lit):
            return None
        rest = rest[len(lit) :]
        k = 1
    if k >= len(nodes):
        return None
    caps: list[tuple[str, str]] = []
    while k < len(nodes):
        name = nodes[k][1]
        if k == len(nodes) - 1:
            if name != "_":
                caps.append((name, rest))
            return caps
        lit = nodes[k + 1][1]
        k += 2
        i = rest.find(lit)
        if i < 0:
            if name != "_":
                caps.append((name, rest))
            return caps
        if name != "_":
            caps.append((name, rest[:i]))
        rest = rest[i + len(lit) :]
    return caps


def _pattern_stage(stage: ast.PatternParser) -> StageFn:
    nodes = compile_pattern(stage.pattern)

    def run(ts: int, line: str, labels: dict[str, str], base: frozenset[str]) -> str | None:
        caps = pattern_matches(nodes, line)
        if caps:
            for name, value in caps:
                _set_parsed(labels, base, name, value)
        return line

    return run


def _unpack_stage(ts: int, line: str, labels: dict[str, str], base: frozenset[str]) -> str | None:
    try:
        obj = json.loads(line)
    except ValueError as e:
        _set_error(labels, ERR_JSON, str(e))
        return line
    if not isinstance(obj, dict):
        _set_error(labels, ERR_JSON, "expecting json object")
        return line
    entry = line
    for k, v in obj.items():
        if not isinstance(v, str):
            continue
        if k == "_entry":
            entry = v
            continue
        key = _sanitize_key(k)
        if key:
            _set_parsed(labels, base, key, v)
    return entry


# ---------------------------------------------------------------- label filters

_CMP: dict[str, Callable[[float, float], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}

LabelPredicate = Callable[[dict[str, str]], bool]


def label_filter_predicate(f: ast.LabelFilter) -> LabelPredicate:
    """``labels -> keep?``; conversion failures set ``LabelFilterErr`` and keep the entry."""
    if isinstance(f, ast.BinaryLabelFilter):
        left = label_filter_predicate(f.left)
        right = label_filter_predicate(f.right)
        if f.and_:
            return lambda lb: left(lb) and right(lb)
        return lambda lb: left(lb) or right(lb)
    if isinstance(f, ast.IpLabelFilter):
        return _ip_label_filter(f)
    if isinstance(f, ast.StringLabelFilter):
        m: Matcher = f.matcher
        name = m.name
        matches = m.matches
        return lambda lb: matches(lb.get(name, ""))
    conv: Callable[[str], float]
    target: float
    if isinstance(f, ast.NumericLabelFilter):
        conv, target = parse_go_float, f.value
    elif isinstance(f, ast.DurationLabelFilter):
        conv, target = (lambda s: float(parse_duration_ns(s, go_only=True))), float(f.value_ns)
    else:
        conv, target = (lambda s: float(parse_bytes(s))), float(f.value)
    return _converting_filter(f.name, _CMP[f.op], conv, target)


def _ip_label_filter(f: ast.IpLabelFilter) -> LabelPredicate:
    """Loki's ``IPLabelFilter``: an entry with an error passes; a missing label fails either way."""
    match = compile_ip_pattern(f.pattern)
    name, negate = f.name, f.op == "!="

    def pred(lb: dict[str, str]) -> bool:
        if ERROR_LABEL in lb:
            return True
        v = lb.get(name)
        if v is None:
            return False
        return text_has_ip(match, v) != negate

    return pred


def _converting_filter(
    name: str, cmp: Callable[[float, float], bool], conv: Callable[[str], float], target: float
) -> LabelPredicate:
    def pred(lb: dict[str, str]) -> bool:
        v = lb.get(name)
        if v is None:
            return False
        try:
            x = conv(v)
        except ValueError as e:
            if ERROR_LABEL not in lb:
                _set_error(lb, ERR_LABEL_FILTER, str(e))
            return True
        return cmp(x, target)

    return pred


def _label_filter_stage(f: ast.LabelFilter) -> StageFn:
    pred = label_filter_predicate(f)

    def run(ts: int, line: str, labels: dict[str, str], base: frozenset[str]) -> str | None:
        return line if pred(labels) else None

    return run


# ---------------------------------------------------------------- formatting


def _line_format_stage(stage: ast.LineFormat) -> StageFn:
    tmpl = compile_template(stage.template)

    def run(ts: int, line: str, labels: dict[str, str], base: frozenset[str]) -> str | None:
        try:
            return tmpl.render(labels, line, ts)
        except TemplateError as e:
            _set_error(labels, ERR_TEMPLATE, str(e))
            return line

    return run


def _label_format_stage(stage: ast.LabelFormat) -> StageFn:
    items = [
        (dst, val, rename, None if rename else compile_template(val)) for dst, val, rename in stage.items
    ]

    def run(ts: int, line: str, labels: dict[str, str], base: frozenset[str]) -> str | None:
        snapshot: dict[str, str] | None = None  # templates see the labels from before this stage
        for dst, val, rename, tmpl in items:
            if rename:
                if val in labels:
                    v = labels.pop(val)
                    labels[dst] = v
                continue
            assert tmpl is not None
            if snapshot is None:
                snapshot = dict(labels)
            try:
                labels[dst] = tmpl.render(snapshot, line, ts)
            except TemplateError as e:
                _set_error(labels, ERR_TEMPLATE, str(e))
        return line

    return run


def _drop_stage(stage: ast.DropLabels) -> StageFn:
    items = stage.items

    def run(ts: int, line: str, labels: dict[str, str], base: frozenset[str]) -> str | None:
        for name, matcher in items:
            if name in labels and (matcher is None or matcher.matches(labels[name])):
                del labels[name]
        return line

    return run


def _keep_stage(stage: ast.KeepLabels) -> StageFn:
    items = stage.items

    def run(ts: int, line: str, labels: dict[str, str], base: frozenset[str]) -> str | None:
        keep = {ERROR_LABEL, ERROR_DETAILS_LABEL}
        for name, matcher in items:
            if name in labels and (matcher is None or matcher.matches(labels[name])):
                keep.add(name)
        for name in [k for k in labels if k not in keep]:
            del labels[name]
        return line

    return run


_ANSI = re.compile(
    "[\u001b\u009b][\\[\\]()#;?]*(?:(?:(?:[a-zA-Z\\d]*(?:;[a-zA-Z\\d]*)*)?\u0007)"
    "|(?:(?:\\d{1,4}(?:;\\d{0,4})*)?[\\dA-PRZcf-ntqry=><~]))"
)


def _decolorize_stage(ts: int, line: str, labels: dict[str, str], base: frozenset[str]) -> str | None:
    return _ANSI.sub("", line)


def _distinct_stage(stage: ast.Distinct) -> StageFn:
    """Loki's ``DistinctFilter``: an entry missing one of the labels passes; state lives for the query."""
    names = stage.labels
    seen: set[tuple[str, ...]] = set()

    def run(ts: int, line: str, labels: dict[str, str], base: frozenset[str]) -> str | None:
        key = []
        for n in names:
            v = labels.get(n)
            if v is None:
                return line
            key.append(v)
        k = tuple(key)
        if k in seen:
            return None
        if len(seen) >= MAX_DISTINCT_KEYS:
            raise LogQLLimitError(f"distinct: more than {MAX_DISTINCT_KEYS} distinct label combinations")
        seen.add(k)
        return line

    return run


def _line_filter_stage(stage: ast.LineFilterExpr) -> StageFn:
    pred = line_filter_predicate(stage.op, stage.patterns)

    def run(ts: int, line: str, labels: dict[str, str], base: frozenset[str]) -> str | None:
        return line if pred(line) else None

    return run


def _ip_line_filter_stage(stage: ast.IpLineFilter) -> StageFn:
    match = compile_ip_pattern(stage.pattern)
    keep_if = stage.op == "|="

    def run(ts: int, line: str, labels: dict[str, str], base: frozenset[str]) -> str | None:
        return line if text_has_ip(match, line) == keep_if else None

    return run


def _compile_stage(st: ast.Stage, required: frozenset[str] | None) -> StageFn:
    if isinstance(st, ast.LineFilterExpr):
        return _line_filter_stage(st)
    if isinstance(st, ast.IpLineFilter):
        return _ip_line_filter_stage(st)
    if isinstance(st, ast.JsonParser):
        return _json_stage(st, required)
    if isinstance(st, ast.LogfmtParser):
        return _logfmt_stage(st)
    if isinstance(st, ast.RegexpParser):
        return _regexp_stage(st)
    if isinstance(st, ast.PatternParser):
        return _pattern_stage(st)
    if isinstance(st, ast.UnpackParser):
        return _unpack_stage
    if isinstance(st, ast.LineFormat):
        return _line_format_stage(st)
    if isinstance(st, ast.LabelFormat):
        return _label_format_stage(st)
    if isinstance(st, ast.DropLabels):
        return _drop_stage(st)
    if isinstance(st, ast.KeepLabels):
        return _keep_stage(st)
    if isinstance(st, ast.Decolorize):
        return _decolorize_stage
    if isinstance(st, ast.Distinct):
        return _distinct_stage(st)
    return _label_filter_stage(st)


@dataclass
class Pipeline:
    """Compiled stages; ``process`` runs them over one entry."""

    stages: list[StageFn]
    # True when no stage touches labels: output labels are the stream's (plus metadata).
    labels_static: bool

    @classmethod
    def compile(cls, stages: Sequence[ast.Stage], *, required: frozenset[str] | None = None) -> Pipeline:
        """Compile stages; ``required`` limits what ``| json`` extracts (None: everything)."""
        fns = [_compile_stage(st, required) for st in stages]
        static = all(isinstance(st, ast.LineFilterExpr) for st in stages)
        return cls(fns, static)

    @property
    def empty(self) -> bool:
        return not self.stages

    def process(self, ts: int, line: str, labels: dict[str, str], base: frozenset[str]) -> str | None:
        """Run every stage; ``labels`` is updated in place. ``None`` when the entry is dropped."""
        cur = line
        for fn in self.stages:
            nxt = fn(ts, cur, labels, base)
            if nxt is None:
                return None
            cur = nxt
        return cur


def labels_key(labels: dict[str, str]) -> Labels:
    """A label map as the canonical sorted tuple."""
    return tuple(sorted(labels.items()))
