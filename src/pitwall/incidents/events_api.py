"""``POST /v2/enqueue`` and ``POST /v2/change/enqueue``: PagerDuty's Events API v2 on pitwall's port.

Answers as PagerDuty does: 202 ``{"status": "success", "message": "Event
processed", "dedup_key": ...}``; 400 ``invalid event`` listing each problem
(an unknown routing key is ``Invalid routing key``); 429 ``throttle event``
when a routing key sends more than ``incidents.events_per_minute``. With
``auth_tokens`` set, senders also need a token with the ``write`` scope (as a
bearer token), like every other write to pitwall.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from pitwall.core.body import BodyLimits, read_body
from pitwall.core.http_errors import error_router
from pitwall.core.limits import InflightBudget
from pitwall.incidents.errors import InvalidEvent, Throttled
from pitwall.incidents.events import parse_change_event, parse_event
from pitwall.incidents.service import IncidentService

__all__ = ["EVENT_PATHS", "EventsLimiter", "events_router"]

EVENT_PATHS = frozenset({"/v2/enqueue", "/v2/change/enqueue"})
MAX_EVENT_BYTES = 512 * 1024  # PagerDuty's limit on one event
_MAX_KEYS = 10_000  # routing keys whose buckets are remembered


class EventsLimiter:
    """A token bucket per routing key (``per_minute`` events, refilled continuously)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        tokens, at = self.buckets.pop(key, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - at) * self.per_minute / 60.0)
        if tokens < 1.0:
            self.buckets[key] = (tokens, now)
            raise Throttled("Requests for this service are arriving too quickly.  Please retry later.",
                            retry_after=(1.0 - tokens) * 60.0 / self.per_minute)
        self.buckets[key] = (tokens - 1.0, now)
        while len(self.buckets) > _MAX_KEYS:
            self.buckets.popitem(last=False)


async def _json(request: Request, budget: InflightBudget) -> Any:
    async with read_body(request, BodyLimits(MAX_EVENT_BYTES, MAX_EVENT_BYTES), budget) as body:
        try:
            return orjson.loads(body.decoded())
        except orjson.JSONDecodeError:
            raise InvalidEvent(["Event object is not valid JSON"]) from None


def _ok(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), 202, media_type="application/json")


def events_router(service: IncidentService, limiter: EventsLimiter, budget: InflightBudget) -> APIRouter:
    r = error_router("pagerduty_events", tags=["pagerduty-events"])

    @r.post("/v2/enqueue", status_code=202)
    async def enqueue(request: Request) -> Response:
        ev = parse_event(await _json(request, budget))
        limiter.take(ev.routing_key)
        dedup = await service.handle_event(ev)
        return _ok({"status": "success", "message": "Event processed", "dedup_key": dedup})

    @r.post("/v2/change/enqueue", status_code=202)
    async def change_enqueue(request: Request) -> Response:
        ev = parse_change_event(await _json(request, budget))
        limiter.take(ev.routing_key)
        await service.record_change(ev)
        return _ok({"status": "success", "message": "Change event processed"})

    return r
