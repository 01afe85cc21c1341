"""TraceQL evaluated over the spans of one trace, and the column filters a query implies.

Semantics (Tempo's, ``pkg/traceql``):

* a spanset filter ``{ e }`` keeps the spans for which ``e`` is true;
* a comparison with a missing attribute is false, ``!=`` included (``= nil``
  and ``!= nil`` test presence); values compare only within a type: numbers
  (int and float alike), strings (``=~``/``!~`` are RE2, fully anchored),
  booleans, durations with ``duration``/``traceDuration``, the status and
  kind enums with ``status`` and ``kind``;
* unscoped ``.x`` is the span's attribute, else the resource's;
* ``A && B``: both non-empty, their union; ``A || B``: the union;
  ``A > B``: spans of B whose parent is in A; ``>>`` descendants; ``<`` parents;
  ``<<`` ancestors; ``~`` siblings. A trace matches when the result is non-empty.

``candidate_filters`` turns what a query requires of some span into
``SpanFilter``s (service, name, status, duration, attribute conditions), so
the store narrows the traces to read before this module checks them exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from pitwall.core import regex
from pitwall.traces.model import STATUS_ERROR, STATUS_OK, STATUS_UNSET, SpanRow, summarize
from pitwall.traces.query import AttrFilter, SpanFilter
from pitwall.traces.traceql.ast import (
    Attribute,
    Binary,
    Count,
    FieldExpr,
    Intrinsic,
    Not,
    Query,
    SpansetExpr,
    SpansetFilter,
    SpansetOp,
    Static,
)
from pitwall.traces.traceql.parser import KINDS

__all__ = ["TraceContext", "candidate_filters", "evaluate", "referenced_attributes"]

_STATUS_NAME = {STATUS_UNSET: "unset", STATUS_OK: "ok", STATUS_ERROR: "error"}
_MISSING = object()


@dataclass
class TraceContext:
    """One trace's spans with the indexes the structural operators need."""

    spans: list[SpanRow]
    by_id: dict[str, SpanRow] = field(init=False)
    children: dict[str, list[str]] = field(init=False)
    root_name: str = field(init=False)
    root_service: str = field(init=False)
    duration_ns: int = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {s.span_id: s for s in self.spans}
        self.children = {}
        for s in self.spans:
            if s.parent_id:
                self.children.setdefault(s.parent_id, []).append(s.span_id)
        summary = summarize(self.spans)
        roots = [s for s in self.spans if not s.parent_id]
        self.root_name = summary.root_name if roots else ""
        self.root_service = summary.root_service if roots else ""
        self.duration_ns = summary.duration_ns


def _typed(v: Any) -> tuple[str, Any]:
    if isinstance(v, bool):
        return "bool", v
    if isinstance(v, int | float):
        return "number", v
    if isinstance(v, str):
        return "string", v
    return "other", v


def _value(e: FieldExpr, s: SpanRow, t: TraceContext) -> tuple[str, Any]:
    """(type, value) of an operand for span ``s``; type ``missing`` when absent."""
    if isinstance(e, Static):
        if e.kind in ("int", "float"):
            return "number", e.value
        return e.kind, e.value
    if isinstance(e, Attribute):
        v = _MISSING
        if e.scope in ("span", ""):
            v = s.attributes.get(e.name, _MISSING)
        if v is _MISSING and e.scope in ("resource", ""):
            v = s.resource.get(e.name, _MISSING)
        return ("missing", None) if v is _MISSING or v is None else _typed(v)
    if isinstance(e, Intrinsic):
        return _intrinsic(e.name, s, t)
    return "bool", _truth(e, s, t)


def _intrinsic(name: str, s: SpanRow, t: TraceContext) -> tuple[str, Any]:
    if name == "name":
        return "string", s.name
    if name == "status":
        return "status", _STATUS_NAME.get(s.status_code, "unset")
    if name == "statusMessage":
        return "string", s.status_message
    if name == "duration":
        return "duration", s.duration_ns
    if name == "kind":
        return "spankind", KINDS[s.kind] if 0 <= s.kind < len(KINDS) else "unspecified"
    if name == "traceDuration":
        return "duration", t.duration_ns
    if name == "rootName":
        return ("string", t.root_name) if t.root_name or t.root_service else ("missing", None)
    if name == "rootServiceName":
        return ("string", t.root_service) if t.root_service else ("missing", None)
    if name == "span:id":
        return "string", s.span_id
    if name == "span:parentID":
        return ("string", s.parent_id) if s.parent_id else ("missing", None)
    if name == "trace:id":
        return "string", s.trace_id
    if name == "span:childCount":
        return "number", len(t.children.get(s.span_id, ()))
    raise AssertionError(name)


