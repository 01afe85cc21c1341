"""The service dependency graph: caller -> callee edges derived from spans.

Three sources of edges, as zipkin-dependencies finds them:

1. a span whose parent span belongs to another service (parent service ->
   child service), which covers OpenTelemetry's client/server span pairs;
2. Zipkin's shared spans: a CLIENT and a SERVER half with the same span id
   in different services;
3. a CLIENT or PRODUCER span that names a remote service (``peer.service``,
   Zipkin's remote endpoint) which reported no span of its own.

Each call is counted once per (trace, callee span) even when two sources see
it; it is an error when the callee span's status is ERROR (for source 3,
the caller's).
"""

from __future__ import annotations

import duckdb

from pitwall.traces.model import DependencyLink

_SQL = """
WITH s AS (
  SELECT trace_id, span_id, parent_id, service, kind, status_code, remote_service
  FROM {rel} WHERE tenant = ? AND start_ns BETWEEN ? AND ?
),
edges AS (
  SELECT c.trace_id, c.span_id AS k, p.service AS parent, c.service AS child, c.status_code = 2 AS err
  FROM s c JOIN s p ON c.trace_id = p.trace_id AND c.parent_id = p.span_id
  WHERE c.service <> p.service AND c.span_id <> p.span_id
  UNION ALL
  SELECT sv.trace_id, sv.span_id, cl.service, sv.service, sv.status_code = 2
  FROM s cl JOIN s sv ON cl.trace_id = sv.trace_id AND cl.span_id = sv.span_id
  WHERE cl.kind = 3 AND sv.kind = 2 AND cl.service <> sv.service
  UNION ALL
  SELECT cl.trace_id, cl.span_id || ':remote', cl.service, cl.remote_service, cl.status_code = 2
  FROM s cl
  WHERE cl.kind IN (3, 4) AND cl.remote_service <> '' AND cl.remote_service <> cl.service
    AND NOT EXISTS (
      SELECT 1 FROM s x WHERE x.trace_id = cl.trace_id AND x.service <> cl.service
        AND (x.parent_id = cl.span_id OR (x.span_id = cl.span_id AND x.kind = 2)))
)
SELECT parent, child, count(*) AS calls, count(*) FILTER (WHERE err) AS errors
FROM (SELECT DISTINCT trace_id, k, parent, child, err FROM edges)
GROUP BY parent, child ORDER BY parent, child
"""


def dependency_links(
    cur: duckdb.DuckDBPyConnection, relation: str, tenant: str, start_ns: int, end_ns: int
) -> list[DependencyLink]:
    """Edges between services of spans that started in [start_ns, end_ns]."""
    rows = cur.execute(_SQL.format(rel=relation), [tenant, start_ns, end_ns]).fetchall()
    return [DependencyLink(p, c, int(n), int(e)) for p, c, n, e in rows]
