"""Request parameter helpers shared by the compatibility APIs."""

from __future__ import annotations

import math
from datetime import datetime

from starlette.datastructures import MultiDict
from starlette.requests import Request

from pitwall.core.durations import parse_duration_ms
from pitwall.core.errors import BadData

TENANT_HEADER = "X-Scope-OrgID"
DEFAULT_TENANT = "default"


def tenant_of(request: Request) -> str:
    """The tenant named by ``X-Scope-OrgID`` (as Loki, Mimir and Tempo use it)."""
    t = request.headers.get(TENANT_HEADER, "").strip()
    if not t:
        return DEFAULT_TENANT
    if len(t) > 150 or any(c in t for c in "/\\\n\r") or t in (".", ".."):
        raise BadData(f"invalid tenant ID {t[:64]!r}")
    return t


async def all_params(request: Request) -> MultiDict:
    """Query string and (for POST) url-encoded form parameters together."""
    items = list(request.query_params.multi_items())
    if request.method == "POST":
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/x-www-form-urlencoded") or ctype.startswith("multipart/form-data"):
            form = await request.form()
            items.extend((k, v) for k, v in form.multi_items() if isinstance(v, str))
    return MultiDict(items)


def parse_time_ms(text: str) -> int:
    """Prometheus' time parameter: unix seconds (float) or RFC 3339."""
    try:
        f = float(text)
    except ValueError:
        pass
    else:
        if math.isnan(f) or math.isinf(f):
            raise BadData(f'cannot parse "{text}" to a valid timestamp')
        return round(f * 1000)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadData(f'cannot parse "{text}" to a valid timestamp') from None
    if dt.tzinfo is None:
        raise BadData(f'cannot parse "{text}" to a valid timestamp')
    return round(dt.timestamp() * 1000)


def parse_duration_param_ms(text: str) -> int:
    """Prometheus' duration parameter: float seconds or a duration string."""
    try:
        f = float(text)
    except ValueError:
        try:
            return parse_duration_ms(text)
        except ValueError:
            raise BadData(f'cannot parse "{text}" to a valid duration') from None
    if math.isnan(f) or math.isinf(f):
        raise BadData(f'cannot parse "{text}" to a valid duration')
    if f * 1000 > 2**62:
        raise BadData(f'cannot parse "{text}" to a valid duration. It overflows int64')
    return round(f * 1000)
