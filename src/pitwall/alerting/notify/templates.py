"""Alertmanager's notification template data, functions and default texts.

Runs on ``core.gotemplate`` (Go's text/template). The data has
Alertmanager's shape: ``.Receiver``, ``.Status``, ``.Alerts`` (with
``.Firing``/``.Resolved``), ``.GroupLabels``, ``.CommonLabels``,
``.CommonAnnotations``, ``.ExternalURL``; label sets are ``KV`` maps with
``SortedPairs`` (``alertname`` first), ``Names``, ``Values``, ``Remove``.
The default definitions below are pitwall's own text producing the same
notification texts as Alertmanager's ``default.tmpl``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pitwall.alerting.notify.alerts import StoredAlert
from pitwall.core import regex
from pitwall.core.errors import ConfigError
from pitwall.core.gotemplate import Template, TemplateError

__all__ = ["KV", "Alerts", "TemplateData", "Templates", "build_data"]


class Pair:
    """One label: ``.Name`` and ``.Value``."""

    def __init__(self, name: str, value: str) -> None:
        self.Name = name
        self.Value = value


class Pairs(list[Pair]):
    def Names(self) -> list[str]:
        return [p.Name for p in self]

    def Values(self) -> list[str]:
        return [p.Value for p in self]


class KV(dict[str, str]):
    """A label or annotation set, with Alertmanager's methods."""

    def SortedPairs(self) -> Pairs:
        keys = sorted(k for k in self if k != "alertname")
        if "alertname" in self:
            keys.insert(0, "alertname")
        return Pairs(Pair(k, self[k]) for k in keys)

    def Remove(self, keys: Sequence[str]) -> KV:
        drop = set(keys)
        return KV({k: v for k, v in self.items() if k not in drop})

    def Names(self) -> list[str]:
        return self.SortedPairs().Names()

    def Values(self) -> list[str]:
        return self.SortedPairs().Values()


_GO_LAYOUT = [("2006", "%Y"), ("01", "%m"), ("02", "%d"), ("15", "%H"), ("04", "%M"), ("05", "%S"),
              ("Jan", "%b"), ("Mon", "%a"), ("MST", "%Z"), ("-0700", "%z"), ("06", "%y")]


class GoTime:
    """A ``time.Time`` for templates: ``.Format``, ``.Unix``, ``.IsZero``, printed as Go prints it."""

    def __init__(self, t: datetime | None) -> None:
        self.t = t

    def IsZero(self) -> bool:
        return self.t is None

    def Unix(self) -> int:
        return int(self.t.timestamp()) if self.t else -62135596800

    def UTC(self) -> GoTime:
        return GoTime(self.t.astimezone(UTC) if self.t else None)

    def Format(self, layout: str) -> str:
        t = self.t or datetime(1, 1, 1, tzinfo=UTC)
        if layout == "2006-01-02T15:04:05Z07:00":
            return rfc3339(t)
        out = layout
        for go, py in _GO_LAYOUT:
            out = out.replace(go, t.strftime(py))
        return out

    def __go_str__(self) -> str:
        t = self.t or datetime(1, 1, 1, tzinfo=UTC)
        frac = f".{t.microsecond:06d}".rstrip("0").rstrip(".")
        return t.strftime("%Y-%m-%d %H:%M:%S") + frac + t.strftime(" %z ") + (t.tzname() or "UTC")


def rfc3339(t: datetime | None) -> str:
    """Go's JSON time form (RFC 3339 with only the fraction digits needed); zero time for None."""
    if t is None:
        return "0001-01-01T00:00:00Z"
    t = t.astimezone(UTC)
    frac = f".{t.microsecond:06d}".rstrip("0").rstrip(".")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


@dataclass
class TemplateAlert:
    Status: str
    Labels: KV
    Annotations: KV
    StartsAt: GoTime
    EndsAt: GoTime
    GeneratorURL: str
    Fingerprint: str


class Alerts(list[TemplateAlert]):
    def Firing(self) -> Alerts:
        return Alerts(a for a in self if a.Status == "firing")

    def Resolved(self) -> Alerts:
        return Alerts(a for a in self if a.Status == "resolved")


@dataclass
class TemplateData:
    Receiver: str
    Status: str
    Alerts: Alerts
    GroupLabels: KV
    CommonLabels: KV
    CommonAnnotations: KV
    ExternalURL: str


