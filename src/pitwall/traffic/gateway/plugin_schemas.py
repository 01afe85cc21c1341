"""The configuration schema of each supported plugin, with Kong OSS 3.x's field names and defaults.

Read from each plugin's ``kong/plugins/<name>/schema.lua`` (field names,
types, defaults, ``one_of``/``between`` checks and the entity checks such as
acl's "only one of allow/deny"). ``PLUGINS[name]`` is ``(protocols spec,
config spec, entity check)``; a name not here is rejected as Kong rejects a
plugin that is not enabled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pitwall.traffic.gateway.schema import (
    HEADER_NAME,
    IP_OR_CIDR,
    PATH,
    PROTOCOLS_ALL,
    PROTOCOLS_HTTP,
    STRING,
    STRINGS,
    F,
    record,
)

__all__ = ["PLUGINS", "PluginSchema"]

Conf = dict[str, Any]
EntityCheck = Callable[[Conf], str | None]
PluginSchema = tuple[F, F, EntityCheck | None]

_PERIODS = ("second", "minute", "hour", "day", "month", "year")
_METHODS = ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT"]


def _present(v: Any) -> bool:
    return isinstance(v, str) and len(v) > 0


def _rate_limiting_check(c: Conf) -> str | None:
    if not any(c.get(p) is not None for p in _PERIODS):
        return "config: at least one of these fields must be non-empty: 'config.second', 'config.minute', " \
               "'config.hour', 'config.day', 'config.month', 'config.year'"
    for i, lo in enumerate(_PERIODS):
        v1 = c.get(lo)
        if v1 is None:
            continue
        for hi in _PERIODS[i + 1:]:
            v2 = c.get(hi)
            if v2 is not None and v2 < v1:
                return f"config: The limit for {hi}({float(v2):.1f}) cannot be lower than the limit for " \
                       f"{lo}({float(v1):.1f})"
    if c.get("policy") != "redis" and c.get("sync_rate") != -1:
        return "config: sync_rate can only be used with the redis policy"
    if c.get("limit_by") == "header" and not c.get("header_name"):
        return "config.header_name: required field missing (limit_by is header)"
    if c.get("limit_by") == "path" and not c.get("path"):
        return "config.path: required field missing (limit_by is path)"
    if c.get("policy") == "redis":
        return "config.policy: the redis policy is not supported by pitwall's gateway (use local)"
    return None


def _termination_check(c: Conf) -> str | None:
    if _present(c.get("message")) and (_present(c.get("content_type")) or _present(c.get("body"))):
        return "config: message cannot be used with content_type or body"
    if _present(c.get("content_type")) and not _present(c.get("body")):
        return "config: content_type requires a body"
    if c.get("echo") and (_present(c.get("content_type")) or _present(c.get("body"))):
        return "config: echo cannot be used with content_type and body"
    return None


def _one_of_allow_deny(c: Conf) -> str | None:
    if c.get("allow") is None and c.get("deny") is None:
        return "config: at least one of these fields must be non-empty: 'config.allow', 'config.deny'"
    return None


def _acl_check(c: Conf) -> str | None:
    if c.get("allow") is not None and c.get("deny") is not None:
        return "config: only one of these fields must be non-empty: 'config.allow', 'config.deny'"
    return _one_of_allow_deny(c)


def _jwt_check(c: Conf) -> str | None:
    if (c.get("maximum_expiration") or 0) > 0 and "exp" not in (c.get("claims_to_verify") or []):
        return "config.claims_to_verify: failed conditional validation given value of field " \
               "'config.maximum_expiration'"
    return None


_REDIS = record(
    ("host", F("string")), ("port", F("integer", default=6379, between=(0, 65535))),
    ("timeout", F("integer", default=2000, between=(0, 2**31 - 2))), ("username", STRING),
    ("password", STRING), ("database", F("integer", default=0)), ("ssl", F("boolean", default=False)),
    ("ssl_verify", F("boolean", default=False)), ("server_name", STRING),
)

_RATE_LIMITING = record(
    *[(p, F("number", gt=0)) for p in _PERIODS],
    ("limit_by", F("string", default="consumer", one_of=("consumer", "credential", "ip", "service", "header",
                                                         "path"))),
    ("header_name", HEADER_NAME), ("path", PATH),
    ("policy", F("string", default="local", one_of=("local", "cluster", "redis"))),
    ("fault_tolerant", F("boolean", default=True, required=True)),
    ("redis", _REDIS),
    ("hide_client_headers", F("boolean", default=False, required=True)),
    ("error_code", F("number", default=429, gt=0)),
    ("error_message", F("string", default="API rate limit exceeded")),
    ("sync_rate", F("number", default=-1, required=True)),
)

_STR_ARRAY = F("array", elements=STRING, default=[], required=True)


def _transform_section(*names: str, uri: bool = False) -> F:
    fields = [(n, F("array", elements=STRING, default=[], required=True)) for n in names]
    if uri:
        fields.append(("uri", STRING))
    return record(*fields, required=True)


_REQ_TRANSFORMER = record(
    ("http_method", F("string", validate=lambda v: None if v.isalpha() and v.isupper() else
                      "invalid value: " + v)),
    ("remove", _transform_section("body", "headers", "querystring")),
    ("rename", _transform_section("body", "headers", "querystring")),
    ("replace", _transform_section("body", "headers", "querystring", uri=True)),
    ("add", _transform_section("body", "headers", "querystring")),
    ("append", _transform_section("body", "headers", "querystring")),
)

_JSON_TYPES = F("array", elements=F("string", one_of=("boolean", "number", "string")), default=[], required=True)
_RESP_TRANSFORMER = record(
    ("remove", record(("json", _STR_ARRAY), ("headers", _STR_ARRAY), required=True)),
    ("rename", record(("headers", _STR_ARRAY), ("json", _STR_ARRAY), required=True)),
    ("replace", record(("json", _STR_ARRAY), ("json_types", _JSON_TYPES), ("headers", _STR_ARRAY),
                       required=True)),
    ("add", record(("json", _STR_ARRAY), ("json_types", _JSON_TYPES), ("headers", _STR_ARRAY), required=True)),
    ("append", record(("json", _STR_ARRAY), ("json_types", _JSON_TYPES), ("headers", _STR_ARRAY),
                      required=True)),
)

PLUGINS: dict[str, PluginSchema] = {
    "key-auth": (PROTOCOLS_HTTP, record(
        ("key_names", F("array", elements=HEADER_NAME, default=["apikey"], required=True)),
        ("hide_credentials", F("boolean", default=False, required=True)),
        ("anonymous", STRING),
        ("key_in_header", F("boolean", default=True, required=True)),
        ("key_in_query", F("boolean", default=True, required=True)),
        ("key_in_body", F("boolean", default=False, required=True)),
        ("run_on_preflight", F("boolean", default=True, required=True)),
        ("realm", STRING),
    ), None),
    "basic-auth": (PROTOCOLS_HTTP, record(
        ("anonymous", STRING),
        ("hide_credentials", F("boolean", default=False, required=True)),
        ("realm", F("string", default="service", required=True)),
    ), None),
    "jwt": (PROTOCOLS_HTTP, record(
        ("uri_param_names", F("set", elements=STRING, default=["jwt"])),
        ("cookie_names", F("set", elements=STRING, default=[])),
        ("key_claim_name", F("string", default="iss")),
        ("secret_is_base64", F("boolean", default=False, required=True)),
        ("claims_to_verify", F("set", elements=F("string", one_of=("exp", "nbf")))),
        ("anonymous", STRING),
        ("run_on_preflight", F("boolean", default=True, required=True)),
        ("maximum_expiration", F("number", default=0, between=(0, 31536000))),
        ("header_names", F("set", elements=STRING, default=["authorization"])),
        ("realm", STRING),
    ), _jwt_check),
    "acl": (PROTOCOLS_HTTP, record(
        ("allow", STRINGS), ("deny", STRINGS),
        ("hide_groups_header", F("boolean", default=False, required=True)),
        ("always_use_authenticated_groups", F("boolean", default=False, required=True)),
    ), _acl_check),
    "rate-limiting": (PROTOCOLS_HTTP, _RATE_LIMITING, _rate_limiting_check),
    "request-termination": (PROTOCOLS_HTTP, record(
        ("status_code", F("integer", default=503, required=True, between=(100, 599))),
        ("message", STRING), ("content_type", STRING), ("body", STRING),
        ("echo", F("boolean", default=False, required=True)),
        ("trigger", HEADER_NAME),
    ), _termination_check),
    "cors": (PROTOCOLS_HTTP, record(
        ("origins", STRINGS), ("headers", STRINGS), ("exposed_headers", STRINGS),
        ("methods", F("array", elements=F("string", one_of=tuple(_METHODS)), default=list(_METHODS))),
        ("max_age", F("number")),
        ("credentials", F("boolean", default=False, required=True)),
        ("private_network", F("boolean", default=False, required=True)),
        ("preflight_continue", F("boolean", default=False, required=True)),
        ("allow_origin_absent", F("boolean", default=True, required=True)),
    ), None),
    "request-transformer": (PROTOCOLS_HTTP, _REQ_TRANSFORMER, None),
    "response-transformer": (PROTOCOLS_HTTP, _RESP_TRANSFORMER, None),
    "ip-restriction": (F("set", elements=PROTOCOLS_ALL.elements, required=True,
                         default=["http", "https", "tcp", "tls", "grpc", "grpcs"]), record(
        ("allow", F("array", elements=IP_OR_CIDR)), ("deny", F("array", elements=IP_OR_CIDR)),
        ("status", F("number")), ("message", STRING),
    ), _one_of_allow_deny),
    "correlation-id": (PROTOCOLS_HTTP, record(
        ("header_name", F("string", default="Kong-Request-ID")),
        ("generator", F("string", default="uuid#counter", required=True, one_of=("uuid", "uuid#counter",
                                                                                  "tracker"))),
        ("echo_downstream", F("boolean", default=False, required=True)),
    ), None),
    "prometheus": (PROTOCOLS_ALL, record(
        ("per_consumer", F("boolean", default=False)),
        ("status_code_metrics", F("boolean", default=False)),
        ("ai_metrics", F("boolean", default=False)),
        ("latency_metrics", F("boolean", default=False)),
        ("bandwidth_metrics", F("boolean", default=False)),
        ("upstream_health_metrics", F("boolean", default=False)),
        ("wasm_metrics", F("boolean", default=False)),
    ), None),
}
