"""Ingest limits shared by every pillar, and an in-flight byte budget."""

from __future__ import annotations

import contextlib
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
    """Bounds the bytes of request bodies being processed; beyond it, 429."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0

    @contextlib.contextmanager
    def reserve(self, n: int) -> Iterator[None]:
        if self.used + n > self.max_bytes and self.used > 0:
            raise Overloaded(
                f"too many bytes in flight ({self.used} of {self.max_bytes}); retry later", retry_after=1.0
            )
        self.used += n
        try:
            yield
        finally:
            self.used -= n
