"""Alertmanager's configuration file format as strict pydantic models.

Keys, defaults and load-time checks follow Alertmanager's ``config/config.go``
(the behaviour ``amtool check-config`` shows): unknown keys are rejected,
receivers must have unique names, the root route needs a receiver and no
matchers, every receiver and time interval a route names must exist, each
integration must be complete once the ``global`` defaults are applied.
Integrations pitwall cannot deliver (``opsgenie_configs``, ...) are rejected
by name rather than silently ignored. ``pitwall_incident_configs`` is pitwall's
own extension (events into its incidents capability in process); a real
Alertmanager refuses a file that uses it.

``load_config_file``/``parse_config`` raise ``ConfigError`` whose lines start
with the key path, e.g. ``receivers[0].webhook_configs[0]: one of url or
url_file must be configured``.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pitwall.alerting.notify.matchers import Matcher, MatcherError, is_valid_label_name, parse_matchers
from pitwall.alerting.notify.timeintervals import NamedTimeInterval
from pitwall.core.durations import DurationMs, format_duration_ms
from pitwall.core.errors import ConfigError
from pitwall.core.httpconfig import HTTPClientConfig, TLSConfig, http_config_problems

__all__ = [
    "SUPPORTED_INTEGRATIONS",
    "UNSUPPORTED_INTEGRATIONS",
    "AlertmanagerConfig",
    "EmailConfig",
    "HTTPConfig",
    "InhibitRuleConfig",
    "LoadedConfig",
    "PagerdutyConfig",
    "PagerdutyEventFields",
    "PitwallIncidentConfig",
    "ReceiverConfig",
    "RouteConfig",
    "SlackConfig",
    "WebhookConfig",
    "load_config_file",
    "parse_config",
]

SUPPORTED_INTEGRATIONS = ("webhook_configs", "email_configs", "slack_configs", "pagerduty_configs",
                          "pitwall_incident_configs")
UNSUPPORTED_INTEGRATIONS = ("opsgenie_configs", "wechat_configs", "pushover_configs", "victorops_configs",
                            "sns_configs", "telegram_configs", "discord_configs", "webex_configs",
                            "msteams_configs", "msteamsv2_configs", "jira_configs", "rocketchat_configs",
                            "incidentio_configs")
SECRET = "<secret>"


def _url(v: Any) -> Any:
    """Alertmanager's URL type: http(s) with a host (``<secret>`` is kept as a placeholder)."""
    if v is None or v == SECRET:
        return v
    if not isinstance(v, str):
        raise ValueError("URL must be a string")
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f'unsupported scheme "{parts.scheme}" for URL')
    if not parts.netloc:
        raise ValueError("host is required for URL")
    return v


URL = Annotated[str, BeforeValidator(_url)]


def _hostport(v: Any) -> Any:
    if v is None or v == "":
        return v
    host, sep, port = str(v).rpartition(":")
    if not sep:
        raise ValueError(f"address {v}: missing port in address")
    if not port:
        raise ValueError(f"address {v}: port cannot be empty")
    del host
    return str(v)


