"""A span per mesh hop into the trace store, as an Istio sidecar reports one to Zipkin.

The proxy continues the caller's trace (W3C ``traceparent``, else B3) or
starts one, and forwards both header forms with the hop's new span id
(``traffic.http``). A hop is recorded when the trace is sampled: the
caller's decision when it sent one (``traceparent`` flags, ``x-b3-sampled``),
else ``sampling`` (Istio's default is 1 %). The span is a CLIENT span of
the calling workload (``<canonical service>.<namespace>``, as Istio names
the reporting proxy) with the destination as its remote service, so the
trace store's dependency graph draws the service map; its attributes are
the ones Istio's spans carry (``http.method``, ``http.url``,
``http.status_code``, ``response_flags``, ``upstream_cluster``,
``guid:x-request-id``...).

Spans are buffered column-wise and committed every ``interval_s``; the
buffer is bounded (``max_buffered``; past it spans are dropped and
counted), so a slow store never grows memory.
"""

from __future__ import annotations

import json
import random
from typing import Any

from pitwall.core.tasks import Flusher, Supervisor
from pitwall.traces import STATUS_ERROR, STATUS_UNSET, SpanAppender, SpanColumns, tkey_of

__all__ = ["MeshTracer"]

_KIND_CLIENT = 3


class MeshTracer(Flusher):
    """Collects hop spans and commits them to the trace store (a Component)."""

    name = "mesh-tracer"

    def __init__(self, appender: SpanAppender, *, tenant: str = "default", sampling: float = 0.01,
                 interval_s: float = 1.0, max_buffered: int = 50_000) -> None:
        self.appender = appender
        self.tenant = tenant
        self.sampling = sampling
        self.interval_s = interval_s
        self.max_buffered = max_buffered
        self.dropped = 0
        self.written = 0
        self.tasks = Supervisor("mesh-tracer")
        self._cols = SpanColumns()

    def sample_new(self) -> bool:
        """Whether a trace this hop starts is sampled."""
        return self.sampling >= 1.0 or random.random() < self.sampling

    def record(self, *, trace_id: str, span_id: str, parent_id: str, service: str, remote: str, name: str,
               start_ns: int, duration_ns: int, status: int, attributes: dict[str, Any]) -> None:
        c = self._cols
        if len(c) >= self.max_buffered:
            self.dropped += 1
            return
        c.tkey.append(tkey_of(trace_id))
        c.trace_id.append(trace_id)
        c.span_id.append(span_id)
        c.parent_id.append(parent_id)
        c.service.append(service)
        c.name.append(name)
        c.kind.append(_KIND_CLIENT)
        c.start_ns.append(start_ns)
        c.duration_ns.append(duration_ns)
        c.status_code.append(STATUS_ERROR if status >= 500 or status == 0 else STATUS_UNSET)
        c.status_message.append("")
        c.remote_service.append(remote)
        c.flags.append(1)
        c.attributes.append(_dumps(attributes))
        c.resource.append(_dumps({"service.name": service}))
        c.scope.append("{}")
        c.events.append("[]")
        c.links.append("[]")

    async def flush(self) -> int:
        cols, self._cols = self._cols, SpanColumns()
        if not len(cols):
            return 0
        fut, result, _ = self.appender.commit(self.tenant, cols.to_table(self.tenant))
        await fut
        self.written += result.accepted
        return result.accepted



def _dumps(d: dict[str, Any]) -> str:
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)
