"""Watch streams over HTTP: one JSON event per line, as kube-apiserver writes them.

``{"type": "ADDED|MODIFIED|DELETED|BOOKMARK|ERROR", "object": ...}``; objects
are Tables when the client asked for them. A stream ends at
``timeoutSeconds`` (the server's default otherwise), when the client goes
away (checked every second while idle) or when the API stops. An expired
version arrives as an ``ERROR`` event holding a 410 ``Expired`` Status.
Bookmarks (``allowWatchBookmarks``) carry a revision only once every event up
to it has been sent: the revision (the watch cache's, else the store's) seen
one idle second earlier.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from pitwall.core.errors import PitwallError
from pitwall.kube.errors import BadRequest, status_object
from pitwall.kube.http import truthy, wants_table
from pitwall.kube.meta import meta
from pitwall.kube.registry import ResourceType
from pitwall.kube.selectors import FieldSelector, LabelSelector
from pitwall.kube.tables import table

if TYPE_CHECKING:
    from pitwall.kube.server import KubeAPI

__all__ = ["watch_response"]

Obj = dict[str, Any]
POLL_S = 1.0  # how often an idle watch checks its client and may send a bookmark
QUEUE = 1000


async def watch_response(api: KubeAPI, request: Request, rt: ResourceType, namespace: str) -> Response:
    q = request.query_params
    as_table = wants_table(request)
    include = q.get("includeObject", "Metadata")
    bookmarks = truthy(q.get("allowWatchBookmarks")) if "allowWatchBookmarks" in q else False
    try:
        timeout = float(q.get("timeoutSeconds") or api.watch_timeout_s)
    except ValueError:
        raise BadRequest(f"timeoutSeconds: Invalid value: {q.get('timeoutSeconds')!r}") from None
    LabelSelector.parse(q.get("labelSelector"))  # a bad selector is a plain 400, before streaming
    FieldSelector.parse(q.get("fieldSelector"), rt.kind)
    send_initial = truthy(q.get("sendInitialEvents")) if "sendInitialEvents" in q else None
    events = api.resources.watch(rt, namespace, resource_version=q.get("resourceVersion") or "",
                                 label_selector=q.get("labelSelector"), field_selector=q.get("fieldSelector"),
                                 send_initial=send_initial, shared=True)
    with_columns = [True]

    def frame(typ: str, obj: Obj, raw: bytes | None = None) -> bytes:
        if raw is not None and not as_table:  # the object's cached JSON, spliced: no encoding per watcher
            return b'{"type":"' + typ.encode() + b'","object":' + raw + b"}\n"
        if as_table and typ not in ("BOOKMARK", "ERROR"):
            obj = table(rt, [obj], include_object=include, resource_version=str(meta(obj).get("resourceVersion", "")),
                        with_columns=with_columns[0])
            with_columns[0] = False
        return orjson.dumps({"type": typ, "object": obj}, option=orjson.OPT_NON_STR_KEYS) + b"\n"

    async def stream() -> AsyncIterator[bytes]:
        queue: asyncio.Queue[tuple[str, Obj, bytes | None] | None] = asyncio.Queue(maxsize=QUEUE)

        async def pump() -> None:
            try:
                ev = await anext(events, None)
                while ev is not None:
                    await queue.put((ev.type, ev.object, ev.raw))
                    ev = await anext(events, None)
            except PitwallError as e:
                await queue.put(("ERROR", status_object(e), None))
            finally:
                await queue.put(None)

        task = asyncio.create_task(pump(), name="kube-watch")
        api.active_watches += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        next_bookmark = loop.time() + api.bookmark_interval_s
        sent_rv = 0
        idle_rev = 0  # the store's revision at the last idle tick (0: something arrived since)
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    return
                try:
                    item = await asyncio.wait_for(queue.get(), min(left, POLL_S))
                except TimeoutError:
                    if await request.is_disconnected() or api.closing:
                        return
                    if bookmarks and idle_rev > sent_rv and loop.time() >= next_bookmark:
                        next_bookmark = loop.time() + api.bookmark_interval_s
                        sent_rv = idle_rev
                        yield frame("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version,
                                                 "metadata": {"resourceVersion": str(idle_rev)}})
                    idle_rev = await _revision(api)
                    continue
                idle_rev = 0
                if item is None:
                    return
                typ, obj, raw = item
                if typ == "BOOKMARK" and not bookmarks:
                    continue
                with contextlib.suppress(ValueError):
                    sent_rv = max(sent_rv, int(meta(obj).get("resourceVersion") or 0))
                yield frame(typ, obj, raw)
        finally:
            api.active_watches -= 1
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            with contextlib.suppress(BaseException):
                await events.aclose()  # type: ignore[attr-defined]

    return StreamingResponse(stream(), media_type="application/json",
                             headers={"Cache-Control": "no-cache, private", "X-Content-Type-Options": "nosniff"})


async def _revision(api: KubeAPI) -> int:
    """The revision every event up to which has reached this stream's source: the watch cache's (no store
    read per idle watcher and second), else the store's."""
    wc = api.watch_cache
    if wc is not None and wc.ready:
        return wc.revision
    return await api.store.revision()