def _common(sets: list[Mapping[str, str]]) -> KV:
    if not sets:
        return KV()
    first = sets[0]
    return KV({k: v for k, v in first.items() if all(s.get(k) == v for s in sets[1:])})


def build_data(receiver: str, group_labels: Mapping[str, str], alerts: Iterable[StoredAlert],
               external_url: str, now: datetime) -> TemplateData:
    """Alertmanager's ``template.Data`` for one notification."""
    items = Alerts(
        TemplateAlert("resolved" if a.resolved_at(now) else "firing", KV(a.labels), KV(a.annotations),
                      GoTime(a.starts_at), GoTime(a.ends_at), a.generator_url, a.fingerprint)
        for a in alerts)
    status = "firing" if any(a.Status == "firing" for a in items) else "resolved"
    return TemplateData(
        Receiver=_receiver_name(receiver), Status=status, Alerts=items, GroupLabels=KV(group_labels),
        CommonLabels=_common([a.Labels for a in items]), CommonAnnotations=_common([a.Annotations for a in items]),
        ExternalURL=external_url,
    )


def _receiver_name(name: str) -> str:
    # Alertmanager passes the receiver name through Go's regexp.QuoteMeta.
    return regex.escape(name)


def _title(s: str) -> str:
    return re.sub(r"(^|[^\w'])(\w)", lambda m: m.group(1) + m.group(2).upper(), s)


def _tz(name: str, t: GoTime) -> GoTime:
    return GoTime(t.t.astimezone(ZoneInfo(name)) if t.t else None)


FUNCS: dict[str, Any] = {
    "toUpper": str.upper,
    "toLower": str.lower,
    "title": _title,
    "trimSpace": str.strip,
    "join": lambda sep, items: sep.join(items),
    # Go's regexp.MatchString and Regexp.ReplaceAllString, in RE2.
    "match": lambda pattern, text: regex.compile(pattern).matches(text),
    "safeHtml": lambda text: text,
    "reReplaceAll": lambda pattern, repl, text: regex.compile(pattern).replace_all(text, repl),
    "stringSlice": lambda *items: list(items),
    "date": lambda layout, t: t.Format(layout),
    "tz": _tz,
}

