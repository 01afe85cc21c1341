"""``GET /api/v1/namespaces/<ns>/pods/<name>/log``: what ``kubectl logs`` reads.

Parameters as kube-apiserver takes them: ``container``, ``follow``,
``previous``, ``tailLines``, ``sinceSeconds``, ``sinceTime``,
``timestamps``, ``limitBytes``. Lines come from the node's in-memory buffer
of each container run (the current one and the one before); a follow ends
when the container's run ends or the client goes away.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from pitwall.kube import BadRequest, NotFoundError
from pitwall.node.logs import LogBuffer

if TYPE_CHECKING:
    from pitwall.node.kubelet import Kubelet

__all__ = ["logs_handler"]


def _ts(ns: int) -> str:
    t = dt.datetime.fromtimestamp(ns // 1_000_000_000, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 1_000_000_000:09d}Z"


def _int(q: Any, key: str) -> int | None:
    v = q.get(key)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise BadRequest(f"{key}: Invalid value: {v!r}") from None


def _since_ns(q: Any) -> int:
    secs = _int(q, "sinceSeconds")
    if secs is not None:
        return time.time_ns() - secs * 1_000_000_000
    st = q.get("sinceTime")
    if st:
        try:
            return int(dt.datetime.fromisoformat(st.replace("Z", "+00:00")).timestamp() * 1e9)
        except ValueError:
            raise BadRequest(f"sinceTime: Invalid value: {st!r}") from None
    return 0


def logs_handler(kubelet: Kubelet) -> Callable[[Request, Any, str, str], Awaitable[Response]]:
    """The ``pods/log`` subresource handler for ``KubeAPI.subresource_handlers``."""

    async def handler(request: Request, rt: Any, namespace: str, name: str) -> Response:
        pod = await kubelet.client.get("v1", "Pod", name, namespace)  # NotFound: 404 as the API answers
        q = request.query_params
        spec = pod.get("spec") or {}
        names = [str(c.get("name")) for c in spec.get("containers") or []]
        inits = [str(c.get("name")) for c in spec.get("initContainers") or []]
        container = q.get("container") or ""
        if not container:
            if len(names) != 1:
                raise BadRequest(f"a container name must be specified for pod {name}, choose one of: "
                                 f"[{' '.join(names)}]")
            container = names[0]
        if container not in names and container not in inits:
            raise BadRequest(f"container {container} is not valid for pod {name}")
        w = kubelet.worker_for(namespace, name)
        run = next((c for c in w.runs if c.name == container), None) if w is not None else None
        previous = q.get("previous") in ("true", "1")
        buf: LogBuffer | None
        if run is None:
            if (pod.get("spec") or {}).get("nodeName") not in ("", None, kubelet.node_name):
                raise NotFoundError(f'pod "{name}" runs on node "{pod["spec"]["nodeName"]}", not this one',
                                    details={})
            raise BadRequest(f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating')
        buf = run.previous if previous else run.logs
        if buf is None:
            if previous:
                raise BadRequest(f'previous terminated container "{container}" in pod "{name}" not found')
            reason = (run.state.get("waiting") or {}).get("reason", "ContainerCreating")
            raise BadRequest(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        follow = q.get("follow") in ("true", "1") and not previous
        tail = _int(q, "tailLines")
        limit = _int(q, "limitBytes")
        since = _since_ns(q)
        stamps = q.get("timestamps") in ("true", "1")

        def render(ts: int, line: str) -> bytes:
            return ((_ts(ts) + " " if stamps else "") + line + "\n").encode()

        entries = [e for e in buf.after(0) if e[1] >= since]
        if tail is not None and tail >= 0:
            entries = entries[len(entries) - tail:] if tail < len(entries) else entries
        if not follow:
            body = b"".join(render(ts, line) for _, ts, line in entries)
            if limit is not None and limit > 0:
                body = body[:limit]
            return Response(body, media_type="text/plain")

        async def stream() -> AsyncIterator[bytes]:
            sent = 0
            last = entries[-1][0] if entries else buf.seq
            for _, ts, line in entries:
                chunk = render(ts, line)
                sent += len(chunk)
                yield chunk
            while not kubelet.kube.closing:
                new = buf.after(last)
                for seq, ts, line in new:
                    last = seq
                    if ts < since:
                        continue
                    chunk = render(ts, line)
                    if limit is not None and limit > 0 and sent + len(chunk) > limit:
                        yield chunk[:limit - sent]
                        return
                    sent += len(chunk)
                    yield chunk
                if buf.closed and not buf.after(last):
                    return
                await buf.wait(1.0)
                await asyncio.sleep(0)

        return StreamingResponse(stream(), media_type="text/plain")

    return handler
