"""The ingest path both span protocols share: decode (in a worker thread), commit, count span metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from pitwall.core.body import Body, BodyLimits
from pitwall.core.limits import InflightBudget
from pitwall.traces.ingest.common import IngestLimits
from pitwall.traces.model import AppendResult, SpanArrays, SpanColumns
from pitwall.traces.store import SpanAppender

Decoder = Callable[[bytes, str, IngestLimits], SpanColumns | SpanArrays]


@dataclass
class SpanReceiver:
    """Acknowledges a request only once its spans are in the fsynced WAL."""

    store: SpanAppender
    limits: IngestLimits
    inflight: InflightBudget
    body_limits: BodyLimits

    async def receive(self, tenant: str, body: Body, media: str, decode: Decoder) -> AppendResult:
        """Decode, validate, store durably; raises (storing nothing) on any invalid span."""
        table = await body.in_thread(self._table, tenant, body, media, decode)
        if table is None:
            return AppendResult(0)
        # The store counts the kept spans into span metrics (its Derived observer).
        fut, result, _kept = self.store.commit(tenant, table)
        await fut
        return result

    def _table(self, tenant: str, body: Body, media: str, decode: Decoder) -> pa.Table | None:
        cols = decode(body.decoded(), media, self.limits)
        return cols.to_table(tenant) if len(cols) else None
