"""Settings of the logs pillar (``logs:`` in the config file, ``PITWALL_LOGS__*`` in the environment)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from pitwall.core.durations import parse_duration_ms

# Loki's default ``discover_service_name`` list (limits_config), in its order.
DEFAULT_SERVICE_NAME_LABELS: tuple[str, ...] = (
    "service", "app", "application", "app_name", "name", "app_kubernetes_io_name", "container",
    "container_name", "k8s_container_name", "component", "workload", "job", "k8s_job_name",
)

# Loki's validation.DefaultAllowedLevelFields, in its order (also in logs.ingest.levels).
DEFAULT_LEVEL_FIELDS: tuple[str, ...] = (
    "level", "LEVEL", "Level", "log.level", "severity", "SEVERITY", "Severity", "SeverityText",
    "lvl", "LVL", "Lvl", "severity_text", "Severity_Text", "SEVERITY_TEXT",
)


def _duration(v: Any) -> Any:
    if isinstance(v, str):
        return parse_duration_ms(v)
    return v


DurationMs = Annotated[int, BeforeValidator(_duration), Field(ge=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogLimits(_Section):
    """Per-request and per-tenant limits, named after Loki's ``limits_config`` keys where one exists."""

    max_line_size: int = Field(256 * 1024, gt=0, description="bytes; longer lines are rejected")
    max_streams_per_request: int = Field(10_000, gt=0)
    max_entries_per_request: int = Field(1_000_000, gt=0)
    max_label_names_per_series: int = Field(15, gt=0)
    max_label_name_length: int = Field(1024, gt=0)
    max_label_value_length: int = Field(2048, gt=0)
    max_structured_metadata_size: int = Field(64 * 1024, gt=0, description="bytes per entry")
    max_structured_metadata_entries: int = Field(128, gt=0)
    max_streams_per_tenant: int = Field(100_000, gt=0)
    ingestion_rate_mb: float = Field(64.0, gt=0, description="per-tenant sustained MB/s of line bytes")
    ingestion_burst_size_mb: float = Field(128.0, gt=0)
    out_of_order: Literal["window", "strict"] = Field(
        "window", description="window: accept entries up to out_of_order_window behind the stream's newest "
        "(Loki >= 2.4); strict: reject any entry older than the stream's newest (Loki < 2.4)")
    out_of_order_window: DurationMs = Field(3_600_000, description="Loki's max_chunk_age / 2")
    reject_old_samples_max_age: DurationMs = Field(7 * 86_400_000, description="0 accepts any age")
    creation_grace_period: DurationMs = Field(600_000, description="how far in the future an entry may be")
    max_query_lookback: DurationMs = Field(0, description="0: unlimited")
    max_entries_limit_per_query: int = Field(5000, gt=0)
    max_tail_connections: int = Field(32, gt=0)
    discover_service_name: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SERVICE_NAME_LABELS),
        description="a stream without service_name gets the first of these labels' values as service_name "
        "(unknown_service when none is set); an empty list turns this off")
    discover_log_levels: bool = Field(
        True, description="add Loki's detected_level structured metadata to every entry at ingest")
    log_level_fields: list[str] = Field(
        default_factory=lambda: list(DEFAULT_LEVEL_FIELDS),
        description="stream labels, metadata keys and line fields that name an entry's level, in precedence order")
    log_level_from_json_max_depth: int = Field(
        2, description="JSON nesting searched for a level field; 0 or less: unlimited")


class SyslogSettings(_Section):
    enabled: bool = False
    listen: str = Field("127.0.0.1:1514", description="HOST:PORT for both TCP and UDP")
    tcp: bool = True
    udp: bool = True
    max_message_bytes: int = Field(64 * 1024, gt=0)
    max_connections: int = Field(256, gt=0)
    batch_size: int = Field(1000, gt=0, description="messages per WAL commit")
    batch_wait_ms: int = Field(100, ge=0, description="longest a message waits for its batch")
    labels: dict[str, str] = Field(default_factory=lambda: {"job": "syslog"},
                                   description="static labels on every syslog stream")
    tenant: str = "default"


class ElasticsearchSettings(_Section):
    label_fields: list[str] = Field(
        default_factory=lambda: ["host", "hostname", "fromhost", "app", "service", "level"],
        description="document fields (dotted paths allowed) that become stream labels")
    timestamp_fields: list[str] = Field(
        default_factory=lambda: ["@timestamp", "timestamp", "timereported", "time"])
    labels: dict[str, str] = Field(default_factory=lambda: {"job": "elasticsearch"})


class LogsSettings(_Section):
    """The logs pillar: storage, limits and the intake listeners."""

    retention: DurationMs = Field(15 * 86_400_000, description="how long entries are kept; 0 keeps them")
    block_duration: DurationMs = Field(2 * 3_600_000, gt=0)
    head_max_bytes: int = Field(64 << 20, gt=0, description="line bytes held in memory before a flush")
    head_max_age: DurationMs = Field(5 * 60_000, gt=0)
    limits: LogLimits = Field(default_factory=LogLimits)
    syslog: SyslogSettings = Field(default_factory=SyslogSettings)
    elasticsearch: ElasticsearchSettings = Field(default_factory=ElasticsearchSettings)
    query_timeout: DurationMs = Field(120_000, gt=0)
    max_query_series: int = Field(500, gt=0, description="series one LogQL metric query may return (Loki's max_query_series)")

    @model_validator(mode="after")
    def _retention_covers_block(self) -> LogsSettings:
        if self.retention and self.retention < self.block_duration:
            raise ValueError("retention must be at least the block duration")
        return self
