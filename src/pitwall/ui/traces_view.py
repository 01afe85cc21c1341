"""View models of the traces pages, built on the traces pillar's ``TraceQuery``.

``waterfall`` lays one trace out as rows (depth-first, children by start) with
bar offsets in percent of the trace, marks error spans and the critical path
(the chain of spans that determined the trace's end-to-end duration).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from pitwall.traces import (
    KIND_NAMES,
    STATUS_ERROR,
    STATUS_NAMES,
    DependencyLink,
    SpanFilter,
    SpanRow,
    TraceQuery,
    TraceSummary,
    display_trace_id,
)

__all__ = ["DiffRow", "SpanView", "TracesView", "Waterfall", "compare", "critical_path", "format_duration_ns",
           "waterfall"]


SERVICE_COLOURS = 12  # --svc-0 .. --svc-11 in pitwall.css

def format_duration_ns(ns: int) -> str:
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.1f}µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.2f}ms"
    return f"{ns / 1_000_000_000:.3f}s"


def _pretty(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


@dataclass
class SpanView:
    span: SpanRow
    depth: int
    offset_pct: float
    width_pct: float
    has_children: bool
    critical: bool
    error: bool
    parent_index: int | None
    index: int = 0

    @property
    def kind(self) -> str:
        return KIND_NAMES.get(self.span.kind, str(self.span.kind)).removeprefix("SPAN_KIND_").lower()

    @property
    def status(self) -> str:
        return STATUS_NAMES.get(self.span.status_code, str(self.span.status_code)).removeprefix("STATUS_CODE_")

    @property
    def duration(self) -> str:
        return format_duration_ns(self.span.duration_ns)

    @property
    def attributes(self) -> list[tuple[str, str]]:
        return sorted((k, _pretty(v)) for k, v in self.span.attributes.items())

    @property
    def resource(self) -> list[tuple[str, str]]:
        return sorted((k, _pretty(v)) for k, v in self.span.resource.items())

    @property
    def events(self) -> list[tuple[str, str, str]]:
        """(name, offset from the span's start, attributes as JSON) per event."""
        out = []
        for e in self.span.events:
            t = int(e.get("t") or e.get("timeUnixNano") or e.get("timestamp") or 0)
            offset = format_duration_ns(max(t - self.span.start_ns, 0)) if t else ""
            out.append((str(e.get("name", "")), offset, json.dumps(e.get("attributes") or {}, ensure_ascii=False)))
        return out

    @property
    def links(self) -> list[dict[str, Any]]:
        return self.span.links


@dataclass
class Waterfall:
    trace_id: str
    display_id: str
    start_ns: int
    duration_ns: int
    rows: list[SpanView]
    services: list[str]
    error_count: int
    ticks: list[tuple[float, str]] = field(default_factory=list)
    orphans: int = 0  # spans whose parent never arrived
    has_root: bool = True

    @property
    def incomplete(self) -> bool:
        return self.orphans > 0 or not self.has_root

    def colour(self, service: str) -> int:
        """The palette index of a service (stable within the trace: its place in the sorted list)."""
        return self.services.index(service) % SERVICE_COLOURS if service in self.services else 0

    @property
    def duration(self) -> str:
        return format_duration_ns(self.duration_ns)


def _children(spans: list[SpanRow]) -> tuple[list[SpanRow], dict[str, list[SpanRow]]]:
    ids = {s.span_id for s in spans}
    kids: dict[str, list[SpanRow]] = {}
    roots: list[SpanRow] = []
    for s in spans:
        if s.parent_id and s.parent_id in ids and s.parent_id != s.span_id:
            kids.setdefault(s.parent_id, []).append(s)
        else:
            roots.append(s)
    for v in kids.values():
        v.sort(key=lambda s: (s.start_ns, s.span_id))
    roots.sort(key=lambda s: (s.start_ns, s.span_id))
    return roots, kids


def critical_path(spans: list[SpanRow]) -> set[str]:
    """Span ids on the critical path: walking back from the end of each span, the last-finishing
    child that ends by the cursor is critical and the cursor moves to its start (as Jaeger does)."""
    roots, kids = _children(spans)
    if not roots:
        return set()
    root = max(roots, key=lambda s: s.end_ns)
    out: set[str] = set()
    stack = [root]
    while stack:
        span = stack.pop()
        if span.span_id in out:
            continue
        out.add(span.span_id)
        cursor = span.end_ns
        # children are cut at their parent's end (async work that outlives it does not extend it)
        for child in sorted(kids.get(span.span_id, []), key=lambda s: min(s.end_ns, span.end_ns), reverse=True):
            if min(child.end_ns, span.end_ns) <= cursor and child.start_ns < cursor:
                stack.append(child)
                cursor = child.start_ns
    return out


def waterfall(spans: list[SpanRow]) -> Waterfall:
    roots, kids = _children(spans)
    start = min(s.start_ns for s in spans)
    end = max(s.end_ns for s in spans)
    total = max(end - start, 1)
    crit = critical_path(spans)
    rows: list[SpanView] = []
    seen: set[str] = set()

    def visit(s: SpanRow, depth: int, parent: int | None) -> None:
        if s.span_id in seen:
            return
        seen.add(s.span_id)
        idx = len(rows)
        rows.append(SpanView(
            span=s, depth=depth, offset_pct=(s.start_ns - start) / total * 100,
            width_pct=max(s.duration_ns / total * 100, 0.2), has_children=bool(kids.get(s.span_id)),
            critical=s.span_id in crit, error=s.status_code == STATUS_ERROR, parent_index=parent, index=idx))
        for c in kids.get(s.span_id, []):
            visit(c, depth + 1, idx)

    for r in roots:
        visit(r, 0, None)
    ticks = [(i * 25.0, format_duration_ns(total * i // 4)) for i in range(5)]
    tid = spans[0].trace_id
    ids = {s.span_id for s in spans}
    return Waterfall(tid, display_trace_id(tid), start, end - start, rows, sorted({s.service for s in spans}),
                     sum(1 for s in spans if s.status_code == STATUS_ERROR), ticks,
                     orphans=sum(1 for s in spans if s.parent_id and s.parent_id not in ids),
                     has_root=any(not s.parent_id for s in spans))


@dataclass
class DiffRow:
    """One call path (``service · operation`` from the root down) in two traces: how often and how long."""

    path: tuple[str, ...]
    a_count: int
    b_count: int
    a_ns: int
    b_ns: int

    @property
    def depth(self) -> int:
        return len(self.path) - 1

    @property
    def change(self) -> str:
        if not self.a_count:
            return "added"
        if not self.b_count:
            return "removed"
        return "same" if self.a_count == self.b_count else ("more" if self.b_count > self.a_count else "fewer")

    @property
    def a_duration(self) -> str:
        return format_duration_ns(self.a_ns) if self.a_count else "—"

    @property
    def b_duration(self) -> str:
        return format_duration_ns(self.b_ns) if self.b_count else "—"


def _paths(spans: list[SpanRow]) -> dict[tuple[str, ...], tuple[int, int]]:
    """Spans per call path with their summed durations; a span whose parent is missing starts a path."""
    by_id = {s.span_id: s for s in spans}
    memo: dict[str, tuple[str, ...]] = {}

    def path(s: SpanRow) -> tuple[str, ...]:
        chain: list[SpanRow] = []
        cur: SpanRow | None = s
        while cur is not None and cur.span_id not in memo and cur not in chain:
            chain.append(cur)
            cur = by_id.get(cur.parent_id) if cur.parent_id else None
        base = memo.get(cur.span_id, ()) if cur is not None else ()
        for c in reversed(chain):
            base = (*base, f"{c.service} · {c.name}")
            memo[c.span_id] = base
        return memo[s.span_id]

    out: dict[tuple[str, ...], tuple[int, int]] = {}
    for s in spans:
        n, total = out.get(path(s), (0, 0))
        out[path(s)] = (n + 1, total + s.duration_ns)
    return out


def compare(a: list[SpanRow], b: list[SpanRow]) -> list[DiffRow]:
    """Jaeger's trace comparison as a table: every call path of either trace, in tree order, with its span
    count and total duration in each (paths only in B are "added", only in A "removed")."""
    pa, pb = _paths(a), _paths(b)
    return [DiffRow(p, pa.get(p, (0, 0))[0], pb.get(p, (0, 0))[0], pa.get(p, (0, 0))[1], pb.get(p, (0, 0))[1])
            for p in sorted({*pa, *pb})]


@dataclass
class TraceRowView:
    summary: TraceSummary

    @property
    def display_id(self) -> str:
        return display_trace_id(self.summary.trace_id)

    @property
    def duration(self) -> str:
        return format_duration_ns(self.summary.duration_ns)


@dataclass
class TracesView:
    """Reads of the traces pages, through ``TraceQuery``."""

    query: TraceQuery

    def services(self, tenant: str) -> list[str]:
        return self.query.store.services(tenant)

    def operations(self, tenant: str, service: str) -> list[str]:
        return self.query.store.span_names(tenant, service) if service else []

    def search(self, tenant: str, f: SpanFilter, limit: int) -> list[TraceRowView]:
        return [TraceRowView(s) for s in self.query.search(tenant, f, limit)]

    def scatter(self, tenant: str, f: SpanFilter, cap: int, slices: int = 10) -> tuple[list[TraceRowView], bool]:
        """Traces for the search page's scatter, and whether they are a sample.

        Every match when there are fewer than ``cap``; else the newest ``cap // slices`` of each of ``slices``
        equal slices of the range, so the points cover the whole range rather than its newest end.
        """
        found = self.query.search(tenant, f, cap)
        if len(found) < cap:
            return [TraceRowView(s) for s in found], False
        seen: dict[str, TraceSummary] = {}
        width = max((f.end_ns - f.start_ns) // slices, 1)
        for i in range(slices):
            lo = f.start_ns + i * width
            hi = f.end_ns if i == slices - 1 else lo + width - 1
            for s in self.query.search(tenant, replace(f, start_ns=lo, end_ns=hi), max(cap // slices, 1)):
                seen.setdefault(s.trace_id, s)  # a trace crossing a slice's edge is found twice
        return [TraceRowView(s) for s in seen.values()], True

    def trace(self, tenant: str, trace_id: str) -> Waterfall:
        return waterfall(self.query.trace(tenant, trace_id))

    def compare(self, tenant: str, a: str, b: str) -> tuple[Waterfall, Waterfall, list[DiffRow]]:
        sa, sb = self.query.trace(tenant, a), self.query.trace(tenant, b)
        return waterfall(sa), waterfall(sb), compare(sa, sb)

    def dependencies(self, tenant: str, start_ns: int, end_ns: int) -> list[DependencyLink]:
        return self.query.dependencies(tenant, start_ns, end_ns)
