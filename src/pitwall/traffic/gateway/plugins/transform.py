"""Kong's request-transformer and response-transformer: remove, rename, replace, add, append, in that order.

Entries are ``name:value`` (``rename`` takes ``old:new``; ``remove`` just
names). As in Kong, ``replace`` changes only what exists, ``add`` only adds
what is missing, ``append`` adds another value. Request bodies are
transformed when form-encoded or JSON; response JSON bodies when the
response is ``application/json``. Kong's template values (``$(headers.x)``)
are not evaluated here: values are used literally.
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from pitwall.traffic.gateway.context import Ctx, ResponseHead
from pitwall.traffic.gateway.plugins.base import Plugin

__all__ = ["RequestTransformer", "ResponseTransformer"]


def _pairs(items: list[str]) -> list[tuple[str, str]]:
    out = []
    for it in items:
        k, _, v = it.partition(":")
        out.append((k, v))
    return out


def _apply_map(doc: dict[str, Any], sec: dict[str, Any], key: str, is_header: bool = False) -> None:
    def norm(s: str) -> str:
        return s.lower() if is_header else s

    for name in sec["remove"][key]:
        doc.pop(norm(name.partition(":")[0]), None)
    for old, new in _pairs(sec["rename"][key]):
        if norm(old) in doc:
            doc[norm(new)] = doc.pop(norm(old))
    for k, v in _pairs(sec["replace"][key]):
        if norm(k) in doc:
            doc[norm(k)] = v
    for k, v in _pairs(sec["add"][key]):
        doc.setdefault(norm(k), v)
    for k, v in _pairs(sec["append"][key]):
        cur = doc.get(norm(k))
        doc[norm(k)] = v if cur is None else (f"{cur}, {v}" if is_header else [*(cur if isinstance(cur, list)
                                                                                  else [cur]), v])


class RequestTransformer(Plugin):
    name = "request-transformer"
    priority = 801

    def access(self, ctx: Ctx) -> None:
        c = self.conf
        req = ctx.req
        if c.get("http_method"):
            req.method = c["http_method"]
        _apply_map(req.headers, c, "headers", is_header=True)
        if any(c[s]["querystring"] for s in ("remove", "rename", "replace", "add", "append")):
            q: dict[str, Any] = {}
            for k, v in parse_qsl(req.query, keep_blank_values=True):
                q[k] = [*q[k], v] if isinstance(q.get(k), list) else ([q[k], v] if k in q else v)
            _apply_map(q, c, "querystring")
            req.query = urlencode(q, doseq=True)
        if c["replace"].get("uri"):
            ctx.upstream_path = c["replace"]["uri"]
        if any(c[s]["body"] for s in ("remove", "rename", "replace", "add", "append")):
            self._body(ctx)

    def _body(self, ctx: Ctx) -> None:
        req = ctx.req
        ct = req.headers.get("content-type", "").split(";")[0].strip().lower()
        if ct == "application/json":
            try:
                doc = orjson.loads(req.body or b"{}")
            except orjson.JSONDecodeError:
                return
            if isinstance(doc, dict):
                _apply_map(doc, self.conf, "body")
                req.body = orjson.dumps(doc)
        elif ct == "application/x-www-form-urlencoded" or (not ct and not req.body):
            form: dict[str, Any] = dict(parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
            _apply_map(form, self.conf, "body")
            req.body = urlencode(form, doseq=True).encode()
            if not ct:
                req.headers["content-type"] = "application/x-www-form-urlencoded"
        else:
            return
        req.headers["content-length"] = str(len(req.body))


class ResponseTransformer(Plugin):
    name = "response-transformer"
    priority = 800

    def response(self, ctx: Ctx, head: ResponseHead) -> None:
        c = self.conf
        hdrs: dict[str, str] = {}
        order: list[str] = []
        for k, v in head.headers:
            lk = k.lower()
            if lk in hdrs:
                hdrs[lk] = f"{hdrs[lk]}, {v}"
            else:
                order.append(lk)
                hdrs[lk] = v
        _apply_map(hdrs, c, "headers", is_header=True)
        head.headers = [(k, v) for k, v in hdrs.items()]
        if any(c[s]["json"] for s in ("remove", "rename", "replace", "add", "append")):
            ct = (head.get("content-type") or "").lower()
            if "application/json" in ct:
                try:
                    doc = orjson.loads(head.body)
                except orjson.JSONDecodeError:
                    return
                if isinstance(doc, dict):
                    _apply_map(doc, {s: {"json": c[s]["json"]} for s in c}, "json")
                    self._types(doc)
                    head.body = orjson.dumps(doc)

    def _types(self, doc: dict[str, Any]) -> None:
        for sec in ("replace", "add", "append"):
            types = self.conf[sec].get("json_types") or []
            for (k, _v), t in zip(_pairs(self.conf[sec]["json"]), types, strict=False):
                val = doc.get(k)
                if isinstance(val, str):
                    if t == "number":
                        with contextlib.suppress(ValueError):
                            doc[k] = float(val) if "." in val else int(val)
                    elif t == "boolean":
                        doc[k] = val == "true"
