"""``pitwall alerts [FILTER...]`` and ``pitwall silence add|query|expire``: Alertmanager API v2 from the terminal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from pitwall.cli._client import DEFAULT_SERVER, ServerOpt, TokenOpt, call, fail
from pitwall.cli._output import OutputOpt, emit
from pitwall.core.durations import parse_duration_ms

silence_app = typer.Typer(help="Add, query and expire silences.", no_args_is_help=True)


def _call(server: str, token: str | None, method: str, path: str, **kw: Any) -> Any:
    resp = call("pitwall", method, server, "/api/v2" + path, token=token, timeout=30, **kw)
    if resp.status_code >= 400:
        try:
            msg = resp.json()
        except ValueError:
            msg = resp.text.strip()
        fail("pitwall", f"HTTP {resp.status_code}: {msg}")
    return resp.json() if resp.content else None


def _check_filters(filters: list[str]) -> None:
    from pitwall.alerting.notify.matchers import MatcherError, parse_matchers

    for f in filters:
        try:
            parse_matchers(f)
        except MatcherError as e:
            fail("pitwall", str(e), 2)


def _labels(d: dict[str, str]) -> str:
    return ", ".join(f'{k}="{v}"' for k, v in sorted(d.items()))


def alerts(
    filters: Annotated[list[str] | None, typer.Argument(help='Matchers, e.g. alertname=Foo \'env=~"prod|stag"\'.')] = None,
    silenced: Annotated[bool, typer.Option("--silenced", help="Include silenced alerts.")] = False,
    inhibited: Annotated[bool, typer.Option("--inhibited", help="Include inhibited alerts.")] = False,
    receiver: Annotated[str, typer.Option(help="Only alerts routed to receivers matching this regex.")] = "",
    output: OutputOpt = "table",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """List the alerts pitwall (or an Alertmanager) holds."""
    filters = filters or []
    _check_filters(filters)
    params: list[tuple[str, str]] = [("filter", f) for f in filters]
    params += [("silenced", str(silenced).lower()), ("inhibited", str(inhibited).lower())]
    if receiver:
        params.append(("receiver", receiver))
    data = _call(server, token, "GET", "/alerts", params=params)
    rows = []
    for a in data:
        labels = dict(a["labels"])
        rows.append({"alertname": labels.pop("alertname", ""), "starts": a["startsAt"],
                     "state": a["status"]["state"], "labels": _labels(labels),
                     "summary": a.get("annotations", {}).get("summary", ""),
                     "receivers": [r["name"] for r in a.get("receivers", [])], "fingerprint": a.get("fingerprint")})
    emit(rows, [("ALERTNAME", "alertname"), ("STARTS AT", "starts"), ("STATE", "state"), ("LABELS", "labels"),
                ("SUMMARY", "summary")], output, wide=[("RECEIVERS", "receivers"), ("FINGERPRINT", "fingerprint")],
         raw=data, empty="no alerts")


@silence_app.command("add")
def silence_add(
    matchers: Annotated[list[str], typer.Argument(help="Matchers the silence applies to.")],
    comment: Annotated[str, typer.Option("--comment", "-c", help="Why.")],
    author: Annotated[str, typer.Option("--author", "-a", envvar="USER", help="Who.")] = "pitwall",
    duration: Annotated[str, typer.Option("--duration", "-d", help="How long, e.g. 2h.")] = "1h",
    start: Annotated[str, typer.Option(help="RFC 3339 start (default now).")] = "",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Silence alerts matching all MATCHERS; prints the new silence id."""
    _check_filters(matchers)
    from pitwall.alerting.notify.matchers import parse_matchers

    ms = [m for text in matchers for m in parse_matchers(text)]
    begins = datetime.fromisoformat(start.replace("Z", "+00:00")) if start else datetime.now(UTC)
    ends = begins + timedelta(milliseconds=parse_duration_ms(duration))
    body = {
        "matchers": [{"name": m.name, "value": m.value, "isRegex": m.is_regex, "isEqual": m.is_equal} for m in ms],
        "startsAt": begins.isoformat(), "endsAt": ends.isoformat(), "createdBy": author, "comment": comment,
    }
    typer.echo(_call(server, token, "POST", "/silences", json=body)["silenceID"])


@silence_app.command("query")
def silence_query(
    filters: Annotated[list[str] | None, typer.Argument(help="Matchers the silences must carry.")] = None,
    expired: Annotated[bool, typer.Option("--expired", help="Show expired silences instead of current ones.")] = False,
    output: OutputOpt = "table",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """List silences (active and pending, or expired with --expired)."""
    filters = filters or []
    _check_filters(filters)
    data = _call(server, token, "GET", "/silences", params=[("filter", f) for f in filters])
    data = [s for s in data if (s["status"]["state"] == "expired") == expired]
    rows = [{"id": s["id"], "matchers": " ".join(
                f'{m["name"]}{"=" if m.get("isEqual", True) else "!"}{"~" if m["isRegex"] else ""}"{m["value"]}"'
                for m in s["matchers"]),
             "state": s["status"]["state"], "starts": s["startsAt"], "ends": s["endsAt"], "by": s["createdBy"],
             "comment": s["comment"]} for s in data]
    emit(rows, [("ID", "id"), ("MATCHERS", "matchers"), ("STATE", "state"), ("ENDS AT", "ends"),
                ("CREATED BY", "by"), ("COMMENT", "comment")], output, wide=[("STARTS AT", "starts")],
         raw=data, empty="no silences")


@silence_app.command("expire")
def silence_expire(
    ids: Annotated[list[str], typer.Argument(help="Silence ids.")],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Expire silences now."""
    for sid in ids:
        _call(server, token, "DELETE", f"/silence/{sid}")
