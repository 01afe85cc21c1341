"""The ``notifications:`` section of pitwall.yaml (the Alertmanager file itself is ``alertmanager_config``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from pitwall.core.durations import DurationMs

__all__ = ["NotificationSettings"]


class NotificationSettings(BaseModel):
    """Limits and timings of the notification pipeline."""

    model_config = ConfigDict(extra="forbid")

    state_url: str | None = Field(None, description="SQLAlchemy URL of the state store; default sqlite in data_dir")
    external_url: str = Field("", description="URL shown in notifications; default http://<listen>")
    max_alerts: int = Field(100_000, gt=0, description="alerts held at once; more are refused with 429")
    max_groups: int = Field(10_000, gt=0, description="aggregation groups held at once")
    queue_max: int = Field(10_000, gt=0, description="undelivered notifications kept for retry")
    send_concurrency: int = Field(16, gt=0)
    retry_initial: DurationMs = Field(1_000, gt=0, description="first retry delay; doubles per attempt")
    retry_max: DurationMs = Field(300_000, gt=0, description="longest delay between retries")
    retry_max_age: DurationMs = Field(86_400_000, gt=0, description="give up on a notification after this long")
    data_retention: DurationMs = Field(120 * 3_600_000, gt=0,
                                       description="how long expired silences and log entries are kept")
