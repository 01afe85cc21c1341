"""The ``incidents:`` section of pitwall.yaml: the people, schedules, policies and services to start with.

Objects are written into the state store at start and on reload (replacing
those with the same id); the REST API under ``/pagerduty`` edits them
afterwards. An object configured by name only gets a stable id derived from
it, so references may use either the id or the name.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pitwall.core.durations import DurationMs
from pitwall.incidents.model import EscalationPolicy, Schedule, Service, User

__all__ = ["IncidentsSettings"]


class IncidentsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[User] = Field(default_factory=list)
    schedules: list[Schedule] = Field(default_factory=list)
    escalation_policies: list[EscalationPolicy] = Field(default_factory=list)
    services: list[Service] = Field(default_factory=list)
    events_per_minute: int = Field(120, gt=0, description="Events API v2 events accepted per routing key and "
                                   "minute (PagerDuty's limit); more are answered 429")
    tick_interval: DurationMs = Field(1_000, gt=0, description="how often escalations and timeouts are checked")
    external_url: str = Field("", description="base URL in notifications; default http://<listen>")

    @model_validator(mode="after")
    def _references(self) -> IncidentsSettings:
        """Resolve names to ids and refuse references to nothing, naming the object that holds them."""
        users = {u.id: u for u in self.users} | {u.email: u for u in self.users} | {u.name: u for u in self.users}
        scheds = {s.id: s for s in self.schedules} | {s.name: s for s in self.schedules}
        pols = {p.id: p for p in self.escalation_policies} | {p.name: p for p in self.escalation_policies}
        for s in self.schedules:
            for layer in s.schedule_layers:
                for i, u in enumerate(layer.users):
                    if u not in users:
                        raise ValueError(f"schedules[{s.name}].{layer.name}: unknown user {u!r}")
                    layer.users[i] = users[u].id
        for p in self.escalation_policies:
            for r in p.escalation_rules:
                for t in r.targets:
                    table = users if t.kind == "user" else scheds
                    if t.id not in table:
                        raise ValueError(f"escalation_policies[{p.name}]: unknown {t.kind} {t.id!r}")
                    t.id = table[t.id].id
        keys: dict[str, str] = {}
        for svc in self.services:
            if svc.escalation_policy:
                if svc.escalation_policy not in pols:
                    raise ValueError(f"services[{svc.name}]: unknown escalation policy {svc.escalation_policy!r}")
                svc.escalation_policy = pols[svc.escalation_policy].id
            for k in svc.integration_keys:
                if k in keys:
                    raise ValueError(f"services[{svc.name}]: integration key {k[:6]}... is also {keys[k]}'s")
                keys[k] = svc.name
        return self
