"""Kong 3.x declarative configuration: parse, validate, fill Kong OSS defaults, resolve references, dump.

``load_declarative(data)`` turns the parsed YAML/JSON of a declarative file
(``_format_version: "3.0"``) into a ``KongState``: flat lists of services,
routes, plugins, upstreams (targets nested), consumers (credentials
nested), certificates, SNIs, vaults and CA certificates, each entity with
every field Kong's schema defines and the defaults Kong fills. Nested
entities (routes under a service, plugins under a service, route or
consumer) become flat entities with a reference, as Kong's loader does;
references by name or id (``service: {name: svc1}``, ``route:
example-route``) are resolved. Any problem rejects the whole file with every
field path at fault (``DeclarativeError``); nothing is half-applied.

``apply_declarative(state, data)`` adds the file's entities to an existing
state (decK's ``apply``: upsert by id or name, delete nothing), and
``dump(state)`` writes the state back in decK's layout (routes and plugins
nested under what they belong to, nulls and generated ids left out).
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from typing import Any

from pitwall.core.errors import ConfigError
from pitwall.traffic.gateway.plugin_schemas import PLUGINS
from pitwall.traffic.gateway.schema import (
    HOST,
    PATH,
    STRING,
    STRINGS,
    TAGS,
    Errors,
    F,
    check,
    record,
)

__all__ = ["DeclarativeError", "KongState", "apply_declarative", "dump", "load_declarative"]

Entity = dict[str, Any]
FORMAT_VERSION = "3.0"
_ID_NAMESPACE = uuid.UUID("6f3b0c52-6d1e-4a7b-9a57-2b1e4c7d9f10")
_TOP_KEYS = ("_format_version", "_transform", "_workspace", "_info", "_comment", "services", "routes", "plugins",
             "upstreams", "consumers", "certificates", "ca_certificates", "snis", "vaults")
# Accepted on any entity (exported by Kong or decK) and ignored.
_META = ("created_at", "updated_at")


class DeclarativeError(ConfigError):
    """The declarative configuration is invalid; ``problems`` lists each ``field.path: message``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("declarative config is invalid: " + "; ".join(problems))


SERVICE = record(
    ("id", STRING), ("name", STRING),
    ("protocol", F("string", default="http", required=True,
                   one_of=("grpc", "grpcs", "http", "https", "tcp", "tls", "tls_passthrough", "udp", "ws", "wss"))),
    ("host", F("string", required=True, validate=HOST.validate)), ("port", F("integer", default=80,
                                                                             between=(0, 65535))),
    ("path", PATH), ("retries", F("integer", default=5, between=(0, 32767))),
    ("connect_timeout", F("integer", default=60000, between=(1, 2**31 - 2))),
    ("write_timeout", F("integer", default=60000, between=(1, 2**31 - 2))),
    ("read_timeout", F("integer", default=60000, between=(1, 2**31 - 2))),
    ("tags", TAGS), ("client_certificate", F("any")), ("tls_verify", F("boolean")),
    ("tls_verify_depth", F("integer", between=(0, 64))), ("ca_certificates", F("array", elements=STRING)),
    ("enabled", F("boolean", default=True, required=True)),
)

ROUTE = record(
    ("id", STRING), ("name", STRING),
    ("protocols", F("set", elements=F("string", one_of=("grpc", "grpcs", "http", "https", "tcp", "tls",
                                                        "tls_passthrough", "udp", "ws", "wss")),
                    default=["http", "https"], required=True)),
    ("methods", F("set", elements=F("string", validate=lambda m: None if m.isalpha() and m.isupper() else
                                    "invalid value: " + m))),
    ("hosts", F("array", elements=STRING)), ("paths", F("array", elements=STRING)),
    ("headers", F("map", values=F("array", elements=STRING))),
    ("https_redirect_status_code", F("integer", default=426, required=True, one_of=(426, 301, 302, 307, 308))),
    ("regex_priority", F("integer", default=0)),
    ("strip_path", F("boolean", default=True, required=True)),
    ("path_handling", F("string", default="v0", one_of=("v0", "v1"))),
    ("preserve_host", F("boolean", default=False, required=True)),
    ("request_buffering", F("boolean", default=True, required=True)),
    ("response_buffering", F("boolean", default=True, required=True)),
    ("snis", F("set", elements=STRING)), ("sources", F("set", elements=F("any"))),
    ("destinations", F("set", elements=F("any"))), ("tags", TAGS), ("service", F("any")),
)