# Same texts as Alertmanager's default.tmpl, laid out as pitwall's own definitions.
DEFAULT_TEMPLATES = r"""
{{ define "__alertmanager" }}Alertmanager{{ end }}
{{ define "__alertmanagerURL" }}{{ .ExternalURL }}/#/alerts?receiver={{ .Receiver | urlquery }}{{ end }}
{{ define "__subject" -}}
[{{ .Status | toUpper }}{{ if eq .Status "firing" }}:{{ .Alerts.Firing | len }}{{ end }}]
{{- " " }}{{ .GroupLabels.SortedPairs.Values | join " " }}
{{- " " }}{{ if gt (len .CommonLabels) (len .GroupLabels) -}}
({{ with .CommonLabels.Remove .GroupLabels.Names }}{{ .Values | join " " }}{{ end }})
{{- end }}
{{- end }}
{{ define "__description" }}{{ end }}
{{ define "__text_alert_list" }}{{ range . }}Labels:
{{ range .Labels.SortedPairs }} - {{ .Name }} = {{ .Value }}
{{ end }}Annotations:
{{ range .Annotations.SortedPairs }} - {{ .Name }} = {{ .Value }}
{{ end }}Source: {{ .GeneratorURL }}
{{ end }}{{ end }}

{{ define "slack.default.title" }}{{ template "__subject" . }}{{ end }}
{{ define "slack.default.username" }}{{ template "__alertmanager" . }}{{ end }}
{{ define "slack.default.fallback" }}{{ template "slack.default.title" . }} | {{ template "slack.default.titlelink" . }}{{ end }}
{{ define "slack.default.callbackid" }}{{ end }}
{{ define "slack.default.pretext" }}{{ end }}
{{ define "slack.default.titlelink" }}{{ template "__alertmanagerURL" . }}{{ end }}
{{ define "slack.default.iconemoji" }}{{ end }}
{{ define "slack.default.iconurl" }}{{ end }}
{{ define "slack.default.text" }}{{ end }}
{{ define "slack.default.footer" }}{{ end }}

{{ define "pagerduty.default.description" }}{{ template "__subject" . }}{{ end }}
{{ define "pagerduty.default.client" }}{{ template "__alertmanager" . }}{{ end }}
{{ define "pagerduty.default.clientURL" }}{{ template "__alertmanagerURL" . }}{{ end }}
{{ define "pagerduty.default.instances" }}{{ template "__text_alert_list" . }}{{ end }}

{{ define "email.default.subject" }}{{ template "__subject" . }}{{ end }}
{{ define "__email_alert" -}}
<tr><td class="alert-labels"><strong>Labels</strong><br />
{{ range .Labels.SortedPairs }}{{ html .Name }} = {{ html .Value }}<br />
{{ end }}{{ if gt (len .Annotations) 0 }}<strong>Annotations</strong><br />
{{ end }}{{ range .Annotations.SortedPairs }}{{ html .Name }} = {{ html .Value }}<br />
{{ end }}<a href="{{ html .GeneratorURL }}">Source</a><br />
</td></tr>
{{- end }}
{{ define "email.default.html" -}}
<!DOCTYPE html>
<html>
<head>
<meta name="viewport" content="width=device-width" />
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
<title>{{ template "__subject" . }}</title>
<style>
body { font-family: Helvetica, Arial, sans-serif; font-size: 14px; background: #f6f6f6; margin: 0; }
.box { max-width: 600px; margin: 0 auto; background: #fff; border: 1px solid #e9e9e9; border-radius: 3px; }
.banner { color: #fff; padding: 20px; font-size: 16px; text-align: center; }
.firing { background: #E6522C; } .resolved { background: #68B90F; }
.content { padding: 20px; } td { padding: 0 0 20px; vertical-align: top; }
.footer { color: #999; font-size: 12px; text-align: center; padding: 20px; }
</style>
</head>
<body>
<table class="box" width="100%" cellpadding="0" cellspacing="0">
<tr><td class="banner {{ .Status }}">
{{ .Alerts | len }} alert{{ if gt (len .Alerts) 1 }}s{{ end }} for {{ range .GroupLabels.SortedPairs }}
{{ html .Name }}={{ html .Value }}
{{ end }}</td></tr>
<tr><td class="content"><table width="100%" cellpadding="0" cellspacing="0">
<tr><td><a href="{{ template "__alertmanagerURL" . }}">View in {{ template "__alertmanager" . }}</a></td></tr>
{{ if gt (len .Alerts.Firing) 0 }}<tr><td><strong>[{{ .Alerts.Firing | len }}] Firing</strong></td></tr>
{{ range .Alerts.Firing }}{{ template "__email_alert" . }}
{{ end }}{{ end }}{{ if gt (len .Alerts.Resolved) 0 }}<tr><td><strong>[{{ .Alerts.Resolved | len }}] Resolved</strong></td></tr>
{{ range .Alerts.Resolved }}{{ template "__email_alert" . }}
{{ end }}{{ end }}</table></td></tr>
<tr><td class="footer">Sent by {{ template "__alertmanager" . }}</td></tr>
</table>
</body>
</html>
{{- end }}
"""


class Templates:
    """The default definitions plus the configuration's ``templates:`` files."""

    def __init__(self, files: Sequence[Path] = ()) -> None:
        self.base = Template("__pitwall_defaults", FUNCS).option("missingkey=default")
        self.base.parse(DEFAULT_TEMPLATES)
        self._parsed: dict[str, str] = {}
        for f in files:
            try:
                text = f.read_text()
            except OSError as e:
                raise ConfigError(f"templates: {f}: {e.strerror}") from e
            try:
                self.base.parse(text, f.name)
            except TemplateError as e:
                raise ConfigError(f"templates: {f}: {e.message}") from e

    def define(self, text: str, name: str) -> None:
        """Add definitions of pitwall's own (``{{ define "..." }}`` blocks), e.g. the texts of pages to people."""
        self.base.parse(text, name)

    def render(self, text: str, data: TemplateData) -> str:
        """Expand one configured text (``title``, ``text``, a header...) against ``data``."""
        if "{{" not in text:
            return text
        # Configured texts are few and fixed: parse each once, as its own root beside the definitions.
        name = self._parsed.get(text)
        if name is None:
            name = f"__text_{len(self._parsed)}"
            self.base.parse(text, name)
            self._parsed[text] = name
        return self.base.execute(data, name)

    def render_html(self, text: str, data: TemplateData) -> str:
        """Like ``render``; the default HTML escapes values itself (``html``)."""
        return self.render(text, data)


def escape(s: str) -> str:
    return html.escape(s)
