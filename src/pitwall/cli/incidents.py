"""``pitwall oncall`` and ``pitwall incident postmortem ID``: the on-call view and the postmortem draft.

Both read the server's PagerDuty-compatible REST API (``/pagerduty/...``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pitwall.cli._client import DEFAULT_SERVER, ServerOpt, TokenOpt, call, fail

incident_app = typer.Typer(help="Incidents (PagerDuty-compatible).", no_args_is_help=True)


def _get(server: str, token: str | None, path: str, params: list[tuple[str, str]] | None = None) -> Any:
    resp = call("pitwall", "GET", server, "/pagerduty" + path, token=token, timeout=30, params=params or [])
    if resp.status_code >= 400:
        try:
            err = resp.json().get("error", {})
            msg = "; ".join([err.get("message", ""), *err.get("errors", [])])
        except (ValueError, AttributeError):
            msg = resp.text.strip()
        fail("pitwall", f"HTTP {resp.status_code}: {msg}")
    return resp


def _schedule_id(server: str, token: str | None, name_or_id: str) -> str:
    schedules = _get(server, token, "/schedules", [("limit", "100")]).json()["schedules"]
    for s in schedules:
        if name_or_id in (s["id"], s["name"]):
            return str(s["id"])
    fail("pitwall", f"no schedule named {name_or_id!r}")


def oncall(
    schedule: Annotated[str | None, typer.Option("--schedule", help="Schedule name or id (default: all).")] = None,
    at: Annotated[str | None, typer.Option("--at", help="ISO 8601 time (default: now).")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Who is on call, per escalation policy and level, now or at ``--at``."""
    params: list[tuple[str, str]] = [("limit", "100")]
    if schedule:
        params.append(("schedule_ids[]", _schedule_id(server, token, schedule)))
    if at:
        params.append(("since", at))
    entries: list[dict[str, Any]] = []
    offset = 0
    while True:
        body = _get(server, token, "/oncalls", [*params, ("offset", str(offset))]).json()
        entries += body["oncalls"]
        if not body["more"]:
            break
        offset += body["limit"]
    if output == "json":
        typer.echo(json.dumps(entries, indent=2))
        return
    if schedule and not entries:
        fail("pitwall", "nobody is on call in that schedule at that time")
    table = Table(box=None)
    for title in ("ESCALATION POLICY", "LEVEL", "SCHEDULE", "USER", "FROM", "UNTIL"):
        table.add_column(title, overflow="fold")  # narrow terminals wrap times rather than cut them
    for e in entries:
        table.add_row(e["escalation_policy"]["summary"], str(e["escalation_level"]),
                      (e.get("schedule") or {}).get("summary", "-"), e["user"]["summary"],
                      e.get("start") or "-", e.get("end") or "-")
    Console().print(table)


@incident_app.command("postmortem", help="Print a Markdown postmortem draft of an incident.")
def postmortem(
    incident_id: Annotated[str, typer.Argument(help="Incident id (e.g. Q0000001) or number.")],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    if incident_id.isdigit():  # an incident number: ids are Q + the number in 7 digits
        incident_id = f"Q{int(incident_id):07d}"
    typer.echo(_get(server, token, f"/incidents/{incident_id}/postmortem").text, nl=False)


@incident_app.command("show", help="Show an incident: status, alerts and links to the service's signals.")
def show(
    incident_id: Annotated[str, typer.Argument(help="Incident id (e.g. Q0000001) or number.")],
    output: Annotated[str, typer.Option("--output", "-o", help="text or json.")] = "text",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    if incident_id.isdigit():
        incident_id = f"Q{int(incident_id):07d}"
    inc = _get(server, token, f"/incidents/{incident_id}").json()["incident"]
    alerts = _get(server, token, f"/incidents/{incident_id}/alerts", [("limit", "100")]).json()["alerts"]
    if output == "json":
        typer.echo(json.dumps({"incident": inc, "alerts": alerts}, indent=2))
        return
    counts = inc["alert_counts"]
    lines = [f"{inc['summary']}",
             f"  status:   {inc['status']} ({inc['urgency']} urgency), service {inc['service']['summary']}",
             f"  created:  {inc['created_at']}" + (f", resolved {inc['resolved_at']}" if inc["resolved_at"] else ""),
             f"  alerts:   {counts['all']} ({counts['triggered']} triggered, {counts['resolved']} resolved)"]
    lines += [f"    {a['status']:<9} {a['alert_key']}  {a['summary']}" for a in alerts]
    links = (inc.get("pitwall") or {}).get("links") or []
    if links:
        lines.append(f"  signals of {inc['pitwall']['service']}:")
        lines += [f"    {link['text']}\n      {link['href']}" for link in links]
    typer.echo("\n".join(lines))