_HEALTHY_ACTIVE = record(("interval", F("number", default=0, between=(0, 65535))),
                         ("http_statuses", F("array", elements=F("integer"), default=[200, 302])),
                         ("successes", F("integer", default=0, between=(0, 255))))
_UNHEALTHY_ACTIVE = record(
    ("interval", F("number", default=0, between=(0, 65535))),
    ("http_statuses", F("array", elements=F("integer"), default=[429, 404, 500, 501, 502, 503, 504, 505])),
    ("tcp_failures", F("integer", default=0, between=(0, 255))), ("timeouts", F("integer", default=0,
                                                                               between=(0, 255))),
    ("http_failures", F("integer", default=0, between=(0, 255))))
_HEALTHY_PASSIVE = record(
    ("http_statuses", F("array", elements=F("integer"), default=[200, 201, 202, 203, 204, 205, 206, 207, 208, 226,
                                                                 300, 301, 302, 303, 304, 305, 306, 307, 308])),
    ("successes", F("integer", default=0, between=(0, 255))))
_UNHEALTHY_PASSIVE = record(
    ("http_statuses", F("array", elements=F("integer"), default=[429, 500, 503])),
    ("tcp_failures", F("integer", default=0, between=(0, 255))), ("timeouts", F("integer", default=0,
                                                                               between=(0, 255))),
    ("http_failures", F("integer", default=0, between=(0, 255))))
HEALTHCHECKS = record(
    ("active", record(("type", F("string", default="http", one_of=("tcp", "http", "https", "grpc", "grpcs"))),
                      ("timeout", F("number", default=1, between=(0, 65535))),
                      ("concurrency", F("integer", default=10, between=(1, 2**31 - 1))),
                      ("http_path", F("string", default="/")), ("https_sni", STRING),
                      ("https_verify_certificate", F("boolean", default=True)),
                      ("headers", F("map", values=STRINGS)),
                      ("healthy", _HEALTHY_ACTIVE), ("unhealthy", _UNHEALTHY_ACTIVE))),
    ("passive", record(("type", F("string", default="http", one_of=("tcp", "http", "https", "grpc", "grpcs"))),
                       ("healthy", _HEALTHY_PASSIVE), ("unhealthy", _UNHEALTHY_PASSIVE))),
    ("threshold", F("number", default=0, between=(0, 100))),
)

UPSTREAM = record(
    ("id", STRING), ("name", F("string", required=True, validate=HOST.validate)),
    ("algorithm", F("string", default="round-robin", one_of=("consistent-hashing", "least-connections",
                                                             "round-robin", "latency", "sticky-sessions"))),
    ("slots", F("integer", default=10000, between=(10, 65536))),
    ("hash_on", F("string", default="none", one_of=("none", "consumer", "ip", "header", "cookie", "path",
                                                    "query_arg", "uri_capture"))),
    ("hash_fallback", F("string", default="none", one_of=("none", "consumer", "ip", "header", "cookie", "path",
                                                          "query_arg", "uri_capture"))),
    ("hash_on_header", STRING), ("hash_fallback_header", STRING), ("hash_on_cookie", STRING),
    ("hash_on_cookie_path", F("string", default="/")), ("hash_on_query_arg", STRING),
    ("hash_fallback_query_arg", STRING), ("hash_on_uri_capture", STRING), ("hash_fallback_uri_capture", STRING),
    ("sticky_sessions_cookie", STRING), ("sticky_sessions_cookie_path", F("string", default="/")),
    ("healthchecks", HEALTHCHECKS), ("tags", TAGS), ("host_header", STRING), ("client_certificate", F("any")),
    ("use_srv_name", F("boolean", default=False)),
)

TARGET = record(("id", STRING), ("target", F("string", required=True)),
                ("weight", F("integer", default=100, between=(0, 65535))), ("tags", TAGS))

