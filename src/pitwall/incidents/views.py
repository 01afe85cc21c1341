"""Records rendered in PagerDuty REST API v2's JSON shapes (``self`` links under pitwall's ``/pagerduty``)."""

from __future__ import annotations

from typing import Any

from pitwall.incidents.change_records import ChangeRecord
from pitwall.incidents.changes import ChangeEvent
from pitwall.incidents.model import (
    Alert,
    EscalationPolicy,
    ExternalReference,
    Incident,
    LogEntry,
    Note,
    Override,
    Schedule,
    Service,
    User,
)
from pitwall.incidents.oncall import Span, from_ns
from pitwall.incidents.signals import signal_links

__all__ = ["Views", "iso"]


def iso(ns: int, tz: str = "UTC") -> str | None:
    """PagerDuty's timestamps: ISO 8601 with offset, seconds precision (``Z`` for UTC)."""
    if not ns:
        return None
    text = from_ns(ns, tz).replace(microsecond=0).isoformat()
    return text.replace("+00:00", "Z")


class Views:
    """Renderers bound to the base URL that ``self`` and ``html_url`` point below."""

    def __init__(self, base_url: str = "") -> None:
        self.root = base_url.rstrip("/")
        self.base = self.root + "/pagerduty"

    def ref(self, kind: str, id_: str, summary: str = "") -> dict[str, Any]:
        plural = {"user": "users", "service": "services", "schedule": "schedules", "incident": "incidents",
                  "escalation_policy": "escalation_policies", "log_entry": "log_entries"}[kind]
        return {"id": id_, "type": f"{kind}_reference", "summary": summary or id_,
                "self": f"{self.base}/{plural}/{id_}", "html_url": f"{self.base}/{plural}/{id_}"}

    def user(self, u: User) -> dict[str, Any]:
        return {
            "id": u.id, "type": "user", "summary": u.name, "name": u.name, "email": u.email,
            "time_zone": u.time_zone, "role": u.role, "self": f"{self.base}/users/{u.id}",
            "html_url": f"{self.base}/users/{u.id}", "teams": [], "description": "",
            "contact_methods": [self.contact_method(u, c.id, c.type, c.address, c.label)
                                for c in u.contact_methods],
            "notification_rules": [{"urgency": k, "contact_methods": v} for k, v in u.notification_rules.items()],
        }

    def contact_method(self, u: User, id_: str, kind: str, address: str, label: str) -> dict[str, Any]:
        pd_type = {"email": "email_contact_method", "slack": "slack_contact_method",
                   "webhook": "webhook_contact_method"}[kind]
        return {"id": id_, "type": pd_type, "summary": label or kind, "label": label or kind, "address": address,
                "self": f"{self.base}/users/{u.id}/contact_methods/{id_}"}

    def service(self, s: Service, policy: EscalationPolicy | None) -> dict[str, Any]:
        return {
            "id": s.id, "type": "service", "summary": s.name, "name": s.name, "description": s.description,
            "status": s.status, "self": f"{self.base}/services/{s.id}", "html_url": f"{self.base}/services/{s.id}",
            "acknowledgement_timeout": s.acknowledgement_timeout,
            "auto_resolve_timeout": s.auto_resolve_timeout,
            "escalation_policy": self.ref("escalation_policy", policy.id, policy.name) if policy else None,
            "incident_urgency_rule": {"type": "severity_based"} if s.urgency == "severity_based"
            else {"type": "constant", "urgency": s.urgency},
            "integrations": [{"id": f"{s.id}I{i}", "type": "events_api_v2_inbound_integration",
                              "summary": "Events API v2", "integration_key": k,
                              "self": f"{self.base}/services/{s.id}/integrations/{s.id}I{i}"}
                             for i, k in enumerate(s.integration_keys)],
            "teams": [], "alert_creation": s.alert_creation,
            "alert_grouping_parameters": s.alert_grouping_parameters.render(),
            "alert_dedup": s.alert_dedup,  # pitwall's extension (pitwall_incident_configs)
        }

    def policy(self, p: EscalationPolicy, names: dict[str, str]) -> dict[str, Any]:
        rules = []
        for r in p.escalation_rules:
            targets = [self.ref("user" if t.kind == "user" else "schedule", t.id, names.get(t.id, t.id))
                       for t in r.targets]
            rules.append({"id": r.id, "escalation_delay_in_minutes": r.escalation_delay_in_minutes,
                          "targets": targets})
        return {"id": p.id, "type": "escalation_policy", "summary": p.name, "name": p.name,
                "description": p.description, "num_loops": p.num_loops, "escalation_rules": rules,
                "self": f"{self.base}/escalation_policies/{p.id}",
                "html_url": f"{self.base}/escalation_policies/{p.id}", "services": [], "teams": []}

    def schedule(self, s: Schedule, names: dict[str, str], final: list[Span] | None = None) -> dict[str, Any]:
        layers = []
        for layer in s.schedule_layers:
            layers.append({
                "id": layer.id, "name": layer.name, "start": layer.start, "end": layer.end,
                "rotation_virtual_start": layer.rotation_virtual_start,
                "rotation_turn_length_seconds": layer.rotation_turn_length_seconds,
                "users": [{"user": self.ref("user", u, names.get(u, u))} for u in layer.users],
                "restrictions": [r.model_dump(exclude_none=True) for r in layer.restrictions],
            })
        out: dict[str, Any] = {
            "id": s.id, "type": "schedule", "summary": s.name, "name": s.name, "description": s.description,
            "time_zone": s.time_zone, "schedule_layers": layers, "self": f"{self.base}/schedules/{s.id}",
            "html_url": f"{self.base}/schedules/{s.id}", "escalation_policies": [], "teams": [],
            "users": [self.ref("user", u, names.get(u, u))
                      for u in dict.fromkeys(u for layer in s.schedule_layers for u in layer.users)],
        }
        if final is not None:
            out["final_schedule"] = {"name": "Final Schedule", "rendered_schedule_entries": [
                self.entry(sp, names, s.time_zone) for sp in final]}
        return out

    def entry(self, sp: Span, names: dict[str, str], tz: str = "UTC") -> dict[str, Any]:
        return {"start": iso(sp.start_ns, tz), "end": iso(sp.end_ns, tz),
                "user": self.ref("user", sp.user, names.get(sp.user, sp.user))}

    def override(self, o: Override, names: dict[str, str]) -> dict[str, Any]:
        return {"id": o.id, "start": iso(o.start_ns), "end": iso(o.end_ns),
                "user": self.ref("user", o.user, names.get(o.user, o.user))}

    def incident(self, i: Incident, svc_name: str, pol_name: str, names: dict[str, str], *,
                 links: bool = True) -> dict[str, Any]:
        """The incident; ``links=False`` leaves ``pitwall.links`` empty (lists that show no links skip
        building them)."""
        return {
            "id": i.id, "type": "incident", "summary": f"[#{i.number}] {i.title}", "incident_number": i.number,
            "title": i.title, "description": i.title, "status": i.status, "urgency": i.urgency,
            "incident_key": i.incident_key, "created_at": iso(i.created_ns), "updated_at": iso(i.updated_ns),
            "last_status_change_at": iso(i.last_status_change_ns), "resolved_at": iso(i.resolved_ns),
            "self": f"{self.base}/incidents/{i.id}", "html_url": f"{self.base}/incidents/{i.id}",
            "service": self.ref("service", i.service_id, svc_name),
            "escalation_policy": self.ref("escalation_policy", i.escalation_policy_id, pol_name)
            if i.escalation_policy_id else None,
            "assignments": [{"at": iso(a["at"]), "assignee": self.ref("user", a["user"], names.get(a["user"], ""))}
                            for a in i.assignments],
            "acknowledgements": [{"at": iso(a["at"]), "acknowledger": self._agent(a["user"], names)}
                                 for a in i.acknowledgements],
            "alert_counts": i.alert_counts, "escalation_level": i.escalation_level, "priority": None,
            "teams": [], "pending_actions": self._pending(i), "is_mergeable": True,
            "last_status_change_by": None,
            "external_references": [self.external_reference(r) for r in i.external_references],
            # pitwall's own: the named service's golden signals, error logs and traces over the incident
            "pitwall": {"service": i.signal_service or None,
                        "links": signal_links(self.root, i.signal_service, i.created_ns, i.resolved_ns)
                        if links else []},
        }

    def external_reference(self, r: ExternalReference) -> dict[str, Any]:
        """A ticket in PagerDuty's ``external_references`` shape (the ServiceNow/Jira extensions' links)."""
        system = {"jira": "Jira Service Management", "servicenow": "ServiceNow"}[r.system]
        return {"id": f"{r.system}:{r.ticket_id}", "type": "external_reference", "external_id": r.external_id,
                "external_url": r.external_url or None, "summary": f"{system} {r.external_id}", "sync": True,
                "webhook": {"id": r.system, "type": "webhook_reference", "summary": system},
                "pitwall": {"ticket_id": r.ticket_id, "synced_status": r.synced}}

    def _agent(self, agent: str, names: dict[str, str]) -> dict[str, Any]:
        if agent.startswith("service:"):
            sid = agent.split(":", 1)[1]
            return self.ref("service", sid, names.get(sid, sid))
        return self.ref("user", agent, names.get(agent, agent)) if agent else {"type": "timeout"}

    def _pending(self, i: Incident) -> list[dict[str, Any]]:
        out = []
        if i.status == "triggered" and i.next_escalation_ns:
            out.append({"type": "escalate", "at": iso(i.next_escalation_ns)})
        if i.status == "acknowledged" and i.ack_until_ns:
            out.append({"type": "unacknowledge", "at": iso(i.ack_until_ns)})
        if i.resolve_at_ns and i.status != "resolved":
            out.append({"type": "resolve", "at": iso(i.resolve_at_ns)})
        return out

    def alert(self, a: Alert, svc_name: str) -> dict[str, Any]:
        body = {"type": "alert_body", "contexts": a.links + a.images,
                "details": a.custom_details, "cef_details": {
                    "summary": a.summary, "severity": a.severity, "source_origin": a.source,
                    "source_component": a.component, "service_group": a.group, "event_class": a.class_,
                    "client": a.client, "client_url": a.client_url, "dedup_key": a.dedup_key,
                    "creation_time": a.timestamp or iso(a.created_ns), "details": a.custom_details}}
        return {"id": a.id, "type": "alert", "summary": a.summary, "status": a.status, "alert_key": a.dedup_key,
                "severity": a.severity, "created_at": iso(a.created_ns), "resolved_at": iso(a.resolved_ns),
                "self": f"{self.base}/incidents/{a.incident_id}/alerts/{a.id}",
                "html_url": f"{self.base}/incidents/{a.incident_id}/alerts/{a.id}",
                "service": self.ref("service", a.service_id, svc_name),
                "incident": self.ref("incident", a.incident_id), "suppressed": False, "body": body}

    def note(self, n: Note, names: dict[str, str]) -> dict[str, Any]:
        return {"id": n.id, "content": n.content, "created_at": iso(n.created_ns),
                "user": self.ref("user", n.user_id, names.get(n.user_id, n.user_id)) if n.user_id else None}

    def log_entry(self, e: LogEntry, incident_id: str, names: dict[str, str]) -> dict[str, Any]:
        return {"id": e.id, "type": e.type, "summary": e.summary, "created_at": iso(e.created_ns),
                "self": f"{self.base}/log_entries/{e.id}", "html_url": None,
                "agent": self._agent(e.agent, names) if e.agent else None,
                "channel": {"type": e.channel, **({"details": e.details} if e.details else {})},
                "incident": self.ref("incident", incident_id),
                "assignees": [self.ref("user", u, names.get(u, u)) for u in e.assignees]}

    def change_event(self, c: ChangeEvent, record: ChangeRecord | None = None) -> dict[str, Any]:
        """The change event; with its ITSM ``record``: ``change_type``, ``change_type_reason``, ``incidents``."""
        itsm: dict[str, Any] = {} if record is None else {
            "change_type": record.type, "change_type_reason": record.reason, "incidents": record.incidents}
        sid = c.details.get("pagerduty_service_id") if isinstance(c.details, dict) else None
        return {"id": c.id, "type": "change_event", "summary": c.summary, "timestamp": iso(c.ts_ns),
                "source": c.source, "kind": c.kind, "service": c.service,
                "services": [self.ref("service", sid, c.service)] if sid else [],
                "custom_details": c.details.get("custom_details", c.details) if isinstance(c.details, dict)
                else c.details, "links": [{"href": h, "text": h} for h in c.links], "who": c.who, **itsm}
