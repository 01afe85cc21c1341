"""View models of the alerts page, over the alerting pillar's pipeline and rule manager.

Reads the same objects the Alertmanager API v2 and ``/api/v1/rules`` read:
the pipeline's dispatcher groups, alert store, silences and status, the
notification log in the state store, and the rule manager's groups.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from pitwall.alerting import (
    AlertingRule,
    AlertMatcher,
    MatcherError,
    NotificationPipeline,
    RuleManager,
    Silence,
    parse_alert_matchers,
    sort_alerts,
)
from pitwall.core.durations import parse_duration_ms
from pitwall.core.errors import BadData

__all__ = ["AlertDetail", "AlertFilter", "AlertRow", "AlertsView"]


@dataclass
class AlertRow:
    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    state: str  # active | suppressed | pending (rule-side)
    starts_at: datetime | None
    silenced_by: list[str] = field(default_factory=list)
    inhibited_by: list[str] = field(default_factory=list)
    fingerprint: str = ""

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")

    @property
    def summary(self) -> str:
        return self.annotations.get("summary") or self.annotations.get("description", "")

    @property
    def fp_hex(self) -> str:
        """The fingerprint as Alertmanager prints it (16 hex digits), the alert's URL."""
        return f"{int(self.fingerprint):016x}" if str(self.fingerprint).isdigit() else str(self.fingerprint)


@dataclass
class AlertFilter:
    """The alerts page's filter bar, as Alertmanager's UI has it: matchers, and whether silenced and
    inhibited alerts show (not by default, as there)."""

    matchers: list[AlertMatcher] = field(default_factory=list)
    silenced: bool = False
    inhibited: bool = False

    @classmethod
    def parse(cls, text: str, silenced: bool = False, inhibited: bool = False) -> AlertFilter:
        """``{severity="critical",job=~"api.*"}`` (braces optional); ``BadData`` naming the bad matcher."""
        try:
            ms = parse_alert_matchers(text) if text.strip() else []
        except MatcherError as e:
            raise BadData(f"filter: {e}") from None
        return cls(ms, silenced, inhibited)

    def keeps(self, row: AlertRow) -> bool:
        if (row.silenced_by and not self.silenced) or (row.inhibited_by and not self.inhibited):
            return False
        return all(m.matches(row.labels.get(m.name, "")) for m in self.matchers)


@dataclass
class AlertDetail:
    """One alert with the rule that raised it (if a loaded rule has its name) and its links."""

    alert: AlertRow
    ends_at: datetime | None
    generator_url: str
    rule: RuleView | None

    @property
    def links(self) -> list[tuple[str, str]]:
        """(title, href) of the runbook and dashboard annotations, as the demo's and common rules write them."""
        out: list[tuple[str, str]] = []
        ann = self.alert.annotations
        for key in ("runbook_url", "runbook"):
            if ann.get(key):
                out.append(("Runbook", ann[key]))
                break
        dash = ann.get("dashboard") or ann.get("dashboard_url") or ""
        if dash:
            out.append(("Dashboard", dash if "/" in dash else f"/dashboards/{dash}"))
        return out


@dataclass
class AlertGroupView:
    receiver: str
    labels: dict[str, str]
    alerts: list[AlertRow]


@dataclass
class RuleView:
    group: str
    file: str
    name: str
    kind: str
    query: str
    state: str
    health: str
    last_error: str
    last_evaluation: datetime | None
    evaluation_ms: float
    active: int


@dataclass
class SilenceView:
    id: str
    matchers: str
    state: str
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str


@dataclass
class NotificationView:
    receiver: str
    group_key: str
    at: datetime
    firing: int
    resolved: int

    @property
    def group_labels(self) -> dict[str, str]:
        """The group's labels from Alertmanager's group key (``<route matchers>:{label="value",...}``)."""
        i = self.group_key.rfind("}:{")
        text = self.group_key[i + 2:] if i >= 0 else self.group_key
        try:
            return {m.name: m.value for m in parse_alert_matchers(text)} if text.strip("{}") else {}
        except MatcherError:
            return {}


