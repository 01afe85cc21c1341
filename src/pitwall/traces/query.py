"""The traces pillar's query interface: trace by id, search, dependencies.

``TraceQuery`` reads only through the store's ``traces`` (index lookup) and
``relation`` (a SQL relation over the blocks of a time range); the Zipkin
API, the native API and the CLI (over HTTP) all use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pitwall.traces.dependencies import dependency_links
from pitwall.traces.errors import BadQuery, TraceNotFound
from pitwall.traces.model import (
    DependencyLink,
    SpanRow,
    TraceSummary,
    dumps,
    normalize_trace_id,
    rows_of,
    summarize,
    tkey_of,
)
from pitwall.traces.store import SpanSource

__all__ = ["AttrFilter", "SpanFilter", "TraceQuery", "parse_annotation_query", "parse_attr_filter"]

_OPS = (">=", "<=", "!=", "=", ">", "<")
_NUMERIC = {">", ">=", "<", "<="}


@dataclass(frozen=True)
class AttrFilter:
    """``key op value`` on span (or resource) attributes; ordering ops compare numerically."""

    key: str
    op: str
    value: str


@dataclass(frozen=True)
class SpanFilter:
    """What one span of a trace must match for the trace to be found."""

    start_ns: int
    end_ns: int
    service: str = ""
    name: str = ""
    remote_service: str = ""
    attrs: tuple[AttrFilter, ...] = ()
    words: tuple[str, ...] = ()  # an event name or an attribute key
    status: int | None = None
    min_duration_ns: int | None = None
    max_duration_ns: int | None = None


def parse_attr_filter(text: str) -> AttrFilter:
    """``http.method=GET``, ``http.status_code>=500``, ``retries!=0`` ..."""
    m = re.match(r"^\s*([^=!<>\s]+)\s*(>=|<=|!=|=|>|<)\s*(.*?)\s*$", text)
    if not m or '"' in m.group(1):
        raise BadQuery(f"invalid attribute filter {text[:100]!r}: expected KEY=VALUE, KEY!=VALUE or "
                       "KEY>N, KEY>=N, KEY<N, KEY<=N")
    key, op, value = m.groups()
    if op in _NUMERIC:
        try:
            float(value)
        except ValueError:
            raise BadQuery(f"invalid attribute filter {text[:100]!r}: {op} needs a number") from None
    return AttrFilter(key, op, value)


def parse_annotation_query(text: str) -> tuple[tuple[AttrFilter, ...], tuple[str, ...]]:
    """Zipkin's ``annotationQuery``: terms joined by ``and``; ``k=v`` is a tag, a word an annotation or tag key."""
    attrs: list[AttrFilter] = []
    words: list[str] = []
    for term in re.split(r"\s+and\s+", text.strip()):
        term = term.strip()
        if not term:
            continue
        if "=" in term:
            k, v = term.split("=", 1)
            if not k.strip() or '"' in k:
                raise BadQuery(f"invalid annotationQuery term {term[:100]!r}")
            attrs.append(AttrFilter(k.strip(), "=", v.strip()))
        else:
            if '"' in term:
                raise BadQuery(f"invalid annotationQuery term {term[:100]!r}")
            words.append(term)
    return tuple(attrs), tuple(words)


def _needles(a: AttrFilter) -> list[list[str]]:
    """Substrings, one of each list, that the stored JSON must hold for ``a`` to match."""
    if a.op == "!=":
        return []  # matches spans without the key too
    key = dumps(a.key) + ":"
    if a.op != "=":
        return [[key]]
    # json_extract_string gives a string as is and an integer or boolean as its JSON text; other
    # values (floats, arrays, objects) may be written differently: only the key is then sure
    if re.fullmatch(r"-?\d+(\.\d*)?([eE][-+]?\d+)?|[\[{].*", a.value, re.S) and not re.fullmatch(r"-?\d+", a.value):
        return [[key]]
    literal = a.value if re.fullmatch(r"-?\d+|true|false", a.value) else None
    return [[key + dumps(a.value), *([key + literal] if literal is not None else [])]]


@dataclass(frozen=True)
class _Where:
    columns: str  # conditions on plain columns
    columns_params: list[Any]
    json: str  # conditions that read the JSON columns ("" if none)
    json_params: list[Any]
    narrowed: bool  # the column conditions go beyond tenant and time range
    # What a block's attribute index answers: one condition on its rows per attribute filter ...
    index: list[tuple[str, list[Any]]]
    # ... and the JSON conditions it cannot (``!=``, words, keys no JSON path names)
    rest: str
    rest_params: list[Any]


