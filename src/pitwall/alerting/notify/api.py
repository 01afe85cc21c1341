"""Alertmanager API v2 under ``/api/v2``: alerts, alert groups, silences, receivers, status.

Shapes follow Alertmanager's OpenAPI spec (``api/v2/openapi.yaml``); errors
are JSON strings, as the spec declares. Handlers parse parameters, call the
pipeline and write the response; they build no error bodies themselves.

Bodies are JSON only, as the spec's ``consumes`` says: any other (or no)
Content-Type is a 415, worded as go-openapi words it, which also keeps a
browser's cross-site ``text/plain`` form from posting alerts. They are read
within the request limits (``core.body``) and parsed in a worker thread.
"""

from __future__ import annotations

import json
import platform
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from pitwall import __version__
from pitwall.alerting.model import Alert
from pitwall.alerting.notify.alerts import StoredAlert, sort_alerts
from pitwall.alerting.notify.matchers import Matcher, MatcherError, MatchType, parse_matchers
from pitwall.alerting.notify.pipeline import NotificationPipeline
from pitwall.alerting.notify.silences import Silence, filter_labels_match
from pitwall.core import regex
from pitwall.core.body import BodyLimits, read_body, require_media
from pitwall.core.errors import BadData
from pitwall.core.http_errors import error_router
from pitwall.core.jsonchunks import loads as load_json
from pitwall.core.limits import InflightBudget

__all__ = ["api_time", "parse_api_time", "router"]


def api_time(t: datetime | None) -> str:
    """go-openapi's strfmt.DateTime form: RFC 3339 with milliseconds."""
    if t is None:
        return "0001-01-01T00:00:00.000Z"
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def parse_api_time(v: Any, what: str) -> datetime | None:
    """RFC 3339 with any number of fraction digits (Go emits nanoseconds); zero time reads as unset."""
    if v is None or v == "":
        return None
    m = _TIME.match(v) if isinstance(v, str) else None
    if m is None:
        raise BadData(f"{what} in body must be of type date-time: {json.dumps(v)}")
    frac = (m.group(3) or ".0")[1:7].ljust(6, "0")
    tz = "+00:00" if m.group(4) in ("Z", "z") else m.group(4)
    t = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}.{frac}{tz}")
    if t.year <= 1:
        return None
    return t.astimezone(UTC)


def _bool(request: Request, name: str, default: bool = True) -> bool:
    v = request.query_params.get(name)
    if v is None:
        return default
    if v.lower() in ("true", "1"):
        return True
    if v.lower() in ("false", "0"):
        return False
    raise BadData(f"{name} in query must be of type boolean: \"{v}\"")


def _filters(request: Request) -> list[Matcher]:
    out: list[Matcher] = []
    for f in request.query_params.getlist("filter"):
        try:
            out.extend(parse_matchers(f))
        except MatcherError as e:
            raise BadData(str(e)) from None
    return out


def _receiver_re(request: Request) -> regex.Regex | None:
    v = request.query_params.get("receiver")
    if not v:
        return None
    try:
        return regex.compile(v, anchored=True)
    except regex.RegexError as e:
        raise BadData(f"failed to parse receiver param: {e}") from None


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, separators=(",", ":")), status, media_type="application/json")


def _labelset(v: Any, what: str) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise BadData(f"{what} in body must be of type object of strings")
    return {str(k): x for k, x in v.items()}