_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: bool(a == b), "!=": lambda a, b: bool(a != b), ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b), "<": lambda a, b: bool(a < b), "<=": lambda a, b: bool(a <= b),
}


def _compare(op: str, lhs: tuple[str, Any], rhs: tuple[str, Any]) -> bool:
    (lt, lv), (rt, rv) = lhs, rhs
    if rt == "nil" or lt == "nil":
        present = (lt if rt == "nil" else rt) != "missing"
        return present if op == "!=" else (not present) if op == "=" else False
    if lt == "missing" or rt == "missing" or lt != rt:
        return False
    if op in ("=~", "!~"):
        if lt != "string":
            return False
        hit = regex.compile(rv, anchored=True).matches(lv)
        return hit if op == "=~" else not hit
    if lt in ("bool", "status", "spankind") and op not in ("=", "!="):
        return False
    return _CMP[op](lv, rv)


def _truth(e: FieldExpr, s: SpanRow, t: TraceContext) -> bool:
    if isinstance(e, Binary):
        if e.op == "&&":
            return _truth(e.lhs, s, t) and _truth(e.rhs, s, t)
        if e.op == "||":
            return _truth(e.lhs, s, t) or _truth(e.rhs, s, t)
        return _compare(e.op, _value(e.lhs, s, t), _value(e.rhs, s, t))
    if isinstance(e, Not):
        return not _truth(e.expr, s, t)
    kind, v = _value(e, s, t)
    return kind == "bool" and v is True


def _spanset(e: SpansetExpr, t: TraceContext) -> set[str]:
    if isinstance(e, SpansetFilter):
        if e.expr is None:
            return set(t.by_id)
        expr = e.expr
        return {s.span_id for s in t.spans if _truth(expr, s, t)}
    lhs = _spanset(e.lhs, t)
    rhs = _spanset(e.rhs, t)
    if e.op == "&&":
        return lhs | rhs if lhs and rhs else set()
    if e.op == "||":
        return lhs | rhs
    return rhs & _structural(e.op, lhs, t)


def _structural(op: str, lhs: set[str], t: TraceContext) -> set[str]:
    """The spans standing in relation ``op`` to some span of ``lhs``; linear in the trace's size."""
    if op == ">":
        return {c for p in lhs for c in t.children.get(p, ())}
    if op == "<":
        return {t.by_id[x].parent_id for x in lhs if t.by_id[x].parent_id in t.by_id}
    if op == ">>":
        return _reach(lhs, lambda x: t.children.get(x, ()))
    if op == "<<":
        return _reach(lhs, lambda x: (t.by_id[x].parent_id,) if t.by_id[x].parent_id in t.by_id else ())
    # "~": a span whose parent has another child in lhs
    in_lhs: dict[str, int] = {}
    for x in lhs:
        p = t.by_id[x].parent_id
        if p:
            in_lhs[p] = in_lhs.get(p, 0) + 1
    return {s.span_id for s in t.spans
            if s.parent_id and in_lhs.get(s.parent_id, 0) - (s.span_id in lhs) > 0}


def _reach(start: set[str], step: Callable[[str], Iterable[str]]) -> set[str]:
    """Every span one or more steps from ``start`` (each visited once, cycles included)."""
    seen: set[str] = set()
    todo = [n for x in start for n in step(x)]
    while todo:
        x = todo.pop()
        if x not in seen:
            seen.add(x)
            todo.extend(step(x))
    return seen


def evaluate(q: Query, spans: list[SpanRow]) -> list[SpanRow]:
    """The spans of this trace the query returns (empty: the trace does not match), by start time."""
    if not spans:
        return []
    t = TraceContext(spans)
    found = _spanset(q.spansets, t)
    for stage in q.pipeline:
        found = found if _count_ok(stage, len(found)) else set()
    return [s for s in spans if s.span_id in found]


def _count_ok(c: Count, n: int) -> bool:
    return _CMP[c.op](n, c.value) and n > 0


# -- what the store can narrow ------------------------------------------------


def _conjuncts(e: FieldExpr) -> list[FieldExpr]:
    if isinstance(e, Binary) and e.op == "&&":
        return _conjuncts(e.lhs) + _conjuncts(e.rhs)
    return [e]