def _index_cond(a: AttrFilter) -> tuple[str, list[Any]] | None:
    """The attribute index rows (k, v, n) a span must have to match ``a``; None when only the scan can
    tell (``!=`` also matches spans without the key; a key with a quote or backslash is not indexed)."""
    if a.op == "!=" or '"' in a.key or "\\" in a.key:
        return None
    if a.op in _NUMERIC:  # the scan's comparison, on each distinct stretch's value
        return f"k = ? AND TRY_CAST(v AS DOUBLE) {a.op} ?", [a.key, float(a.value)]
    return "k = ? AND v = ?", [a.key, a.value]


def _where(store: SpanSource, tenant: str, f: SpanFilter) -> _Where | None:
    """SQL conditions and parameters for ``f``; None when no span can match.

    Service, span and remote service names match case-insensitively, as Zipkin's
    query API does: the store's catalog turns a name into its stored spellings,
    so the filter stays an exact comparison on the column.
    """
    conds = ["tenant = ?", "start_ns BETWEEN ? AND ?"]
    params: list[Any] = [tenant, f.start_ns, f.end_ns]
    for col, value in (("service", f.service), ("name", f.name), ("remote_service", f.remote_service)):
        if not value:
            continue
        spellings = store.spellings(tenant, col, value)
        if spellings is None:
            conds.append(f"lower({col}) = ?")
            params.append(value.lower())
        elif not spellings:
            return None
        else:
            conds.append(f"{col} IN ({', '.join('?' * len(spellings))})")
            params += spellings
    if f.status is not None:
        conds.append("status_code = ?")
        params.append(f.status)
    if f.min_duration_ns is not None:
        conds.append("duration_ns >= ?")
        params.append(f.min_duration_ns)
    if f.max_duration_ns is not None:
        conds.append("duration_ns <= ?")
        params.append(f.max_duration_ns)
    narrowed = len(conds) > 2
    cols_params, params = params, []
    cols, conds = conds, []
    index: list[tuple[str, list[Any]]] = []
    rest: list[str] = []
    rest_params: list[Any] = []
    for a in f.attrs:
        n_conds, n_params = len(conds), len(params)
        path = f'$."{a.key}"'
        # Substring tests on the canonical JSON first: they reject most rows without parsing JSON.
        for needles in _needles(a):
            conds.append("(" + " OR ".join(["contains(attributes, ?)", "contains(resource, ?)"] * len(needles))
                         + ")")
            params += [n for n in needles for _ in (0, 1)]
        val = "coalesce(json_extract_string(attributes, ?), json_extract_string(resource, ?))"
        params += [path, path]
        if a.op in _NUMERIC:
            conds.append(f"TRY_CAST({val} AS DOUBLE) {a.op} ?")
            params.append(float(a.value))
        elif a.op == "=":
            conds.append(f"{val} = ?")
            params.append(a.value)
        else:
            conds.append(f"{val} IS DISTINCT FROM ?")
            params.append(a.value)
        got = _index_cond(a)
        if got is not None:
            index.append(got)
        else:
            rest += conds[n_conds:]
            rest_params += params[n_params:]
    for w in f.words:
        if w == "error":  # Zipkin's error tag is the span's ERROR status here
            cols.append("status_code = 2")
            narrowed = True
            continue
        word = "(json_exists(attributes, ?) OR coalesce(list_contains(" \
               "json_extract_string(NULLIF(events, ''), '$[*].name'), ?), false))"
        conds.append(word)
        rest.append(word)
        params += [f'$."{w}"', w]
        rest_params += [f'$."{w}"', w]
    return _Where(" AND ".join(cols), cols_params, " AND ".join(conds), params, narrowed, index,
                  " AND ".join(rest), rest_params)


def _scan_sql(got: _Where, rel: str, words: bool) -> tuple[str, list[Any]]:
    """(trace_id, start_ns) of the matching spans of ``rel``, read in full (the head, unindexed blocks)."""
    if got.json and got.narrowed:
        # Column filters first, JSON only on the spans they keep: DuckDB would otherwise
        # evaluate the JSON conditions on every span of the range.
        extra = ", events" if words else ""
        return (f"WITH c AS MATERIALIZED (SELECT trace_id, start_ns, attributes, resource{extra} "
                f"FROM {rel} WHERE {got.columns}) SELECT trace_id, start_ns FROM c WHERE {got.json}",
                [*got.columns_params, *got.json_params])
    return (f"SELECT trace_id, start_ns FROM {rel} WHERE {got.columns}{' AND ' + got.json if got.json else ''}",
            [*got.columns_params, *got.json_params])