CONSUMER = record(("id", STRING), ("username", STRING), ("custom_id", STRING), ("tags", TAGS))
KEYAUTH = record(("id", STRING), ("key", STRING), ("ttl", F("integer")), ("tags", TAGS))
BASICAUTH = record(("id", STRING), ("username", F("string", required=True)),
                   ("password", F("string", required=True)), ("tags", TAGS))
JWT_SECRET = record(
    ("id", STRING), ("key", STRING), ("secret", STRING), ("rsa_public_key", STRING), ("tags", TAGS),
    ("algorithm", F("string", default="HS256", one_of=("HS256", "HS384", "HS512", "RS256", "RS384", "RS512",
                                                       "ES256", "ES384", "ES512", "PS256", "PS384", "PS512",
                                                       "EdDSA"))))
ACL = record(("id", STRING), ("group", F("string", required=True)), ("tags", TAGS))
CREDENTIALS = {"keyauth_credentials": KEYAUTH, "basicauth_credentials": BASICAUTH, "jwt_secrets": JWT_SECRET,
               "acls": ACL}

CERTIFICATE = record(("id", STRING), ("cert", F("string", required=True)), ("key", F("string", required=True)),
                     ("cert_alt", STRING), ("key_alt", STRING), ("tags", TAGS))
SNI = record(("id", STRING), ("name", F("string", required=True)), ("tags", TAGS), ("certificate", F("any")))
VAULT = record(("id", STRING), ("name", F("string", required=True)), ("prefix", F("string", required=True)),
               ("description", STRING), ("config", F("map")), ("tags", TAGS))
CA_CERTIFICATE = record(("id", STRING), ("cert", F("string", required=True)), ("cert_digest", STRING),
                        ("tags", TAGS))

PLUGIN_BASE = (("id", STRING), ("name", F("string", required=True)), ("instance_name", STRING),
               ("enabled", F("boolean", default=True, required=True)), ("tags", TAGS),
               ("service", F("any")), ("route", F("any")), ("consumer", F("any")), ("ordering", F("any")))


@dataclass
class KongState:
    """Every entity of one configuration, flat, defaults filled; references are entity ids."""

    services: list[Entity] = field(default_factory=list)
    routes: list[Entity] = field(default_factory=list)
    plugins: list[Entity] = field(default_factory=list)
    upstreams: list[Entity] = field(default_factory=list)
    consumers: list[Entity] = field(default_factory=list)
    certificates: list[Entity] = field(default_factory=list)
    snis: list[Entity] = field(default_factory=list)
    vaults: list[Entity] = field(default_factory=list)
    ca_certificates: list[Entity] = field(default_factory=list)
    generated_ids: set[str] = field(default_factory=set)

    def copy(self) -> KongState:
        return copy.deepcopy(self)


