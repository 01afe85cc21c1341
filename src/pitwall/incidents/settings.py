"""The ``incidents:`` section of pitwall.yaml: the people, schedules, policies and services to start with.

Objects are written into the state store at start and on reload (replacing
those with the same id); the REST API under ``/pagerduty`` edits them
afterwards. An object configured by name only gets a stable id derived from
it, so references may use either the id or the name.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from pitwall.core.durations import DurationMs
from pitwall.incidents.model import EscalationPolicy, Schedule, Service, User

__all__ = ["IncidentsSettings", "ItsmSettings", "JiraSettings", "ServiceNowSettings"]


def _secret(value: str, path: str, key: str, file_key: str) -> str:
    """The secret given inline or in a file (one of them), naming the settings key when neither or both is set."""
    if bool(value) == bool(path):
        raise ValueError(f"set exactly one of {key} and {file_key}")
    if value:
        return value
    try:
        text = Path(path).read_text().strip()
    except OSError as e:
        raise ValueError(f"{file_key}: cannot read {path}: {e.strerror}") from None
    if not text:
        raise ValueError(f"{file_key}: {path} is empty")
    return text


def _base_url(v: str) -> str:
    if not v.startswith(("http://", "https://")) or len(v) < 10:
        raise ValueError(f"must be an http:// or https:// URL, got {v[:80]!r}")
    return v.rstrip("/")


class JiraSettings(BaseModel):
    """``incidents.itsm.jira``: Jira Service Management (Cloud: email + API token; Server/DC: user + password)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="the site, e.g. https://example.atlassian.net")
    project_key: str = Field(min_length=1, max_length=64, pattern=r"^[A-Z][A-Z0-9_]*$")
    issue_type: str = Field("Incident", min_length=1)
    user: str = Field(min_length=1)
    token: str = Field("", repr=False)
    token_file: str = ""
    resolve_transition: str = Field("", description="transition name or id; empty: 'Resolve', else 'Done'")
    _secret: str = PrivateAttr("")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _base_url(v)

    @model_validator(mode="after")
    def _read_secret(self) -> JiraSettings:
        self._secret = _secret(self.token, self.token_file, "token", "token_file")
        return self

    @property
    def secret(self) -> str:
        return self._secret


class ServiceNowSettings(BaseModel):
    """``incidents.itsm.servicenow``: the Table API of a ServiceNow instance (basic auth)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="the instance, e.g. https://example.service-now.com")
    user: str = Field(min_length=1)
    password: str = Field("", repr=False)
    password_file: str = ""
    assignment_group: str = ""
    caller_id: str = ""
    close_code: str = Field("Solution provided", min_length=1, description="close_code set on resolve")
    _secret: str = PrivateAttr("")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _base_url(v)

    @model_validator(mode="after")
    def _read_secret(self) -> ServiceNowSettings:
        self._secret = _secret(self.password, self.password_file, "password", "password_file")
        return self

    @property
    def secret(self) -> str:
        return self._secret


class ItsmSettings(BaseModel):
    """``incidents.itsm``: outbound ticket sync; each system is off unless configured."""

    model_config = ConfigDict(extra="forbid")

    jira: JiraSettings | None = None
    servicenow: ServiceNowSettings | None = None
    timeout: DurationMs = Field(10_000, gt=0, description="per HTTP request")
    poll_interval: DurationMs = Field(30_000, gt=0, description="how often the sync re-reads its whole work "
                                      "list (changes are handled at once, through the state store's watch)")
    retry_initial: DurationMs = Field(2_000, gt=0, description="first retry delay; doubles per failure")
    retry_max: DurationMs = Field(300_000, gt=0, description="the longest retry delay")
    max_attempts: int = Field(10, ge=1, le=100, description="tries per step before giving up until a restart")
    max_response_bytes: int = Field(1 << 20, ge=1024, le=64 << 20)

    @property
    def enabled(self) -> bool:
        return self.jira is not None or self.servicenow is not None


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
    action_link_ttl: DurationMs = Field(86_400_000, description="how long the acknowledge/resolve links in a "
                                        "page work (1m to 30d)")
    itsm: ItsmSettings = Field(default_factory=ItsmSettings)

    @field_validator("action_link_ttl")
    @classmethod
    def _link_ttl(cls, v: int) -> int:
        if not 60_000 <= v <= 30 * 86_400_000:  # a link must outlive reading the message, not a month
            raise ValueError(f"must be between 1m and 30d, got {v / 1000:g}s")
        return v

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
