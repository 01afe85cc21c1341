"""``/v1/config``: Consul's config entry endpoints (apply, read, list, delete) with blocking reads."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from pitwall.registry.api import Blocking, json_response, query_meta, read_limited, who
from pitwall.registry.blocking import ParkRules, View
from pitwall.registry.config_entries import (
    CONFIG_PREFIX,
    ConfigEntries,
    check_kind,
    entry_key,
    validate_entry,
)
from pitwall.registry.model import MAX_VALUE_BYTES, ConsulError

__all__ = ["config_routes"]


def _cas(request: Request) -> int | None:
    raw = request.query_params.get("cas")
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise ConsulError(400, f'strconv.ParseUint: parsing "{raw}": invalid syntax')
    return int(raw)


def config_routes(r: APIRouter, entries: ConfigEntries, blocking: Blocking, parks: ParkRules | None = None) -> None:
    """Adds Consul's ``/v1/config`` routes to ``r`` (the Consul router, so errors answer in Consul's text); with
    ``parks`` their held blocking reads wait in ``ParkHeldQueries``."""

    @r.put("/v1/config")
    async def apply(request: Request) -> Response:
        body = await read_limited(request, MAX_VALUE_BYTES, lambda n: ConsulError(
            413, f"Request body({n} bytes) too large, max size: {MAX_VALUE_BYTES} bytes"))
        try:
            raw: Any = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise ConsulError(400, f"Request decoding failed: {e}") from None
        entry = validate_entry(raw)
        return json_response(await entries.put(entry, _cas(request), who=who(request)))

    def view(path: str, q: Any) -> View:
        """A config read's watched prefix and read (the route's and ``ParkHeldQueries``')."""
        parts = path.split("/", 1)
        kind = parts[0]
        if len(parts) == 2:
            name = parts[1]
            check_kind(kind)
            return (entry_key(kind, name),), lambda: entries.get(kind, name)
        if not kind:
            raise ConsulError(404, "Must provide either a kind or both kind and name")
        check_kind(kind)
        return (f"{CONFIG_PREFIX}{kind}/",), lambda: entries.listing(kind)
    if parks is not None:
        parks.add("/v1/config/", view, rest=True)

    @r.get("/v1/config/{path:path}")
    async def get(path: str, request: Request) -> Response:
        prefixes, read = view(path, request.query_params)
        parts = path.split("/", 1)
        if len(parts) == 2:
            kind, name = parts

            def one(e: Any, idx: int) -> Response:
                if e is None:
                    return Response(f'Config entry not found for "{kind}" / "{name}"\n'.encode(), 404,
                                    query_meta(idx), media_type="text/plain")
                return json_response(e, idx)
            return await blocking(request, prefixes, read, one)
        return await blocking(request, prefixes, read, json_response)

    @r.delete("/v1/config/{path:path}")
    async def delete(path: str, request: Request) -> Response:
        parts = path.split("/", 1)
        if len(parts) != 2 or not parts[1]:
            raise ConsulError(404, "Must provide both a kind and name to delete")
        cas = _cas(request)
        ok = await entries.delete(parts[0], parts[1], cas, who=who(request))
        return json_response(ok if cas is not None else {})