class _Loader:
    """One pass over a file: validate each entity into ``state``; problems collected in ``errors``."""

    def __init__(self, state: KongState) -> None:
        self.state = state
        self.errors: Errors = []
        self.pending: list[tuple[str, Entity, str]] = []  # (kind, entity, path) whose references resolve later
        self.seen: set[tuple[str, str, Any]] = set()  # (kind, attribute, value) declared in this file

    def new_id(self, given: Any, seed: str) -> str:
        """The given id, else one derived from the entity's name or place: the same across reloads, so
        counters keyed by ids (rate limits per consumer) survive a reload of an unchanged file."""
        if isinstance(given, str) and given:
            return given
        i = str(uuid.uuid5(_ID_NAMESPACE, seed))
        self.state.generated_ids.add(i)
        return i

    def entity(self, raw: Any, spec: F, path: str, drop: tuple[str, ...] = ()) -> Entity | None:
        if not isinstance(raw, dict):
            self.errors.append(f"{path}: expected a record")
            return None
        body = {k: v for k, v in raw.items() if k not in drop and k not in _META}
        e: Entity = check(body, spec, path, self.errors)
        named = e.get("name") or e.get("username") or e.get("custom_id") or e.get("key") or e.get("target")
        kind = path.rsplit(".", 1)[-1].split("[")[0]
        seed = f"{kind}:{named}" if isinstance(named, str) and kind != "plugins" else f"{path}:{e.get('name')}"
        e["id"] = self.new_id(e.get("id"), seed)
        for attr in ("name", "username", "custom_id") if kind not in ("plugins", "vaults", "snis") else ():
            v = e.get(attr)
            if isinstance(v, str) and (kind, attr, v) in self.seen:
                self.errors.append(f"{path}.{attr}: uniqueness violation: '{kind}' entity with {attr} set to "
                                   f"'{v}' already declared")
            self.seen.add((kind, attr, v))
        return e

    # services and routes

    def service(self, raw: Any, path: str) -> None:
        if isinstance(raw, dict) and "url" in raw:
            raw = {**{k: v for k, v in raw.items() if k != "url"}, **self._url(raw["url"], f"{path}.url")}
        svc = self.entity(raw, SERVICE, path, drop=("routes", "plugins"))
        if svc is None:
            return
        if svc["protocol"] not in ("http", "https") and svc.get("path") is not None:
            self.errors.append(f"{path}.path: value must be null (protocol is {svc['protocol']})")
        _upsert(self.state.services, svc)
        for i, r in enumerate(raw.get("routes") or []):
            self.route(r, f"{path}.routes[{i}]", service_id=svc["id"])
        for i, p in enumerate(raw.get("plugins") or []):
            self.plugin(p, f"{path}.plugins[{i}]", {"service": svc["id"]})

    def _url(self, url: Any, path: str) -> dict[str, Any]:
        from urllib.parse import urlsplit
        if not isinstance(url, str):
            self.errors.append(f"{path}: expected a string")
            return {}
        u = urlsplit(url)
        if not u.scheme or not u.hostname:
            self.errors.append(f"{path}: missing host in url")
            return {}
        out: dict[str, Any] = {"protocol": u.scheme, "host": u.hostname}
        out["port"] = u.port or (443 if u.scheme in ("https", "grpcs", "wss") else 80)
        if u.path:
            out["path"] = u.path
        return out

    def route(self, raw: Any, path: str, service_id: str | None = None) -> None:
        r = self.entity(raw, ROUTE, path, drop=("plugins",))
        if r is None:
            return
        if service_id is not None:
            r["service"] = service_id
        elif r.get("service") is not None:
            self.pending.append(("route.service", r, path))
        _check_route(r, path, self.errors)
        _upsert(self.state.routes, r)
        for i, p in enumerate(raw.get("plugins") or []):
            self.plugin(p, f"{path}.plugins[{i}]", {"route": r["id"]})

    # plugins

    def plugin(self, raw: Any, path: str, owner: dict[str, str]) -> None:
        if not isinstance(raw, dict):
            self.errors.append(f"{path}: expected a record")
            return
        name = raw.get("name")
        schema = PLUGINS.get(name) if isinstance(name, str) else None
        if schema is None:
            self.errors.append(f"{path}.name: plugin '{name}' not enabled; add it to the 'plugins' configuration "
                               "property" if isinstance(name, str) else f"{path}.name: required field missing")
            return
        protocols, conf_spec, entity_check = schema
        spec = record(*PLUGIN_BASE, ("protocols", protocols), ("config", conf_spec))
        p = self.entity(raw, spec, path)
        if p is None:
            return
        if entity_check is not None:
            problem = entity_check(p["config"])
            if problem:
                self.errors.append(f"{path}.{problem}")
        for k, v in owner.items():
            if p.get(k) is not None and p[k] != v:
                self.errors.append(f"{path}.{k}: a nested plugin belongs to its parent")
            p[k] = v
        if any(p.get(k) is not None for k in ("service", "route", "consumer") if k not in owner):
            self.pending.append(("plugin", p, path))
        if name in ("key-auth", "basic-auth", "jwt", "acl", "cors") and p.get("consumer") is not None:
            self.errors.append(f"{path}.consumer: value must be null")
        _upsert_plugin(self.state.plugins, p)

    # upstreams, consumers, certificates

    def upstream(self, raw: Any, path: str) -> None:
        u = self.entity(raw, UPSTREAM, path, drop=("targets",))
        if u is None:
            return
        targets = []
        for i, t in enumerate(raw.get("targets") or []):
            te = self.entity(t, TARGET, f"{path}.targets[{i}]")
            if te is not None:
                te["target"] = _normalise_target(te["target"], f"{path}.targets[{i}].target", self.errors)
                targets.append(te)
        u["targets"] = targets
        _upsert(self.state.upstreams, u)

    def consumer(self, raw: Any, path: str) -> None:
        c = self.entity(raw, CONSUMER, path, drop=(*CREDENTIALS, "plugins", "groups"))
        if c is None:
            return
        if c.get("username") is None and c.get("custom_id") is None:
            self.errors.append(f"{path}: at least one of these fields must be non-empty: 'custom_id', 'username'")
        for kind, spec in CREDENTIALS.items():
            creds = []
            for i, cr in enumerate(raw.get(kind) or []):
                ce = self.entity(cr, spec, f"{path}.{kind}[{i}]")
                if ce is not None:
                    _fill_credential(kind, ce, f"{path}.{kind}[{i}]", self.errors)
                    creds.append(ce)
            c[kind] = creds
        _upsert(self.state.consumers, c)
        for i, p in enumerate(raw.get("plugins") or []):
            self.plugin(p, f"{path}.plugins[{i}]", {"consumer": c["id"]})

    def certificate(self, raw: Any, path: str) -> None:
        cert = self.entity(raw, CERTIFICATE, path, drop=("snis",))
        if cert is None:
            return
        _upsert(self.state.certificates, cert)
        for i, s in enumerate(raw.get("snis") or []):
            sni = self.entity({"name": s} if isinstance(s, str) else s, SNI, f"{path}.snis[{i}]")
            if sni is not None:
                sni["certificate"] = cert["id"]
                _upsert(self.state.snis, sni)

    # references

    def resolve(self) -> None:
        for kind, e, path in self.pending:
            fields = ("service",) if kind == "route.service" else ("service", "route", "consumer")
            for f in fields:
                if e.get(f) is not None:
                    e[f] = self._ref(f, e[f], f"{path}.{f}")

    def _ref(self, kind: str, ref: Any, path: str) -> str | None:
        pool = {"service": self.state.services, "route": self.state.routes, "consumer": self.state.consumers}[kind]
        key = ref.get("id") or ref.get("name") or ref.get("username") if isinstance(ref, dict) else ref
        if not isinstance(key, str):
            self.errors.append(f"{path}: expected a name or id")
            return None
        for e in pool:
            if key in (e["id"], e.get("name"), e.get("username"), e.get("custom_id")):
                return str(e["id"])
        self.errors.append(f"{path}: {kind} '{key}' not found")
        return None