def _dt_ms(ms: int) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms > 0 else None


class AlertsView:
    def __init__(self, pipeline: NotificationPipeline | None, rules: Callable[[], RuleManager | None]) -> None:
        self.pipeline = pipeline
        self.rules = rules

    def _row(self, a: Any, now: datetime) -> AlertRow:
        assert self.pipeline is not None
        st = self.pipeline.status_of(a.labels, now)
        return AlertRow(a.labels.get("alertname", ""), dict(a.labels), dict(a.annotations), st.state, a.starts_at,
                        list(st.silenced_by), list(st.inhibited_by), a.fingerprint)

    def groups(self, tenant: str = "default", only: AlertFilter | None = None) -> list[AlertGroupView]:
        """Alerts as the notification pipeline groups them (route receiver + group labels), those ``only``
        keeps (all by default); groups left empty are dropped."""
        if self.pipeline is None:
            return []
        now = datetime.now(UTC)
        out = []
        for g in self.pipeline.rt.dispatcher.snapshot():
            alerts = [a for a in g.alerts.values() if a.ends_at is None or a.ends_at >= now]
            rows = [self._row(a, now) for a in sort_alerts(alerts)]
            rows = [r for r in rows if only is None or only.keeps(r)]
            if rows:
                out.append(AlertGroupView(g.route.receiver, dict(g.labels), rows))
        return out

    def alert(self, fp_hex: str) -> AlertDetail | None:
        """The alert with this fingerprint (16 hex digits), or None."""
        if self.pipeline is None:
            return None
        try:
            fp = int(fp_hex, 16)
        except ValueError:
            return None
        a = self.pipeline.alerts.get(fp)
        if a is None:
            return None
        row = self._row(a, datetime.now(UTC))
        rule = next((r for r in self.rule_list() if r.kind == "alerting" and r.name == row.name), None)
        return AlertDetail(row, a.ends_at, a.generator_url, rule)

    def preview(self, matchers_text: list[tuple[str, str, str]]) -> list[AlertRow]:
        """The alerts a silence with these matchers would hit now (silenced or not): the silence form's preview."""
        ms = _matchers(matchers_text)
        if self.pipeline is None or not ms:
            return []
        now = datetime.now(UTC)
        rows = [self._row(a, now) for a in self.pipeline.alerts.list() if a.ends_at is None or a.ends_at >= now]
        return [r for r in rows if all(m.matches(r.labels.get(m.name, "")) for m in ms)]

    def firing(self, tenant: str = "default") -> list[AlertRow]:
        """Active (not silenced or inhibited) alerts, newest first; pending rule alerts after them."""
        rows: list[AlertRow] = []
        if self.pipeline is not None:
            now = datetime.now(UTC)
            rows = [self._row(a, now) for a in self.pipeline.alerts.list()
                    if a.ends_at is None or a.ends_at >= now]
            rows = [r for r in rows if r.state == "active"]
        else:
            rows = [r for r in self._rule_alerts() if r.state == "firing"]
        rows.sort(key=lambda r: r.starts_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        return rows

    def _rule_alerts(self) -> list[AlertRow]:
        out: list[AlertRow] = []
        for g in self._groups():
            for rule in g.rules:
                if isinstance(rule, AlertingRule):
                    out += [AlertRow(rule.name, dict(a.labels), dict(a.annotations), a.state.value,
                                     _dt_ms(a.active_at_ms)) for a in rule.active_alerts()]
        return out

    def pending(self) -> list[AlertRow]:
        """Alerts of rules whose condition holds but not yet for their ``for`` duration."""
        return [r for r in self._rule_alerts() if r.state == "pending"]

    def _groups(self) -> list[Any]:
        mgr = self.rules()
        return list(mgr.rule_groups()) if mgr is not None else []

    def rule_list(self) -> list[RuleView]:
        out: list[RuleView] = []
        for g in self._groups():
            for rule in g.rules:
                alerting = isinstance(rule, AlertingRule)
                out.append(RuleView(
                    group=g.name, file=g.file, name=rule.name, kind="alerting" if alerting else "recording",
                    query=rule.expr, state=rule.state().value if isinstance(rule, AlertingRule) else "",
                    health=rule.health.value, last_error=rule.last_error or "",
                    last_evaluation=_dt_ms(rule.last_evaluation_ms), evaluation_ms=rule.evaluation_seconds * 1000,
                    active=len(rule.active_alerts()) if isinstance(rule, AlertingRule) else 0))
        return out

    def silences(self) -> list[SilenceView]:
        if self.pipeline is None:
            return []
        now = datetime.now(UTC)
        return [SilenceView(s.id, ", ".join(f"{m.name}{m.type}{m.value!r}".replace("'", '"') for m in s.matchers),
                            s.state(now), s.starts_at, s.ends_at, s.created_by, s.comment)
                for s in _silences(self.pipeline)]

    def history(self, limit: int = 50) -> list[NotificationView]:
        if self.pipeline is None:
            return []
        rows = self.pipeline.state.load_nflog()
        out = [NotificationView(r.receiver, r.group_key, datetime.fromtimestamp(r.timestamp, UTC), len(r.firing),
                                len(r.resolved)) for r in rows]
        out.sort(key=lambda n: n.at, reverse=True)
        return out[:limit]

    def counters(self) -> dict[str, int]:
        if self.pipeline is None:
            return {}
        return {"delivered": self.pipeline.delivered, "failed": self.pipeline.failed,
                "dropped": self.pipeline.dropped, "queued": self.pipeline.state.count_pending()}

    def create_silence(self, matchers_text: list[tuple[str, str, str]], duration: str, author: str,
                       comment: str) -> str:
        if self.pipeline is None:
            raise BadData("the notification pipeline is not available")
        ms = _matchers(matchers_text)
        if not ms:
            raise BadData("a silence needs at least one matcher")
        try:
            dur = parse_duration_ms(duration.strip() or "2h")
        except ValueError:
            raise BadData(f"invalid duration {duration[:32]!r} (use e.g. 2h, 30m)") from None
        if dur <= 0:
            raise BadData("the duration must be positive")
        if not author.strip():
            raise BadData("a silence needs an author ('created by')")
        now = datetime.now(UTC)
        s = Silence(id="", matchers=tuple(ms), starts_at=now, ends_at=now + timedelta(milliseconds=dur),
                    created_by=author.strip(), comment=comment.strip() or "silenced from the pitwall UI")
        return self.pipeline.silences.set(s)

    def expire_silence(self, id_: str) -> None:
        if self.pipeline is None:
            raise BadData("the notification pipeline is not available")
        self.pipeline.silences.expire(id_)


def _matchers(matchers_text: list[tuple[str, str, str]]) -> list[AlertMatcher]:
    """The silence form's rows (name, operator, value) as matchers; rows without a name are left out."""
    ms: list[AlertMatcher] = []
    for name, op, value in matchers_text:
        if not name.strip():
            continue
        if op not in ("=", "!=", "=~", "!~"):
            raise BadData(f"invalid matcher operator {op!r}")
        try:
            ms.append(AlertMatcher.create(name.strip(), op, value))  # type: ignore[arg-type]
        except MatcherError as e:
            raise BadData(f"invalid matcher {name}{op}{value}: {e}") from None
    return ms


def _silences(p: NotificationPipeline) -> Sequence[Silence]:
    # ``Silences.list`` (a method) shadows the builtin in its annotations; the result is a list.
    return cast("Sequence[Silence]", p.silences.query(()))
