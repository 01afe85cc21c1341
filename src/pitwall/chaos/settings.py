"""The ``chaos:`` section of pitwall.yaml: Chaos Monkey's global settings, named as in ``chaosmonkey.toml``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ChaosSettings", "MonkeySettings"]


class MonkeySettings(BaseModel):
    """``chaos.monkey``: the ``[chaosmonkey]`` section of Chaos Monkey's config, with its defaults.

    Apps opt in one by one (the ``chaosmonkey.pitwall.dev/config`` annotation
    of a Deployment, in Spinnaker's fields); nothing is terminated unless
    ``enabled`` and ``schedule_enabled`` are on and ``leashed`` is off.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="if false, nothing is terminated")
    leashed: bool = Field(True, description="if true, terminations are only simulated (recorded, not done)")
    schedule_enabled: bool = Field(False, description="if true, a schedule of terminations is made each weekday")
    accounts: list[str] = Field(default_factory=list, description="namespaces Chaos Monkey may act in (empty: all)")
    start_hour: int = Field(9, ge=0, le=23, description="hour of the day terminations start")
    end_hour: int = Field(15, ge=1, le=24, description="hour of the day terminations stop")
    time_zone: str = Field("America/Los_Angeles", description="tz database name, UTC or Local")
    max_apps: int = Field(2147483647, ge=0, description="most apps terminations are scheduled for in a day")

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from pitwall.chaos.monkey import zone

        zone(v)  # raises ValueError naming the zone
        return v


class ChaosSettings(BaseModel):
    """``chaos``: Chaos Monkey (``monkey``); Chaos Mesh objects need no settings."""

    model_config = ConfigDict(extra="forbid")

    monkey: MonkeySettings = Field(default_factory=MonkeySettings)