def _check_route(r: Entity, path: str, errors: Errors) -> None:
    http = any(p in ("http", "https", "grpc", "grpcs") for p in r["protocols"])
    if http and not any(r.get(k) for k in ("methods", "hosts", "headers", "paths", "snis")):
        errors.append(f"{path}: must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is "
                      f"'{'http' if 'http' in r['protocols'] else r['protocols'][0]}'")
    for i, p in enumerate(r.get("paths") or []):
        if not (p.startswith("/") or p.startswith("~/")):
            errors.append(f"{path}.paths[{i}]: should start with: / (fixed path) or ~/ (regex path)")
        elif p.startswith("~"):
            from pitwall.core.regex import RegexError
            from pitwall.core.regex import compile as re2_compile
            try:
                re2_compile(p[1:])
            except RegexError as e:
                errors.append(f"{path}.paths[{i}]: invalid regex: '{p[1:]}' ({e})")
    for name in r.get("headers") or {}:
        if name.lower() == "host":
            errors.append(f"{path}.headers: cannot contain 'host' header, which must be specified in the 'hosts' "
                          "attribute")


def _normalise_target(t: str, path: str, errors: Errors) -> str:
    host, sep, port = t.rpartition(":") if not t.endswith("]") else (t, "", "")
    if sep and port.isdigit() and (not host.count(":") or host.startswith("[")):
        return t
    if ":" in t and not t.startswith("["):
        errors.append(f"{path}: Invalid target ('{t}'); not a valid hostname or ip address")
        return t
    return f"{t}:8000"


