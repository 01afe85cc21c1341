"""Request parameter helpers shared by the compatibility APIs."""

from __future__ import annotations

import math
from datetime import datetime

from starlette.datastructures import MultiDict
from starlette.requests import HTTPConnection, Request

from pitwall.core.body import read_form
from pitwall.core.durations import parse_duration_ms
from pitwall.core.errors import BadData
from pitwall.core.tenancy import DEFAULT_TENANT, TENANT_HEADER, principal_of, resolve_tenant

__all__ = ["DEFAULT_TENANT", "TENANT_HEADER", "all_params", "parse_duration_param_ms", "parse_time_ms",
           "tenant_of"]


def tenant_of(conn: HTTPConnection) -> str:
    """The tenant a request or websocket acts as: the one ``X-Scope-OrgID`` names (as Loki, Mimir and
    Tempo use it), bound to its bearer token's tenants (``core.tenancy.resolve_tenant``)."""
    return resolve_tenant(principal_of(conn), conn.headers.get(TENANT_HEADER, ""))


async def all_params(request: Request) -> MultiDict:
    """Query string and (for POST) url-encoded form parameters together."""
    items = list(request.query_params.multi_items())
    if request.method == "POST":
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/x-www-form-urlencoded") or ctype.startswith("multipart/form-data"):
            form = await read_form(request)
            items.extend((k, v) for k, v in form.multi_items() if isinstance(v, str))
    return MultiDict(items)


# Query times are clamped to about 146 years either side of 1970 (2^62 ns): the engines hold times
# in int64 (nanoseconds in places), and steps and lookbacks around the bound must not overflow. A time
# out there (1e30, or client_golang's zero time.Time sent as -62135596800) still bounds an empty range.
MAX_QUERY_TIME_MS = (1 << 62) // 1_000_000


def parse_time_ms(text: str) -> int:
    """Prometheus' time parameter: unix seconds (float) or RFC 3339."""
    try:
        f = float(text)
    except ValueError:
        pass
    else:
        if math.isnan(f) or math.isinf(f):
            raise BadData(f'cannot parse "{text}" to a valid timestamp')
        return _clamp_ms(round(f * 1000))
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadData(f'cannot parse "{text}" to a valid timestamp') from None
    if dt.tzinfo is None:
        raise BadData(f'cannot parse "{text}" to a valid timestamp')
    return _clamp_ms(round(dt.timestamp() * 1000))


def _clamp_ms(ms: int) -> int:
    return max(-MAX_QUERY_TIME_MS, min(MAX_QUERY_TIME_MS, ms))


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