HostPort = Annotated[str, BeforeValidator(_hostport)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class HTTPConfig(HTTPClientConfig):
    """Prometheus' common ``http_config``, validated as Alertmanager validates it."""

    @model_validator(mode="after")
    def _valid(self) -> HTTPConfig:
        problems = http_config_problems(self)
        if problems:
            raise ValueError(problems[0][1])
        return self


class GlobalConfig(_Strict):
    resolve_timeout: DurationMs = 300_000
    http_config: HTTPConfig = Field(default_factory=HTTPConfig)
    smtp_from: str = ""
    smtp_hello: str = "localhost"
    smtp_smarthost: HostPort = ""
    smtp_auth_username: str = ""
    smtp_auth_password: str = ""
    smtp_auth_password_file: str = ""
    smtp_auth_secret: str = ""
    smtp_auth_identity: str = ""
    smtp_require_tls: bool = True
    slack_api_url: URL | None = None
    slack_api_url_file: str | None = None
    pagerduty_url: URL = "https://events.pagerduty.com/v2/enqueue"
    # Accepted so Alertmanager files load unchanged; pitwall has no integration using them.
    opsgenie_api_url: URL | None = None
    opsgenie_api_key: str | None = None
    opsgenie_api_key_file: str | None = None
    wechat_api_url: URL | None = None
    wechat_api_secret: str | None = None
    wechat_api_corp_id: str | None = None
    victorops_api_url: URL | None = None
    victorops_api_key: str | None = None
    victorops_api_key_file: str | None = None
    telegram_api_url: URL | None = None
    webex_api_url: URL | None = None

    @model_validator(mode="after")
    def _slack_once(self) -> GlobalConfig:
        if self.slack_api_url and self.slack_api_url_file:
            raise ValueError("at most one of slack_api_url & slack_api_url_file must be configured")
        return self


class WebhookConfig(_Strict):
    send_resolved: bool = True
    http_config: HTTPConfig | None = None
    url: URL | None = None
    url_file: str | None = None
    max_alerts: int = Field(0, ge=0)
    timeout: DurationMs = 0

    @model_validator(mode="after")
    def _url_once(self) -> WebhookConfig:
        if self.url is None and not self.url_file:
            raise ValueError("one of url or url_file must be configured")
        if self.url is not None and self.url_file:
            raise ValueError("at most one of url & url_file must be configured")
        return self


class EmailConfig(_Strict):
    send_resolved: bool = False
    to: str = ""
    from_: str = Field("", alias="from")
    hello: str = ""
    smarthost: HostPort = ""
    auth_username: str = ""
    auth_password: str = ""
    auth_password_file: str = ""
    auth_secret: str = ""
    auth_identity: str = ""
    headers: dict[str, str] = Field(default_factory=dict)
    html: str | None = None
    text: str | None = None
    require_tls: bool | None = None
    tls_config: TLSConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> EmailConfig:
        if not self.to:
            raise ValueError("missing to address in email config")
        seen: set[str] = set()
        for k in self.headers:
            canon = "-".join(p.capitalize() for p in k.split("-"))
            if canon in seen:
                raise ValueError(f'duplicate header "{canon}" in email config')
            seen.add(canon)
        return self


class SlackField(_Strict):
    title: str
    value: str
    short: bool | None = None


class SlackConfirm(_Strict):
    text: str
    title: str = ""
    ok_text: str = ""
    dismiss_text: str = ""


class SlackAction(_Strict):
    type: str
    text: str
    url: str = ""
    style: str = ""
    name: str = ""
    value: str = ""
    confirm: SlackConfirm | None = None

    @model_validator(mode="after")
    def _check(self) -> SlackAction:
        if not self.url and not self.name:
            raise ValueError("missing name or url in Slack action config")
        return self


class SlackConfig(_Strict):
    send_resolved: bool = False
    http_config: HTTPConfig | None = None
    api_url: URL | None = None
    api_url_file: str | None = None
    channel: str = ""
    username: str = '{{ template "slack.default.username" . }}'
    color: str = '{{ if eq .Status "firing" }}danger{{ else }}good{{ end }}'
    title: str = '{{ template "slack.default.title" . }}'
    title_link: str = '{{ template "slack.default.titlelink" . }}'
    pretext: str = '{{ template "slack.default.pretext" . }}'
    text: str = '{{ template "slack.default.text" . }}'
    fields: list[SlackField] = Field(default_factory=list)
    short_fields: bool = False
    footer: str = '{{ template "slack.default.footer" . }}'
    fallback: str = '{{ template "slack.default.fallback" . }}'
    callback_id: str = '{{ template "slack.default.callbackid" . }}'
    icon_emoji: str = '{{ template "slack.default.iconemoji" . }}'
    icon_url: str = '{{ template "slack.default.iconurl" . }}'
    image_url: str = ""
    thumb_url: str = ""
    link_names: bool = False
    mrkdwn_in: list[str] = Field(default_factory=lambda: ["fallback", "pretext", "text"])
    actions: list[SlackAction] = Field(default_factory=list)

    @model_validator(mode="after")
    def _once(self) -> SlackConfig:
        if self.api_url is not None and self.api_url_file:
            raise ValueError("at most one of api_url & api_url_file must be configured")
        return self


class PagerdutyImage(_Strict):
    src: str = ""
    alt: str = ""
    href: str = ""


class PagerdutyLink(_Strict):
    href: str = ""
    text: str = ""


_PD_DETAILS = {
    "firing": '{{ template "pagerduty.default.instances" .Alerts.Firing }}',
    "resolved": '{{ template "pagerduty.default.instances" .Alerts.Resolved }}',
    "num_firing": "{{ .Alerts.Firing | len }}",
    "num_resolved": "{{ .Alerts.Resolved | len }}",
}


class PagerdutyEventFields(_Strict):
    """The templated fields of a PagerDuty Events API v2 event, shared by ``pagerduty_configs`` and
    ``pitwall_incident_configs`` (same names, same defaults as Alertmanager's)."""

    client: str = '{{ template "pagerduty.default.client" . }}'
    client_url: str = '{{ template "pagerduty.default.clientURL" . }}'
    description: str = '{{ template "pagerduty.default.description" .}}'
    details: dict[str, str] = Field(default_factory=lambda: dict(_PD_DETAILS))
    images: list[PagerdutyImage] = Field(default_factory=list)
    links: list[PagerdutyLink] = Field(default_factory=list)
    source: str = ""
    severity: str = "error"
    class_: str = Field("", alias="class")
    component: str = ""
    group: str = ""

    @model_validator(mode="after")
    def _default_source(self) -> PagerdutyEventFields:
        if not self.source:
            self.source = self.client
        return self


class PagerdutyConfig(PagerdutyEventFields):
    send_resolved: bool = True
    http_config: HTTPConfig | None = None
    service_key: str = ""
    service_key_file: str = ""
    routing_key: str = ""
    routing_key_file: str = ""
    url: URL | None = None

    @model_validator(mode="after")
    def _check(self) -> PagerdutyConfig:
        if not (self.routing_key or self.service_key or self.routing_key_file or self.service_key_file):
            raise ValueError("missing service or routing key in PagerDuty config")
        if self.routing_key and self.routing_key_file:
            raise ValueError("at most one of routing_key & routing_key_file must be configured")
        if self.service_key and self.service_key_file:
            raise ValueError("at most one of service_key & service_key_file must be configured")
        return self


class PitwallIncidentConfig(PagerdutyEventFields):
    """pitwall's own receiver type (a real Alertmanager has none): events into pitwall's incidents in process.

    ``service`` is an incidents service's id or name, ``routing_key`` one of its integration keys (one of the
    two); whether one event goes per notification group or per alert is the service's ``alert_dedup``.
    """

    send_resolved: bool = True
    service: str = ""
    routing_key: str = ""

    @model_validator(mode="after")
    def _check(self) -> PitwallIncidentConfig:
        if not self.service and not self.routing_key:
            raise ValueError("one of service or routing_key must be configured")
        if self.service and self.routing_key:
            raise ValueError("at most one of service & routing_key must be configured")
        return self


class ReceiverConfig(_Strict):
    name: str = ""
    webhook_configs: list[WebhookConfig] = Field(default_factory=list)
    email_configs: list[EmailConfig] = Field(default_factory=list)
    slack_configs: list[SlackConfig] = Field(default_factory=list)
    pagerduty_configs: list[PagerdutyConfig] = Field(default_factory=list)
    pitwall_incident_configs: list[PitwallIncidentConfig] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in UNSUPPORTED_INTEGRATIONS:
                if data.get(key):
                    raise _KeyedError(key, "receiver type not supported by pitwall (supported: "
                                      + ", ".join(SUPPORTED_INTEGRATIONS) + ")")
        return data

    @model_validator(mode="after")
    def _named(self) -> ReceiverConfig:
        if not self.name:
            raise ValueError("missing name in receiver")
        return self


class _KeyedError(ValueError):
    """A ValueError that names a sub-key of the model being validated."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"@{key}: {message}")


def _label_names(names: Any, what: str) -> Any:
    for n in names or []:
        if not is_valid_label_name(str(n)):
            raise ValueError(f'invalid label name "{n}"{what}')
    return names


def _compile_matchers(items: list[str]) -> list[Matcher]:
    out: list[Matcher] = []
    for i, text in enumerate(items):
        try:
            out.extend(parse_matchers(text))
        except MatcherError as e:
            raise _KeyedError(f"[{i}]", str(e)) from None
    return out


def _legacy_matchers(match: dict[str, str], match_re: dict[str, str]) -> list[Matcher]:
    out = [Matcher.create(k, "=", v) for k, v in match.items()]
    for k, v in match_re.items():
        try:
            out.append(Matcher.create(k, "=~", v))
        except MatcherError as e:
            raise ValueError(f"@match_re.{k}: {e}") from None
    return out


class RouteConfig(_Strict):
    receiver: str = ""
    group_by: list[str] | None = None
    continue_: bool = Field(False, alias="continue")
    match: dict[str, str] = Field(default_factory=dict)
    match_re: dict[str, str] = Field(default_factory=dict)
    matchers: list[str] = Field(default_factory=list)
    group_wait: DurationMs | None = None
    group_interval: DurationMs | None = None
    repeat_interval: DurationMs | None = None
    mute_time_intervals: list[str] = Field(default_factory=list)
    active_time_intervals: list[str] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list)

    @field_validator("match", "match_re")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        return dict(_label_names(v, ""))

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, v: list[str] | None) -> list[str] | None:
        seen: set[str] = set()
        for name in v or []:
            if name != "..." and not is_valid_label_name(name):
                raise ValueError(f'invalid label name "{name}" in group_by list')
            if name in seen:
                raise ValueError(f'duplicated label "{name}" in group_by')
            seen.add(name)
        if v and "..." in v and len(v) > 1:
            raise ValueError("cannot have wildcard group_by (`...`) and other other labels at the same time")
        return v

    @field_validator("group_interval", "repeat_interval")
    @classmethod
    def _nonzero(cls, v: int | None, info: Any) -> int | None:
        if v == 0:
            raise ValueError(f"{info.field_name} cannot be zero")
        return v

    @model_validator(mode="after")
    def _compile(self) -> RouteConfig:
        self._matchers = _legacy_matchers(self.match, self.match_re)
        try:
            self._matchers += _compile_matchers(self.matchers)
        except _KeyedError as e:
            raise ValueError(f"@matchers{str(e)[1:]}") from None
        return self

    _matchers: list[Matcher] = []

    @property
    def compiled_matchers(self) -> list[Matcher]:
        """match, match_re and matchers together, sorted as Alertmanager sorts them."""
        return sorted(self._matchers, key=Matcher.sort_key)


class InhibitRuleConfig(_Strict):
    source_match: dict[str, str] = Field(default_factory=dict)
    source_match_re: dict[str, str] = Field(default_factory=dict)
    source_matchers: list[str] = Field(default_factory=list)
    target_match: dict[str, str] = Field(default_factory=dict)
    target_match_re: dict[str, str] = Field(default_factory=dict)
    target_matchers: list[str] = Field(default_factory=list)
    equal: list[str] = Field(default_factory=list)

    @field_validator("source_match", "source_match_re", "target_match", "target_match_re")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        return dict(_label_names(v, ""))

    @field_validator("equal")
    @classmethod
    def _equal(cls, v: list[str]) -> list[str]:
        return list(_label_names(v, " in equal list"))

    @model_validator(mode="after")
    def _compile(self) -> InhibitRuleConfig:
        for side in ("source", "target"):
            try:
                ms = _legacy_matchers(getattr(self, f"{side}_match"), getattr(self, f"{side}_match_re"))
            except ValueError as e:
                raise ValueError(f"@{side}_{str(e).lstrip('@')}") from None
            try:
                ms += _compile_matchers(getattr(self, f"{side}_matchers"))
            except _KeyedError as e:
                raise ValueError(f"@{side}_matchers{str(e)[1:]}") from None
            setattr(self, f"_{side}", ms)
        return self

    _source: list[Matcher] = []
    _target: list[Matcher] = []

    @property
    def source(self) -> list[Matcher]:
        return list(self._source)

    @property
    def target(self) -> list[Matcher]:
        return list(self._target)


class AlertmanagerConfig(_Strict):
    global_: GlobalConfig = Field(default_factory=GlobalConfig, alias="global")
    route: RouteConfig | None = None
    inhibit_rules: list[InhibitRuleConfig] = Field(default_factory=list)
    receivers: list[ReceiverConfig] = Field(default_factory=list)
    templates: list[str] = Field(default_factory=list)
    time_intervals: list[NamedTimeInterval] = Field(default_factory=list)
    mute_time_intervals: list[NamedTimeInterval] = Field(default_factory=list)

    @field_validator("global_", mode="before")
    @classmethod
    def _null_global(cls, v: Any) -> Any:
        return {} if v is None else v


@dataclass
class LoadedConfig:
    """A validated configuration, its source text and resolved template files."""

    config: AlertmanagerConfig
    original: str
    template_files: list[Path] = field(default_factory=list)
    path: Path | None = None

    @property
    def route(self) -> RouteConfig:
        assert self.config.route is not None
        return self.config.route

    @property
    def time_intervals(self) -> dict[str, NamedTimeInterval]:
        return {ti.name: ti for ti in [*self.config.mute_time_intervals, *self.config.time_intervals]}

    def receiver(self, name: str) -> ReceiverConfig:
        for r in self.config.receivers:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_yaml(self) -> str:
        """The configuration as Alertmanager's ``/api/v2/status`` shows it: defaults filled, secrets hidden."""
        data = self.config.model_dump(by_alias=True, exclude_none=True)
        return yaml.safe_dump(_mask_secrets(data), sort_keys=False, allow_unicode=True)


_SECRET_KEYS = {"password", "credentials", "bearer_token", "smtp_auth_password", "smtp_auth_secret",
                "auth_password", "auth_secret", "service_key", "routing_key", "api_url", "slack_api_url",
                "opsgenie_api_key", "wechat_api_secret", "victorops_api_key", "url"}


_DURATION_KEYS = {"resolve_timeout", "group_wait", "group_interval", "repeat_interval", "timeout"}


def _mask_secrets(v: Any, key: str = "") -> Any:
    if isinstance(v, dict):
        return {k: _mask_secrets(x, k) for k, x in v.items()}
    if isinstance(v, list):
        return [_mask_secrets(x, key) for x in v]
    if key in _DURATION_KEYS and isinstance(v, int):
        return format_duration_ms(v)
    # Alertmanager hides secret URLs of chat integrations but shows webhook and PagerDuty URLs.
    if key in _SECRET_KEYS and key != "url" and isinstance(v, str) and v:
        return SECRET
    return v


def _loc_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        elif p.startswith("function-") or p in ("function-after", "function-before"):
            continue
        else:
            parts.append({"global_": "global", "continue_": "continue", "from_": "from", "class_": "class"}
                         .get(p, p))
    return ".".join(parts)


def _format(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        key = _loc_path(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "field not found (unknown key)"
        if msg.startswith("@"):
            # A validator named a sub-key of the model it checked.
            sub, _, msg = msg[1:].partition(": ")
            key = f"{key}{sub}" if sub.startswith("[") else (f"{key}.{sub}" if key else sub)
        lines.append(f"{key}: {msg}" if key else msg)
    return "\n".join(lines)


def _walk_routes(route: RouteConfig, path: str) -> list[tuple[str, RouteConfig]]:
    out = [(path, route)]
    for i, child in enumerate(route.routes):
        out.extend(_walk_routes(child, f"{path}.routes[{i}]"))
    return out


def _cross_checks(cfg: AlertmanagerConfig) -> list[str]:
    """The checks Alertmanager runs on the whole file after each part parsed."""
    errs: list[str] = []
    g = cfg.global_
    names: set[str] = set()
    for i, r in enumerate(cfg.receivers):
        if r.name in names:
            errs.append(f'receivers[{i}].name: notification config name "{r.name}" is not unique')
        names.add(r.name)
        for j, ec in enumerate(r.email_configs):
            key = f"receivers[{i}].email_configs[{j}]"
            if not ec.smarthost and not g.smtp_smarthost:
                errs.append(f"{key}.smarthost: no global SMTP smarthost set")
            if not ec.from_ and not g.smtp_from:
                errs.append(f"{key}.from: no global SMTP from set")
        for j, sc in enumerate(r.slack_configs):
            if sc.api_url is None and not sc.api_url_file and g.slack_api_url is None and not g.slack_api_url_file:
                errs.append(f"receivers[{i}].slack_configs[{j}].api_url: "
                            "no global Slack API URL set either inline or in a file")
    intervals: set[str] = set()
    for key in ("mute_time_intervals", "time_intervals"):
        for i, ti in enumerate(getattr(cfg, key)):
            if ti.name in intervals:
                errs.append(f'{key}[{i}].name: time interval "{ti.name}" is not unique')
            intervals.add(ti.name)
    if cfg.route is None:
        return [*errs, "route: no routes provided"]
    root = cfg.route
    if not root.receiver:
        errs.append("route.receiver: root route must specify a default receiver")
    if root.match or root.match_re or root.matchers:
        errs.append("route: root route must not have any matchers")
    if root.mute_time_intervals:
        errs.append("route.mute_time_intervals: root route must not have any mute time intervals")
    if root.active_time_intervals:
        errs.append("route.active_time_intervals: root route must not have any active time intervals")
    for path, node in _walk_routes(root, "route"):
        if node.receiver and node.receiver not in names:
            errs.append(f'{path}.receiver: undefined receiver "{node.receiver}" used in route')
        for key in ("mute_time_intervals", "active_time_intervals"):
            for k, name in enumerate(getattr(node, key)):
                if name not in intervals:
                    errs.append(f'{path}.{key}[{k}]: undefined time interval "{name}" used in route')
    return errs


def parse_config(text: str, base_dir: Path | None = None, path: Path | None = None) -> LoadedConfig:
    """Validate Alertmanager configuration text; raise ``ConfigError`` naming each bad key."""
    where = f"{path}: " if path else ""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}invalid YAML: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}top level must be a mapping")
    try:
        cfg = AlertmanagerConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(where + _format(e).replace("\n", "\n" + where)) from e
    errs = _cross_checks(cfg)
    if errs:
        raise ConfigError("\n".join(where + e for e in errs))
    files = _template_files(cfg.templates, base_dir or Path.cwd())
    return LoadedConfig(cfg, text, files, path)


def _template_files(patterns: list[str], base: Path) -> list[Path]:
    out: list[Path] = []
    for pat in patterns:
        full = pat if Path(pat).is_absolute() else str(base / pat)
        out.extend(Path(p) for p in sorted(glob.glob(full)))
    return out


def load_config_file(path: Path) -> LoadedConfig:
    """Read and validate an Alertmanager configuration file."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"alertmanager_config: {path}: {e.strerror}") from e
    return parse_config(text, base_dir=path.parent, path=path)