def _literal_text(v: Static) -> str | None:
    if v.kind == "string":
        return str(v.value)
    if v.kind in ("int", "float"):
        return repr(v.value) if v.kind == "float" else str(v.value)
    if v.kind == "bool":
        return "true" if v.value else "false"
    return None


_FLIP = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "=": "=", "!=": "!="}
_STATUS_CODE = {"error": STATUS_ERROR, "ok": STATUS_OK, "unset": STATUS_UNSET}


def _narrow(f: SpanFilter, c: FieldExpr) -> SpanFilter:
    """``f`` with the one condition ``c`` added where the columns can hold it (else ``f`` unchanged)."""
    if not isinstance(c, Binary) or c.op in ("&&", "||", "=~", "!~"):
        return f
    lhs, op, rhs = c.lhs, c.op, c.rhs
    if isinstance(lhs, Static) and not isinstance(rhs, Static):
        lhs, rhs, op = rhs, lhs, _FLIP[op]
    if not isinstance(rhs, Static) or rhs.kind == "nil":
        return f
    if isinstance(lhs, Attribute):
        if lhs.scope == "resource" and lhs.name == "service.name" and op == "=" and rhs.kind == "string":
            return replace(f, service=str(rhs.value))
        if lhs.scope == "resource":  # the store's attribute test reads the span's value first
            return f
        text = _literal_text(rhs)
        numeric = rhs.kind in ("int", "float")
        if text is None or op == "!=" or (op not in ("=",) and not numeric) or any(c in lhs.name for c in '"\\'):
            return f  # the exact check alone handles it (a JSON path cannot name such a key)
        return replace(f, attrs=(*f.attrs, AttrFilter(lhs.name, op, text)))
    if isinstance(lhs, Intrinsic):
        if lhs.name == "name" and op == "=" and rhs.kind == "string":
            return replace(f, name=str(rhs.value))
        if lhs.name == "status" and op == "=" and rhs.kind == "status":
            return replace(f, status=_STATUS_CODE[rhs.value])
        if lhs.name == "duration" and rhs.kind == "duration":
            if op in (">", ">="):
                return replace(f, min_duration_ns=max(f.min_duration_ns or 0, int(rhs.value)))
            if op in ("<", "<="):
                cap = int(rhs.value)
                return replace(f, max_duration_ns=cap if f.max_duration_ns is None else min(cap, f.max_duration_ns))
    return f


def _weight(f: SpanFilter) -> int:
    return (bool(f.service) + bool(f.name) + (f.status is not None) + len(f.attrs)
            + (f.min_duration_ns is not None) + (f.max_duration_ns is not None))


_MAX_ALTERNATIVES = 8


def candidate_filters(e: SpansetExpr, base: SpanFilter) -> list[list[SpanFilter]]:
    """Alternatives of filters: every matching trace has, for some alternative, a span matching each
    of its filters (``||`` adds alternatives; ``&&`` and the structural operators need both sides)."""
    if isinstance(e, SpansetFilter):
        f = base
        if e.expr is not None:
            for c in _conjuncts(e.expr):
                f = _narrow(f, c)
        return [[f]]
    lhs, rhs = candidate_filters(e.lhs, base), candidate_filters(e.rhs, base)
    if e.op == "||":
        return lhs + rhs
    if len(lhs) * len(rhs) <= _MAX_ALTERNATIVES:
        return [_useful(a + b) for a in lhs for b in rhs]
    # too many combinations: either side alone is still necessary; keep the more selective one
    return max((lhs, rhs), key=lambda alts: min(_weight(f) for alt in alts for f in alt))


def _useful(filters: list[SpanFilter]) -> list[SpanFilter]:
    """Drop filters that narrow nothing beyond the time range, unless nothing else is left."""
    kept = [f for f in dict.fromkeys(filters) if _weight(f)]
    return kept or filters[:1]


def referenced_attributes(e: SpansetExpr | FieldExpr | None) -> list[Attribute]:
    """Attributes a query names, in order (shown with the matched spans, as Tempo does)."""
    out: list[Attribute] = []
    if isinstance(e, SpansetOp | Binary):
        out += referenced_attributes(e.lhs) + referenced_attributes(e.rhs)
    elif isinstance(e, SpansetFilter | Not):
        out += referenced_attributes(e.expr)
    elif isinstance(e, Attribute):
        out.append(e)
    return list(dict.fromkeys(out))

