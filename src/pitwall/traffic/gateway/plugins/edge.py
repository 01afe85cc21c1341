"""Kong's request-termination, cors, ip-restriction and correlation-id plugins."""

from __future__ import annotations

import ipaddress
import itertools
import uuid
from typing import Any
from urllib.parse import parse_qsl

import orjson

from pitwall.core.regex import compile as re2_compile
from pitwall.traffic.gateway.context import (
    HTTP_ERROR_MESSAGES,
    JSON_TYPE,
    Ctx,
    Reply,
    ResponseHead,
    kong_error,
)
from pitwall.traffic.gateway.plugins.base import Plugin

__all__ = ["CORS", "CorrelationID", "IPRestriction", "RequestTermination"]


class RequestTermination(Plugin):
    name = "request-termination"
    priority = 2

    def access(self, ctx: Ctx) -> None:
        c = self.conf
        req = ctx.req
        trigger = c.get("trigger")
        if trigger and trigger.lower() not in req.headers and \
                trigger not in dict(parse_qsl(req.query, keep_blank_values=True)):
            return
        status = c["status_code"]
        if c["echo"]:
            raise Reply(status, orjson.dumps(self._echo(ctx)), [("Content-Type", JSON_TYPE)])
        if c.get("body") is not None:
            raise Reply(status, c["body"].encode(), [("Content-Type", c["content_type"])] if c.get("content_type")
                        else [])
        message = c.get("message") or HTTP_ERROR_MESSAGES.get(status)
        if message is None:
            raise Reply(status)
        raise kong_error(status, message)

    def _echo(self, ctx: Ctx) -> dict[str, Any]:
        req = ctx.req
        return {
            "message": self.conf.get("message") or HTTP_ERROR_MESSAGES.get(self.conf["status_code"]),
            "request": {"scheme": "http", "host": req.host.partition(":")[0], "headers": req.headers,
                        "query": dict(parse_qsl(req.query, keep_blank_values=True)),
                        "raw_body": req.body.decode("utf-8", "replace"), "method": req.method, "path": req.path},
            "matched_route": ctx.route.entity if ctx.route is not None else None,
            "matched_service": ctx.service.entity if ctx.service is not None else None,
        }


class IPRestriction(Plugin):
    name = "ip-restriction"
    priority = 990

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.allow = [ipaddress.ip_network(a, strict=False) for a in self.conf.get("allow") or []]
        self.deny = [ipaddress.ip_network(a, strict=False) for a in self.conf.get("deny") or []]

    def access(self, ctx: Ctx) -> None:
        try:
            ip = ipaddress.ip_address(ctx.client_ip)
        except ValueError:
            raise kong_error(403, "Cannot identify the client IP address, unix domain sockets are not "
                                  "supported.") from None
        if any(ip in n for n in self.deny) or (self.allow and not any(ip in n for n in self.allow)):
            status = int(self.conf.get("status") or 403)
            raise kong_error(status, self.conf.get("message") or f"IP address not allowed: {ctx.client_ip}")


class CorrelationID(Plugin):
    name = "correlation-id"
    priority = 100001
    _worker = str(uuid.uuid4())
    _counter = itertools.count(1)

    def access(self, ctx: Ctx) -> None:
        name = self.conf["header_name"].lower()
        if not ctx.req.headers.get(name):
            gen = self.conf["generator"]
            if gen == "uuid#counter":
                value = f"{self._worker}#{next(self._counter)}"
            elif gen == "tracker":  # nginx's server_addr-server_port-pid-connection-... ; ours: addr and a counter
                value = f"{ctx.client_ip}-{next(self._counter)}-{int(ctx.start * 1000)}"
            else:
                value = str(uuid.uuid4())
            ctx.req.headers[name] = value

    def response(self, ctx: Ctx, head: ResponseHead) -> None:
        if self.conf["echo_downstream"]:
            value = ctx.req.headers.get(self.conf["header_name"].lower())
            if value and head.get(self.conf["header_name"]) is None:
                head.headers.append((self.conf["header_name"], value))


class CORS(Plugin):
    """Kong's cors handler: preflight answered 200 (unless ``preflight_continue``), headers added to responses."""

    name = "cors"
    priority = 2000

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        origins = self.conf.get("origins") or []
        self.any_origin = "*" in origins
        self.exact = {o.lower() for o in origins if o != "*" and not _is_regex(o)}
        self.regexes = [re2_compile("^(?:" + o + ")$") for o in origins if o != "*" and _is_regex(o)]
        self.single: str | None = origins[0] if len(origins) == 1 and not _is_regex(origins[0]) else None

    def _allow_origin(self, origin: str | None) -> str | None:
        if not self.conf.get("origins") or self.any_origin:
            return "*" if not self.conf["credentials"] else (origin or "*")
        if self.single is not None:
            return self.single
        if origin is None:
            return None
        if origin.lower() in self.exact or any(rx.search(origin) for rx in self.regexes):
            return origin
        return None

    def _common(self, ctx: Ctx, out: list[tuple[str, str]]) -> None:
        origin = ctx.req.headers.get("origin")
        allow = self._allow_origin(origin)
        if allow is not None:
            out.append(("Access-Control-Allow-Origin", allow))
        if allow not in (None, "*") or self.exact or self.regexes:
            out.append(("Vary", "Origin"))
        if self.conf["credentials"] and allow not in (None, "*"):
            out.append(("Access-Control-Allow-Credentials", "true"))

    def access(self, ctx: Ctx) -> None:
        req = ctx.req
        if req.method != "OPTIONS" or "access-control-request-method" not in req.headers:
            return
        if self.conf["preflight_continue"]:
            return
        out: list[tuple[str, str]] = []
        self._common(ctx, out)
        headers = self.conf.get("headers")
        allow_headers = ",".join(headers) if headers else req.headers.get("access-control-request-headers")
        if allow_headers:
            out.append(("Access-Control-Allow-Headers", allow_headers))
        out.append(("Access-Control-Allow-Methods", ",".join(self.conf["methods"])))
        if self.conf.get("max_age") is not None:
            out.append(("Access-Control-Max-Age", str(int(self.conf["max_age"]))))
        if self.conf["private_network"] and req.headers.get("access-control-request-private-network") == "true":
            out.append(("Access-Control-Allow-Private-Network", "true"))
        raise Reply(200, b"", out)

    def response(self, ctx: Ctx, head: ResponseHead) -> None:
        if ctx.req.method == "OPTIONS" and "access-control-request-method" in ctx.req.headers:
            return
        out: list[tuple[str, str]] = []
        self._common(ctx, out)
        if self.conf.get("exposed_headers"):
            out.append(("Access-Control-Expose-Headers", ",".join(self.conf["exposed_headers"])))
        for k, v in out:
            if k == "Vary" and head.get("Vary"):
                head.set("Vary", f"{head.get('Vary')}, Origin")
            else:
                head.set(k, v)


def _is_regex(origin: str) -> bool:
    return any(c in origin for c in "^$*+?()[]{}|\\") and origin != "*"
