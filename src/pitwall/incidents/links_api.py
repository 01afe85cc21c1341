"""``/incident-actions/acknowledge`` and ``/incident-actions/resolve``: the links in pages, as small HTML pages.

``GET`` never changes anything (mail scanners and Slack's unfurler fetch links
before a person does): it shows the incident, its status and one button. The
button ``POST``s the token back in the form body, and that performs the action
as the paged user, once (``IncidentService.act_once``): a second click, or
acknowledging a resolved incident, says what the state is, with 200. The token
is the credential (``core.auth.ACTION_LINK_PATHS`` lets these two paths through
without a pitwall token or session), so there is no cookie and no CSRF field.
Bad, tampered or misused links get 403, expired ones 410, a missing incident
404, all as the same page. Works without JavaScript; the page carries the UI's
colours inline, since the UI's stylesheet needs a credential when auth is on.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from jinja2 import Environment

from pitwall.core.body import read_form
from pitwall.core.errors import PitwallError
from pitwall.core.http_errors import error_router, status_of
from pitwall.incidents.errors import BadLink
from pitwall.incidents.links import ACTIONS, LINK_PATHS, Action, ActionLinks, LinkClaims
from pitwall.incidents.model import Incident, Service, User
from pitwall.incidents.service import IncidentService

__all__ = ["MAX_FORM_BYTES", "action_links_router"]

MAX_FORM_BYTES = 4096  # the form holds one token (~200 bytes)
_DONE = {"acknowledge": "acknowledged", "resolve": "resolved"}
_HEADERS = {
    "Cache-Control": "no-store",  # the page embeds the token
    "Referrer-Policy": "no-referrer",  # nor may a followed link carry it elsewhere
    "X-Robots-Tag": "noindex",
    # One button that acts: no framing (click-jacking), no scripts, forms post only back here.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer"><meta name="robots" content="noindex">
<title>{{ heading }} · pitwall</title>
<style>
:root { --bg: #fff; --fg: #1b1f24; --muted: #5f6b7a; --line: #d8dee6; --panel: #f5f7fa; --accent: #1f6feb;
  --ok: #1a7f37; --warn: #9a6700; --err: #cf222e; --code: #f0f3f6; color-scheme: light dark; }
@media (prefers-color-scheme: dark) { :root { --bg: #0f1216; --fg: #e6edf3; --muted: #9aa7b4; --line: #2d333b;
  --panel: #161b22; --accent: #58a6ff; --ok: #3fb950; --warn: #d29922; --err: #f85149; --code: #1b2129; } }
body { margin: 0; background: var(--bg); color: var(--fg); font: 14px/1.45 system-ui, -apple-system, "Segoe UI",
  sans-serif; }
header { padding: 8px 16px; border-bottom: 1px solid var(--line); background: var(--panel); font-weight: 700;
  font-size: 16px; }
main { padding: 16px; max-width: 640px; } a { color: var(--accent); } h1 { font-size: 20px; }
.banner { padding: 8px 12px; border-radius: 6px; border: 1px solid var(--line); margin: 8px 0; }
.banner.err { border-color: var(--err); color: var(--err); } .banner.info { background: var(--panel); }
.banner.ok { border-color: var(--ok); color: var(--ok); }
table { border-collapse: collapse; margin: 12px 0; } th { text-align: left; color: var(--muted); font-weight: 400;
  padding: 2px 16px 2px 0; } td { padding: 2px 0; }
.pill { border-radius: 10px; padding: 0 8px; font-size: 12px; background: var(--code); }
.triggered { color: var(--err); } .acknowledged { color: var(--warn); } .resolved { color: var(--ok); }
button { font: inherit; cursor: pointer; border-radius: 6px; padding: 8px 16px; font-weight: 600;
  background: var(--accent); color: #fff; border: 1px solid var(--accent); }
</style></head>
<body><header>pitwall</header>
<main id="main">
<h1>{{ heading }}</h1>
{% if message %}<div class="banner {{ tone }}" role="{{ 'alert' if tone == 'err' else 'status' }}" \
data-testid="message">{{ message }}</div>{% endif %}
{% if inc %}<table data-testid="incident">
<tr><th>Incident</th><td>#{{ inc.number }} {{ inc.title }}</td></tr>
<tr><th>Status</th><td><span class="pill {{ inc.status }}" data-testid="status">{{ inc.status }}</span></td></tr>
<tr><th>Service</th><td>{{ service }}</td></tr>
<tr><th>Urgency</th><td>{{ inc.urgency }}</td></tr>
<tr><th>Acting as</th><td>{{ user }}</td></tr>
</table>{% endif %}
{% if button %}<form method="post" action="{{ action }}"><input type="hidden" name="token" value="{{ token }}">
<button type="submit" data-testid="act">{{ button }}</button></form>{% endif %}
{% if incident_url %}<p><a href="{{ incident_url }}">Open the incident in pitwall</a></p>{% endif %}
</main></body></html>
"""
_TEMPLATE = Environment(autoescape=True).from_string(_PAGE)


