"""Settings of the rules pillar and Prometheus' ``alerting:`` section (pitwall.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from pitwall.core.durations import DurationMs

__all__ = ["AlertingSettings", "AlertmanagerConfig", "RulesSettings", "StaticConfig"]



class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RulesSettings(_Strict):
    """How rules are evaluated and how their alerts are sent."""

    resend_delay: DurationMs = Field(60_000, description="minimum time between re-sends of a firing alert")
    for_grace_period: DurationMs = Field(600_000, description="minimum 'for' left after restoring state "
                                         "(Prometheus' --rules.alert.for-grace-period)")
    for_outage_tolerance: DurationMs = Field(
        3_600_000, validation_alias=AliasChoices("for_outage_tolerance", "outage_tolerance"),
        description="how far back ALERTS_FOR_STATE is read on restore (--rules.alert.for-outage-tolerance; "
                    "the older name outage_tolerance is accepted)")
    query_offset: DurationMs = Field(0, description="default query_offset of groups (global.rule_query_offset)")
    external_url: str = Field("", description="URL pitwall is reachable at, for generatorURL and templates")
    logql_rule_files: list[str] = Field(default_factory=list,
                                        description="globs of rule files in Loki's ruler format (LogQL)")


class StaticConfig(_Strict):
    targets: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)


class AlertmanagerConfig(_Strict):
    """One entry of Prometheus' ``alerting.alertmanagers`` (static targets only)."""

    static_configs: list[StaticConfig] = Field(default_factory=list)
    scheme: Literal["http", "https"] = "http"
    path_prefix: str = "/"
    timeout: DurationMs = 10_000
    api_version: Literal["v2"] = "v2"

    def urls(self) -> list[str]:
        prefix = "/" + self.path_prefix.strip("/") if self.path_prefix.strip("/") else ""
        return [f"{self.scheme}://{t}{prefix}" for sc in self.static_configs for t in sc.targets]


class AlertingSettings(_Strict):
    """Prometheus' ``alerting:`` section: where rule alerts are sent besides pitwall's own pipeline."""

    alertmanagers: list[AlertmanagerConfig] = Field(default_factory=list)