def _fill_credential(kind: str, c: Entity, path: str, errors: Errors) -> None:
    if kind == "keyauth_credentials" and not c.get("key"):
        c["key"] = uuid.uuid4().hex
    if kind == "jwt_secrets":
        c["key"] = c.get("key") or uuid.uuid4().hex
        c["secret"] = c.get("secret") or uuid.uuid4().hex
        if not c["algorithm"].startswith("HS") and not c.get("rsa_public_key"):
            errors.append(f"{path}.rsa_public_key: required field missing (algorithm {c['algorithm']})")


def _key(e: Entity) -> str:
    return str(e.get("name") or e.get("username") or e.get("id"))


def _upsert(pool: list[Entity], e: Entity) -> None:
    """Replace the entity with the same id or name (decK matches by either), else add it."""
    for i, old in enumerate(pool):
        if old["id"] == e["id"] or (e.get("name") is not None and old.get("name") == e.get("name")) or \
                (e.get("username") is not None and old.get("username") == e.get("username")):
            pool[i] = e
            return
    pool.append(e)


def _upsert_plugin(pool: list[Entity], p: Entity) -> None:
    scope = (p["name"], p.get("service"), p.get("route"), p.get("consumer"), p.get("instance_name"))
    for i, old in enumerate(pool):
        if old["id"] == p["id"] or (old["name"], old.get("service"), old.get("route"), old.get("consumer"),
                                    old.get("instance_name")) == scope:
            pool[i] = p
            return
    pool.append(p)


def _duplicates(state: KongState, errors: Errors) -> None:
    """Kong's unique keys: names of services, routes, upstreams; usernames; key-auth keys; plugin scopes."""
    for kind, pool, attr in (("services", state.services, "name"), ("routes", state.routes, "name"),
                             ("upstreams", state.upstreams, "name"), ("consumers", state.consumers, "username"),
                             ("consumers", state.consumers, "custom_id")):
        seen: set[Any] = set()
        for e in pool:
            v = e.get(attr)
            if v is not None and v in seen:
                errors.append(f"{kind}: uniqueness violation: '{kind}' entity with {attr} set to '{v}' already "
                              "declared")
            seen.add(v)
    keys: set[str] = set()
    for c in state.consumers:
        for cred in c.get("keyauth_credentials") or []:
            if cred["key"] in keys:
                errors.append("keyauth_credentials: uniqueness violation: 'keyauth_credentials' entity with key set "
                              "to a key already declared")
            keys.add(cred["key"])


def apply_declarative(state: KongState, data: Any) -> KongState:
    """``state`` plus the entities of ``data`` (a parsed declarative file); raises ``DeclarativeError``."""
    if not isinstance(data, dict):
        raise DeclarativeError(["expected an object"])
    errors: Errors = []
    if data.get("_format_version") != FORMAT_VERSION:
        errors.append(f"_format_version: expected \"{FORMAT_VERSION}\""
                      if "_format_version" in data else "_format_version: required field missing")
    for k in data:
        if k not in _TOP_KEYS:
            errors.append(f"{k}: unknown field")
    loader = _Loader(state.copy())
    lists = {k: data.get(k) or [] for k in ("services", "routes", "plugins", "upstreams", "consumers",
                                            "certificates", "snis", "vaults", "ca_certificates")}
    for k, v in lists.items():
        if not isinstance(v, list):
            errors.append(f"{k}: expected an array")
            lists[k] = []
    for i, s in enumerate(lists["services"]):
        loader.service(s, f"services[{i}]")
    for i, u in enumerate(lists["upstreams"]):
        loader.upstream(u, f"upstreams[{i}]")
    for i, c in enumerate(lists["consumers"]):
        loader.consumer(c, f"consumers[{i}]")
    for i, r in enumerate(lists["routes"]):
        loader.route(r, f"routes[{i}]")
    for i, p in enumerate(lists["plugins"]):
        loader.plugin(p, f"plugins[{i}]", {})
    for i, c in enumerate(lists["certificates"]):
        loader.certificate(c, f"certificates[{i}]")
    for i, s in enumerate(lists["snis"]):
        sni = loader.entity(s, SNI, f"snis[{i}]")
        if sni is not None:
            _upsert(loader.state.snis, sni)
    for i, v in enumerate(lists["vaults"]):
        ve = loader.entity(v, VAULT, f"vaults[{i}]")
        if ve is not None:
            _upsert(loader.state.vaults, ve)
    for i, c in enumerate(lists["ca_certificates"]):
        ce = loader.entity(c, CA_CERTIFICATE, f"ca_certificates[{i}]")
        if ce is not None:
            _upsert(loader.state.ca_certificates, ce)
    loader.resolve()
    _duplicates(loader.state, errors)
    errors.extend(loader.errors)
    if errors:
        raise DeclarativeError(errors)
    return loader.state