def _page(status: int = 200, **ctx: Any) -> Response:
    return Response(_TEMPLATE.render(**ctx), status, headers=_HEADERS, media_type="text/html; charset=utf-8")


def _error_page(err: PitwallError) -> Response:
    """Every error of these routes (bad link, expired, no such incident, body too large) as the same page."""
    status = status_of(err)
    heading = {403: "This link does not work", 410: "This link has expired",
               404: "No such incident"}.get(status, "Something went wrong")
    return _page(status, heading=heading, message=err.message, tone="err")


def action_links_router(service: IncidentService, links: ActionLinks) -> APIRouter:
    r = error_router("html", render_error=_error_page, tags=["incidents"], include_in_schema=False)
    store = service.store

    async def context(claims: LinkClaims) -> tuple[Incident, User, dict[str, Any]]:
        """The incident and user a valid link names (both may have gone since it was sent)."""
        inc = await service.require(claims.incident_id)
        user = await store.get(User, claims.user_id)
        if user is None:
            raise BadLink(f"The user this link was sent to ({claims.user_id}) no longer exists.")
        svc = await store.get(Service, inc.service_id)
        return inc, user, {"inc": inc, "user": user.name, "service": svc.name if svc else inc.service_id,
                           "incident_url": links.incident_url(inc.id)}

    def add(action: Action) -> None:
        done = _DONE[action]
        verb = action.capitalize()

        async def confirm(request: Request) -> Response:
            claims = await links.check(request.query_params.get("token", ""), action)
            inc, _, ctx = await context(claims)
            if inc.status == "resolved" or inc.status == done:
                return _page(heading=f"Already {inc.status}", message=f"The incident is already {inc.status}; "
                             "nothing to do.", tone="info", **ctx)
            return _page(heading=f"{verb} incident #{inc.number}?", button=verb, action=action,
                         token=request.query_params.get("token", ""), **ctx)

        async def act(request: Request) -> Response:
            form = await read_form(request, MAX_FORM_BYTES)
            token = form.get("token")
            claims = await links.check(token if isinstance(token, str) else "", action)
            _, user, ctx = await context(claims)
            inc, acted = await service.act_once(claims.incident_id, action, user.id, channel=claims.channel,
                                                details={"contact_method": claims.contact_id, "link": action})
            ctx["inc"] = inc
            if acted:
                return _page(heading=f"{done.capitalize()}", message=f"Incident #{inc.number} {done} by "
                             f"{user.name}.", tone="ok", **ctx)
            return _page(heading=f"Already {inc.status}", message=f"The incident was already {inc.status}: "
                         "nothing changed.", tone="info", **ctx)

        r.add_api_route(LINK_PATHS[action], confirm, methods=["GET", "HEAD"])
        r.add_api_route(LINK_PATHS[action], act, methods=["POST"])

    for a in ACTIONS:
        add(a)
    return r