class _Views:
    """Renders pipeline state as API v2 documents."""

    def __init__(self, p: NotificationPipeline) -> None:
        self.p = p

    def alert(self, a: StoredAlert, now: datetime) -> dict[str, Any]:
        st = self.p.status_of(a.labels, now)
        receivers = [r.receiver for r in self.p.rt.route.match(a.labels)]
        out: dict[str, Any] = {
            "annotations": a.annotations, "endsAt": api_time(a.ends_at), "fingerprint": a.fingerprint,
            "receivers": [{"name": r} for r in receivers], "startsAt": api_time(a.starts_at),
            "status": {"inhibitedBy": st.inhibited_by, "silencedBy": st.silenced_by, "mutedBy": st.muted_by,
                       "state": st.state},
            "updatedAt": api_time(a.updated_at), "labels": a.labels,
        }
        if a.generator_url:
            out["generatorURL"] = a.generator_url
        return out

    def keep(self, a: StoredAlert, now: datetime, filters: list[Matcher], flags: dict[str, bool]) -> bool:
        if a.ends_at is not None and a.ends_at < now:
            return False
        st = self.p.status_of(a.labels, now)
        if not flags.get("active", True) and st.state == "active":
            return False
        if not flags.get("silenced", True) and st.silenced_by:
            return False
        if not flags.get("inhibited", True) and st.inhibited_by:
            return False
        if not flags.get("muted", True) and st.muted_by:
            return False
        return filter_labels_match(filters, a.labels)

    @staticmethod
    def silence(s: Silence, now: datetime) -> dict[str, Any]:
        return {
            "id": s.id, "status": {"state": s.state(now)}, "updatedAt": api_time(s.updated_at),
            "matchers": [{"name": m.name, "value": m.value, "isRegex": m.is_regex, "isEqual": m.is_equal}
                         for m in s.matchers],
            "startsAt": api_time(s.starts_at), "endsAt": api_time(s.ends_at), "createdBy": s.created_by,
            "comment": s.comment, "annotations": s.annotations,
        }


def _postable_alert(i: int, doc: Any) -> Alert:
    if not isinstance(doc, dict):
        raise BadData(f"{i} in body must be of type object")
    if "labels" not in doc:
        raise BadData(f"{i}.labels in body is required")
    return Alert(
        labels=_labelset(doc["labels"], f"{i}.labels"),
        annotations=_labelset(doc.get("annotations"), f"{i}.annotations"),
        starts_at=parse_api_time(doc.get("startsAt"), f"{i}.startsAt"),
        ends_at=parse_api_time(doc.get("endsAt"), f"{i}.endsAt"),
        generator_url=str(doc.get("generatorURL") or ""),
    )


def _postable_silence(doc: Any) -> Silence:
    if not isinstance(doc, dict):
        raise BadData("silence in body must be of type object")
    for key in ("matchers", "startsAt", "endsAt", "createdBy", "comment"):
        if key not in doc:
            raise BadData(f"{key} in body is required")
    ms = doc["matchers"]
    if not isinstance(ms, list) or not ms:
        raise BadData("matchers in body should have at least 1 items")
    matchers: list[Matcher] = []
    for j, m in enumerate(ms):
        if not isinstance(m, dict) or not {"name", "value", "isRegex"} <= m.keys():
            raise BadData(f"matchers.{j} in body must have name, value and isRegex")
        is_regex, is_equal = bool(m["isRegex"]), bool(m.get("isEqual", True))
        op: MatchType = ("=~" if is_equal else "!~") if is_regex else ("=" if is_equal else "!=")
        try:
            matchers.append(Matcher.create(str(m["name"]), op, str(m["value"])))
        except MatcherError as e:
            raise BadData(f'invalid regular expression "{m["value"]}": {e}') from None
    starts = parse_api_time(doc["startsAt"], "startsAt")
    ends = parse_api_time(doc["endsAt"], "endsAt")
    if starts is None or ends is None:
        raise BadData("startsAt and endsAt in body are required")
    return Silence(id=str(doc.get("id") or ""), matchers=tuple(matchers), starts_at=starts, ends_at=ends,
                   created_by=str(doc["createdBy"]), comment=str(doc["comment"]),
                   annotations=_labelset(doc.get("annotations"), "annotations"))


def _unsupported(content_type: str) -> str:
    media = content_type.split(";", 1)[0].strip().lower() or "application/octet-stream"
    return f"unsupported media type {json.dumps(media)}, only [application/json] are allowed"


def _parse(data: bytes, build: Callable[[Any], Any]) -> Any:
    try:
        doc = load_json(data)
    except (ValueError, RecursionError) as e:
        raise BadData(f"parsing body failed: {e}") from None
    return build(doc)