def load_declarative(data: Any) -> KongState:
    """A fresh ``KongState`` from a parsed declarative file; raises ``DeclarativeError`` listing every problem."""
    return apply_declarative(KongState(), data)


# dump, in decK's layout

def _clean(e: Entity, state: KongState, drop: tuple[str, ...] = ()) -> Entity:
    out = {k: v for k, v in e.items() if v is not None and k not in drop}
    if out.get("id") in state.generated_ids:
        del out["id"]
    return out


def _dump_plugins(state: KongState, **owner: str | None) -> list[Entity]:
    out = []
    for p in state.plugins:
        if all(p.get(k) == owner.get(k) for k in ("service", "route", "consumer")):
            out.append(_clean(p, state, drop=("service", "route", "consumer")))
    return sorted(out, key=lambda p: (p["name"], p.get("instance_name") or ""))


def _dump_route(state: KongState, r: Entity) -> Entity:
    d = _clean(r, state, drop=("service",))
    plugins = _dump_plugins(state, route=r["id"])
    if plugins:
        d["plugins"] = plugins
    return d


def dump(state: KongState) -> dict[str, Any]:
    """The state in decK's layout: nulls and generated ids omitted, nested entities under their owner."""
    out: dict[str, Any] = {"_format_version": FORMAT_VERSION}
    services = []
    for s in sorted(state.services, key=_key):
        d = _clean(s, state)
        routes = [_dump_route(state, r) for r in sorted(state.routes, key=_key) if r.get("service") == s["id"]]
        if routes:
            d["routes"] = routes
        plugins = _dump_plugins(state, service=s["id"])
        if plugins:
            d["plugins"] = plugins
        services.append(d)
    routes = [_dump_route(state, r) for r in sorted(state.routes, key=_key) if r.get("service") is None]
    consumers = []
    for c in sorted(state.consumers, key=_key):
        d = _clean(c, state)
        for kind in CREDENTIALS:
            creds = [_clean(x, state) for x in c.get(kind) or []]
            if creds:
                d[kind] = creds
            else:
                d.pop(kind, None)
        plugins = _dump_plugins(state, consumer=c["id"])
        if plugins:
            d["plugins"] = plugins
        consumers.append(d)
    nested = {p["id"] for p in state.plugins if sum(p.get(k) is not None for k in ("service", "route",
                                                                                   "consumer")) == 1}
    top = sorted((_clean(p, state) for p in state.plugins if p["id"] not in nested),
                 key=lambda p: (p["name"], p.get("instance_name") or ""))
    upstreams = []
    for u in sorted(state.upstreams, key=_key):
        d = _clean(u, state)
        d["targets"] = [_clean(t, state) for t in u.get("targets") or []]
        upstreams.append(d)
    for name, items in (("services", services), ("routes", routes), ("consumers", consumers), ("plugins", top),
                        ("upstreams", upstreams),
                        ("certificates", [_clean(c, state) for c in state.certificates]),
                        ("snis", [_clean(s, state) for s in state.snis]),
                        ("vaults", [_clean(v, state) for v in state.vaults]),
                        ("ca_certificates", [_clean(c, state) for c in state.ca_certificates])):
        if items:
            out[name] = items
    return out
