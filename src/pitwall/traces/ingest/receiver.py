"""The ingest path both span protocols share: read body, decode, commit, count span metrics."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from pitwall.core.errors import BadData
from pitwall.core.limits import InflightBudget
from pitwall.storage.traces_store import AppendResult, TraceStore
from pitwall.traces.errors import BodyTooLarge
from pitwall.traces.ingest.common import IngestLimits
from pitwall.traces.model import SpanArrays, SpanColumns

Decoder = Callable[[bytes, str, IngestLimits], SpanColumns | SpanArrays]

# Below this many body bytes decoding stays on the event loop: a thread hop costs more.
_INLINE_DECODE_BYTES = 64 << 10


@dataclass
class SpanReceiver:
    """Acknowledges a request only once its spans are in the fsynced WAL."""

    store: TraceStore
    limits: IngestLimits
    inflight: InflightBudget
    max_request_bytes: int
    max_decompressed_bytes: int

    async def read_body(self, request: Request) -> bytes:
        """The request body, size-checked before and after gunzip."""
        limit = self.max_request_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        if request.headers.get("content-encoding", "").strip().lower() == "gzip":
            body = self._gunzip(body)
        return body

    def _gunzip(self, body: bytes) -> bytes:
        limit = self.max_decompressed_bytes
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = d.decompress(body, limit + 1)
        except zlib.error as e:
            raise BadData(f"invalid gzip body: {e}") from e
        if len(out) > limit:
            raise BodyTooLarge(f"decompressed body exceeds the limit of {limit} bytes")
        return out

    async def receive(self, tenant: str, body: bytes, media: str, decode: Decoder) -> AppendResult:
        """Decode, validate, store durably; raises (storing nothing) on any invalid span."""
        with self.inflight.reserve(len(body)):
            if len(body) > _INLINE_DECODE_BYTES:
                cols = await run_in_threadpool(decode, body, media, self.limits)
            else:
                cols = decode(body, media, self.limits)
            if not len(cols):
                return AppendResult(0)
            # The store counts the kept spans into span metrics (its Derived observer).
            fut, result, _kept = self.store.commit(tenant, cols.to_table(tenant))
            await fut
            return result
