"""Settings of the web UI (``ui:`` in the config file, ``PITWALL_UI__*`` in the environment)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class UISettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="serve the web UI at /")
    dashboards_dir: Path | None = Field(
        None, description="folder of dashboards (pitwall YAML or Grafana JSON) provisioned and re-read on change"
    )
    default_range: str = Field("1h", pattern=r"^\d+[smhdw]$", description="time range of a page opened without one")