def _indexed_sql(got: _Where, table: str, attrs: str) -> tuple[str, list[Any]]:
    """(trace_id, start_ns) of the matching spans of an indexed block: the spans (seq) every
    attribute condition's index rows name, then the column and remaining JSON conditions."""
    seqs = " INTERSECT ".join(f"SELECT unnest(range(lo, lo + cnt)) FROM {attrs} WHERE {cond}"
                              for cond, _ in got.index)
    params = [p for _, ps in got.index for p in ps]
    sql = (f"SELECT trace_id, start_ns FROM {table} WHERE seq IN ({seqs}) AND {got.columns}"
           f"{' AND ' + got.rest if got.rest else ''}")
    return sql, [*params, *got.columns_params, *got.rest_params]


@dataclass
class TraceQuery:
    """Trace lookup and search over one ``SpanSource`` (the DuckDB ``TraceStore`` in production)."""

    store: SpanSource
    max_results: int = 1000

    def trace(self, tenant: str, trace_id: str) -> list[SpanRow]:
        """The spans of one trace (16 or 32 hex digits), sorted by start; TraceNotFound if none."""
        try:
            tid = normalize_trace_id(trace_id)
        except ValueError as e:
            raise BadQuery(str(e)) from None
        got = self.traces(tenant, [tid])
        if not got:
            raise TraceNotFound(f"trace {trace_id} not found")
        return got[0]

    def traces(self, tenant: str, trace_ids: list[str]) -> list[list[SpanRow]]:
        """Spans of each found trace, in the order asked; unknown ids are left out.

        A 64-bit id also finds a 128-bit trace whose low half it is
        (Zipkin's non-strict trace id lookup).
        """
        order = list(dict.fromkeys(normalize_trace_id(t) for t in trace_ids))
        by_id: dict[str, list[SpanRow]] = {}
        for r in rows_of(self.store.traces(tenant, [tkey_of(t) for t in order])):
            by_id.setdefault(r.trace_id, []).append(r)
        out: list[list[SpanRow]] = []
        seen: set[str] = set()
        for t in order:
            short = t.startswith("0" * 16)
            for tid in [t] if t in by_id else [i for i in by_id if short and i[16:] == t[16:]]:
                if tid not in seen:
                    seen.add(tid)
                    out.append(by_id[tid])
        return out

    def find_trace_ids(self, tenant: str, f: SpanFilter, limit: int) -> list[str]:
        """Ids of traces with a span matching ``f``, newest first."""
        limit = min(max(limit, 1), self.max_results)
        got = _where(self.store, tenant, f)
        if got is None:
            return []
        with self.store.search_relations(f.start_ns, f.end_ns) as (cur, rel, indexed):
            sql, params = _scan_sql(got, rel, bool(f.words))
            if got.index:
                for table, attrs in indexed:
                    part, part_params = _indexed_sql(got, table, attrs)
                    sql += f" UNION ALL {part}"
                    params += part_params
            else:
                # Nothing for an index to answer: every block is scanned alike.
                sql += "".join(f" UNION ALL SELECT trace_id, start_ns FROM {table} WHERE {got.columns}"
                               + (f" AND {got.json}" if got.json else "") for table, _ in indexed)
                params += [p for _ in indexed for p in (*got.columns_params, *got.json_params)]
            sql = f"SELECT trace_id, max(start_ns) AS t FROM ({sql}) GROUP BY trace_id ORDER BY t DESC LIMIT ?"
            try:
                rows = cur.execute(sql, [*params, limit]).fetchall()
            except Exception as e:  # duckdb errors on malformed JSON paths from user keys
                if type(e).__module__.startswith("duckdb") or type(e).__module__.startswith("_duckdb"):
                    raise BadQuery(f"invalid search: {e}") from None
                raise
        return [r[0] for r in rows]

    def find_traces(self, tenant: str, f: SpanFilter, limit: int) -> list[list[SpanRow]]:
        return self.traces(tenant, self.find_trace_ids(tenant, f, limit))

    def search(self, tenant: str, f: SpanFilter, limit: int) -> list[TraceSummary]:
        """Summaries of matching traces, newest start first."""
        found = [summarize(spans) for spans in self.find_traces(tenant, f, limit)]
        found.sort(key=lambda s: s.start_ns, reverse=True)
        return found

    def dependencies(self, tenant: str, start_ns: int, end_ns: int) -> list[DependencyLink]:
        with self.store.relation(start_ns, end_ns) as (cur, rel):
            return dependency_links(cur, rel, tenant, start_ns, end_ns)

    def operations(self, tenant: str, service: str, start_ns: int, end_ns: int) -> list[tuple[str, int]]:
        """Distinct (span name, kind) of ``service``'s spans that started in [start_ns, end_ns]."""
        spellings = self.store.spellings(tenant, "service", service)
        if spellings is not None and not spellings:
            return []
        names = spellings if spellings else [service]
        with self.store.relation(start_ns, end_ns) as (cur, rel):
            rows = cur.execute(
                f"SELECT DISTINCT name, kind FROM {rel} WHERE tenant = ? AND start_ns BETWEEN ? AND ? "
                f"AND service IN ({', '.join('?' * len(names))}) ORDER BY name, kind",
                [tenant, start_ns, end_ns, *names]).fetchall()
        return [(r[0], int(r[1])) for r in rows]

    def attribute_keys(self, tenant: str, column: str, start_ns: int, end_ns: int, limit: int = 1000) -> list[str]:
        """Distinct keys of ``column`` (``attributes`` or ``resource``) over spans in [start_ns, end_ns]."""
        if column not in ("attributes", "resource"):
            raise ValueError(column)
        with self.store.relation(start_ns, end_ns) as (cur, rel):
            rows = cur.execute(
                f"SELECT DISTINCT k FROM (SELECT unnest(json_keys(NULLIF({column}, ''))) AS k FROM {rel} "
                "WHERE tenant = ? AND start_ns BETWEEN ? AND ?) WHERE k IS NOT NULL ORDER BY k LIMIT ?",
                [tenant, start_ns, end_ns, limit]).fetchall()
        return [r[0] for r in rows]

    def attribute_values(self, tenant: str, column: str, key: str, f: SpanFilter,
                         limit: int = 1000) -> list[tuple[str, str]]:
        """Distinct (JSON type, text) of ``key`` in ``column`` over the spans matching ``f``."""
        if column not in ("attributes", "resource"):
            raise ValueError(column)
        if '"' in key or "\\" in key:  # not expressible in a JSON path
            raise BadQuery(f"invalid key {key[:100]!r}")
        rows = self._distinct(tenant, f, f"json_extract(NULLIF({column}, ''), ?)", [f'$."{key}"'], limit)
        return [(r[0], r[1]) for r in rows if r[1] is not None]

    def column_values(self, tenant: str, column: str, f: SpanFilter, limit: int = 1000) -> list[str]:
        """Distinct non-empty values of a plain column (``name``, ``service``, ``status_message``) over ``f``."""
        if column not in ("name", "service", "status_message"):
            raise ValueError(column)
        rows = self._distinct(tenant, f, f"NULLIF({column}, '')", [], limit, plain=True)
        return [r[0] for r in rows if r[0] is not None]

    def _distinct(self, tenant: str, f: SpanFilter, expr: str, params: list[Any], limit: int,
                  plain: bool = False) -> list[tuple[Any, ...]]:
        got = _where(self.store, tenant, f)
        if got is None:
            return []
        where = got.columns + (f" AND {got.json}" if got.json else "")
        shown = "v" if plain else "json_type(v), json_extract_string(v, '$')"
        with self.store.relation(f.start_ns, f.end_ns) as (cur, rel):
            rows = cur.execute(
                f"SELECT DISTINCT {shown} FROM (SELECT {expr} AS v FROM {rel} WHERE {where}) "
                f"WHERE v IS NOT NULL ORDER BY {1 if plain else 2} LIMIT ?",
                [*params, *got.columns_params, *got.json_params, limit]).fetchall()
        return [tuple(r) for r in rows]

    def tag_values(self, tenant: str, key: str, start_ns: int, end_ns: int, limit: int = 1000) -> list[str]:
        if '"' in key:
            raise BadQuery(f"invalid key {key[:100]!r}")
        with self.store.relation(start_ns, end_ns) as (cur, rel):
            rows = cur.execute(
                f"SELECT DISTINCT v FROM (SELECT json_extract_string(attributes, ?) AS v FROM {rel} "
                "WHERE tenant = ? AND start_ns BETWEEN ? AND ?) WHERE v IS NOT NULL ORDER BY v LIMIT ?",
                [f'$."{key}"', tenant, start_ns, end_ns, limit]).fetchall()
        return [r[0] for r in rows]
