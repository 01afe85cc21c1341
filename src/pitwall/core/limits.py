"""Ingest limits shared by every pillar, and an in-flight byte budget."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict, Field

from pitwall.core.errors import Overloaded


class LimitsSettings(BaseModel):
    """Per-request and per-tenant limits; every one answers with a clear error."""

    model_config = ConfigDict(extra="forbid")

    max_request_bytes: int = Field(32 << 20, gt=0, description="compressed request body")
    max_decompressed_bytes: int = Field(128 << 20, gt=0)
    max_series_per_request: int = Field(100_000, gt=0)
    max_samples_per_request: int = Field(2_000_000, gt=0)
    max_labels_per_series: int = Field(64, gt=0)
    max_label_name_length: int = Field(1024, gt=0)
    max_label_value_length: int = Field(4096, gt=0)
    max_series_per_tenant: int = Field(2_000_000, gt=0)
    max_inflight_bytes: int = Field(256 << 20, gt=0, description="bodies being processed at once")


class InflightBudget:
    """Bounds the bytes of request bodies held at once; a request over it gets 429 with Retry-After.

    Each request holds a ``Reservation``: taken before its body is read (the
    declared Content-Length, or step by step as a chunked body streams in),
    grown by the decoded size when it decompresses, released once the request
    is handled. A request may go over the budget only when it is alone, so a
    body within ``max_request_bytes`` always goes through on an idle server.
    Thread-safe: decoding, and so growing, runs in worker threads.
    """

    def __init__(self, max_bytes: int, retry_after: float = 1.0) -> None:
        self.max_bytes = max_bytes
        self.retry_after = retry_after
        self.used = 0
        self._lock = threading.Lock()

    def reservation(self) -> Reservation:
        """An empty reservation; ``grow`` it before holding bytes, ``release`` it when done."""
        return Reservation(self)

    @contextlib.contextmanager
    def reserve(self, n: int) -> Iterator[Reservation]:
        """Hold ``n`` bytes for the block."""
        r = self.reservation()
        try:
            r.grow(n)
            yield r
        finally:
            r.release()


class Reservation:
    """One request's share of an ``InflightBudget``."""

    def __init__(self, budget: InflightBudget) -> None:
        self.budget = budget
        self.held = 0

    def grow(self, n: int) -> None:
        """Hold ``n`` more bytes, or raise ``Overloaded`` (429) when others hold the rest of the budget."""
        b = self.budget
        with b._lock:
            others = b.used - self.held
            if others > 0 and b.used + n > b.max_bytes:
                raise Overloaded(
                    f"too many bytes in flight ({b.used} of {b.max_bytes}); retry later", retry_after=b.retry_after
                )
            b.used += n
            self.held += n

    def release(self) -> None:
        b = self.budget
        with b._lock:
            b.used -= self.held
            self.held = 0