def _alerts(doc: Any) -> list[Alert]:
    if not isinstance(doc, list):
        raise BadData("alerts in body must be of type array")
    return [_postable_alert(i, a) for i, a in enumerate(doc)]


def router(get: Callable[[], NotificationPipeline], limits: BodyLimits, budget: InflightBudget) -> APIRouter:
    """The ``/api/v2`` router; ``get`` returns the live pipeline (it survives reloads)."""
    r = error_router("alertmanager", prefix="/api/v2", tags=["alertmanager"])

    @asynccontextmanager
    async def body(request: Request, build: Callable[[Any], Any]) -> AsyncIterator[Any]:
        """The JSON body turned into model objects by ``build`` (in a worker thread), held in the budget."""
        if request.headers.get("content-length") != "0":  # go-openapi checks the type of a body, if any
            require_media(request, ("application/json",), _unsupported)
        async with read_body(request, limits, budget) as b:
            yield await b.in_thread(_parse, b.data, build)

    @r.get("/status")
    async def status() -> Response:
        p = get()
        return _json({
            "cluster": {"status": "disabled", "peers": []},
            "versionInfo": {"version": __version__, "revision": "", "branch": "", "buildUser": "pitwall",
                            "buildDate": "", "goVersion": f"python{platform.python_version()}"},
            "config": {"original": p.config.to_yaml()},
            "uptime": api_time(p.started_at),
        })

    @r.get("/receivers")
    async def receivers() -> Response:
        return _json([{"name": rc.name} for rc in get().config.config.receivers])

    @r.get("/alerts")
    async def get_alerts(request: Request) -> Response:
        p = get()
        v = _Views(p)
        now = datetime.now(UTC)
        flags = {k: _bool(request, k) for k in ("active", "silenced", "inhibited", "unprocessed")}
        filters, rre = _filters(request), _receiver_re(request)
        out = []
        for a in sorted(p.alerts.list(), key=lambda a: a.fingerprint):
            if not v.keep(a, now, filters, flags):
                continue
            if rre is not None and not any(rre.matches(r.receiver) for r in p.rt.route.match(a.labels)):
                continue
            out.append(v.alert(a, now))
        return _json(out)

    @r.post("/alerts")
    async def post_alerts(request: Request) -> Response:
        async with body(request, _alerts) as alerts:
            await get().receive(alerts)
        return Response(status_code=200)

    @r.get("/alerts/groups")
    async def alert_groups(request: Request) -> Response:
        p = get()
        v = _Views(p)
        now = datetime.now(UTC)
        flags = {k: _bool(request, k) for k in ("active", "silenced", "inhibited", "muted")}
        filters, rre = _filters(request), _receiver_re(request)
        out = []
        for g in p.rt.dispatcher.snapshot():
            if rre is not None and not rre.matches(g.route.receiver):
                continue
            alerts = [a for a in g.alerts.values() if v.keep(a, now, filters, flags)]
            if not alerts:
                continue
            out.append({"labels": g.labels, "routeLabels": g.route.route_labels(),
                        "receiver": {"name": g.route.receiver},
                        "alerts": [v.alert(a, now) for a in sort_alerts(alerts)]})
        return _json(out)

    @r.get("/silences")
    async def get_silences(request: Request) -> Response:
        now = datetime.now(UTC)
        return _json([_Views.silence(s, now) for s in get().silences.query(_filters(request))])

    @r.post("/silences")
    async def post_silences(request: Request) -> Response:
        async with body(request, _postable_silence) as s:
            if s.starts_at >= s.ends_at:
                raise BadData("Failed to create silence: start time must be before end time")
            if s.ends_at < datetime.now(UTC):
                raise BadData("Failed to create silence: end time can't be in the past")
            return _json({"silenceID": get().silences.set(s)})

    @r.get("/silence/{silence_id}")
    async def get_silence(silence_id: str) -> Response:
        return _json(_Views.silence(get().silences.get(silence_id), datetime.now(UTC)))

    @r.delete("/silence/{silence_id}")
    async def delete_silence(silence_id: str) -> Response:
        get().silences.expire(silence_id)
        return Response(status_code=200)

    return r
