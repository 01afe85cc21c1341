"""Settings of the traces pillar (the ``traces:`` section of the config file)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pitwall.core.durations import DurationMs

# The OpenTelemetry spanmetrics connector's default histogram buckets, in ms.
DEFAULT_BUCKETS_MS = [2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10000, 15000]


class SpanMetricsSettings(BaseModel):
    """RED metrics derived from every span (the spanmetrics connector's job)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    flush_interval: DurationMs = Field(15_000, gt=0, description="how often cumulative values are appended")
    buckets_ms: list[float] = Field(default_factory=lambda: [float(b) for b in DEFAULT_BUCKETS_MS])
    max_series: int = Field(50_000, gt=0, description="distinct (service, span, kind, status) combinations")

    @model_validator(mode="after")
    def _sorted_buckets(self) -> SpanMetricsSettings:
        if self.buckets_ms != sorted(set(self.buckets_ms)):
            raise ValueError("buckets_ms must be strictly increasing")
        return self


class TracesSettings(BaseModel):
    """Storage, limits and query defaults of the traces pillar."""

    model_config = ConfigDict(extra="forbid")

    retention: DurationMs = Field(7 * 86_400_000, description="how long spans are kept, e.g. 7d; 0 keeps them")
    block_duration: DurationMs = Field(2 * 3_600_000, gt=0)
    head_max_spans: int = Field(200_000, gt=0, description="spans kept in memory before a flush")
    head_max_age: DurationMs = Field(5 * 60_000, gt=0)
    max_spans_per_request: int = Field(50_000, gt=0)
    max_attributes_per_span: int = Field(128, gt=0)
    max_attribute_value_length: int = Field(16_384, gt=0)
    max_events_per_span: int = Field(1_000, gt=0)
    max_spans_per_trace: int = Field(100_000, gt=0)
    default_lookback: DurationMs = Field(86_400_000, gt=0, description="Zipkin's QUERY_LOOKBACK")
    max_search_results: int = Field(1_000, gt=0)
    autocomplete_keys: list[str] = Field(
        default_factory=lambda: ["http.method", "http.status_code", "deployment.environment"]
    )
    spanmetrics: SpanMetricsSettings = Field(default_factory=SpanMetricsSettings)

    @model_validator(mode="after")
    def _retention_covers_block(self) -> TracesSettings:
        if self.retention and self.retention < self.block_duration:
            raise ValueError("retention must be at least the block duration")
        return self
