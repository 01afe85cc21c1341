"""Istio's AuthorizationPolicy, evaluated for each request at the destination workload.

Order (Istio's): CUSTOM policies are skipped (pitwall has no external
authorizer to call; each is listed in ``AuthzConfig.skipped`` with the
reason), then any matching DENY policy denies, then when no ALLOW policy
applies to the workload the request is allowed, else it is allowed only
when an ALLOW policy matches. AUDIT policies do not decide. A policy
applies to a workload when it is in the workload's namespace (or the root
namespace ``istio-system``) and its ``selector.matchLabels`` match the pod
(no selector: every workload there); policies with ``targetRef(s)`` are for
gateways and are skipped.

A policy matches when any rule matches; a rule matches when any ``from``
source, any ``to`` operation and every ``when`` condition match (an absent
section matches). Within a source or operation every field set must hold;
each field is a list of alternatives; ``notX`` fields exclude. Strings
match exactly, by prefix (``abc*``), by suffix (``*abc``) or always
(``*``). ``principals`` are SPIFFE IDs without the ``spiffe://`` scheme
(``cluster.local/ns/default/sa/sleep``): the caller is identified by its
pod IP, as mTLS is not in this slice. ``requestPrincipals`` and
``request.auth.*`` need a JWT (RequestAuthentication is not enforced):
they never match, so a DENY on them denies nothing and an ALLOW on them
allows nothing.

Policies translated from Consul's intentions (``registry.mesh_entries``)
use three fields Istio has not: a rule's ``x-unless`` (rules that, when one
matches, stop this rule: Consul's first match wins), an operation's
``x-pathRegex`` and a condition's ``x-consul`` header match (Consul's
Present/Exact/Prefix/Suffix/Regex with Invert); Istio's schema defines no
such fields.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pitwall.core import regex as re2
from pitwall.traffic.pods import PodInfo

__all__ = ["AuthzConfig", "AuthzRequest", "compile_authz"]

Obj = dict[str, Any]
ROOT_NAMESPACE = "istio-system"


@dataclass(slots=True)
class AuthzRequest:
    """What a rule reads of a request."""

    source: PodInfo | None
    source_ip: str
    method: str
    path: str
    host: str
    port: int  # the destination (workload) port
    headers: Mapping[str, str]
    dest_ip: str = ""


def _str_match(pattern: str, value: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _any(patterns: Iterable[str], value: str | None) -> bool:
    return value is not None and any(_str_match(p, value) for p in patterns)


def _in_blocks(blocks: Iterable[str], ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    for b in blocks:
        try:
            if addr in ipaddress.ip_network(b, strict=False):
                return True
        except ValueError:
            continue
    return False


def _field(spec: Obj, name: str, value: str | None, match: Any = _any) -> bool:
    """``name`` and ``notName`` of ``spec`` against ``value`` (True when neither is set)."""
    pos, neg = spec.get(name), spec.get("not" + name[0].upper() + name[1:])
    if pos is not None and not match(pos, value):
        return False
    return not (neg is not None and match(neg, value))


def _principal(r: AuthzRequest) -> str | None:
    return r.source.principal.removeprefix("spiffe://") if r.source else None


def _source(s: Obj, r: AuthzRequest) -> bool:
    if "requestPrincipals" in s:
        return False  # no JWT is ever validated
    ns = r.source.namespace if r.source else None
    return (_field(s, "principals", _principal(r)) and _field(s, "namespaces", ns)
            and _field(s, "ipBlocks", r.source_ip, _in_blocks) and _field(s, "remoteIpBlocks", r.source_ip, _in_blocks)
            and _field(s, "serviceAccounts", f"{r.source.namespace}/{r.source.service_account}" if r.source else None))


def _ports(ps: Iterable[str], port: str | None) -> bool:
    return port is not None and any(str(p) == port for p in ps)


def _operation(o: Obj, r: AuthzRequest) -> bool:
    rx = o.get("x-pathRegex")
    if rx is not None and not _regex(str(rx)).matches(r.path.split("?", 1)[0]):
        return False
    return (_field(o, "methods", r.method) and _field(o, "paths", r.path.split("?", 1)[0])
            and _field(o, "hosts", r.host, lambda ps, v: _any([p.lower() for p in ps], (v or "").lower()))
            and _field(o, "ports", str(r.port), _ports))


@functools.lru_cache(maxsize=1024)
def _regex(pattern: str) -> re2.Regex:
    return re2.compile(pattern, anchored=True)


def _consul_header(h: Obj, value: str | None) -> bool:
    """A Consul intention permission's header match (Present/Exact/Prefix/Suffix/Regex, Invert)."""
    if h.get("Exact"):
        hit = value == str(h["Exact"])
    elif h.get("Prefix"):
        hit = value is not None and value.startswith(str(h["Prefix"]))
    elif h.get("Suffix"):
        hit = value is not None and value.endswith(str(h["Suffix"]))
    elif h.get("Regex"):
        hit = value is not None and _regex(str(h["Regex"])).matches(value)
    else:
        hit = value is not None
    return hit != bool(h.get("Invert"))


def _condition(c: Obj, r: AuthzRequest) -> bool:
    key = str(c.get("key") or "")
    if "x-consul" in c:
        return _consul_header(c["x-consul"], r.headers.get(key[len("request.headers["):-1]))
    value: str | None
    if key.startswith("request.headers[") and key.endswith("]"):
        value = r.headers.get(key[len("request.headers["):-1].lower())
    elif key in ("source.ip", "remote.ip"):
        ip = r.source_ip
        return _field(c, "values", ip, _in_blocks)
    elif key == "source.namespace":
        value = r.source.namespace if r.source else None
    elif key == "source.principal":
        value = _principal(r)
    elif key == "destination.port":
        value = str(r.port)
    elif key == "destination.ip":
        return _field(c, "values", r.dest_ip, _in_blocks)
    else:  # request.auth.*, connection.sni, experimental.*: not available without JWT/TLS
        value = None
    pos, neg = c.get("values"), c.get("notValues")
    if pos is not None and not _any(pos, value):
        return False
    return not (neg is not None and value is not None and _any(neg, value))


def _rule(rule: Obj, r: AuthzRequest) -> bool:
    if any(_rule(u, r) for u in rule.get("x-unless") or ()):
        return False  # an earlier (higher precedence) decision covers this request: Consul's first match
    froms, tos, whens = rule.get("from"), rule.get("to"), rule.get("when")
    if froms and not any(_source(f.get("source") or {}, r) for f in froms):
        return False
    if tos and not any(_operation(t.get("operation") or {}, r) for t in tos):
        return False
    return not (whens and not all(_condition(w, r) for w in whens))


@dataclass(frozen=True)
class _Policy:
    name: str
    namespace: str
    action: str
    selector: tuple[tuple[str, str], ...]
    rules: tuple[Obj, ...]

    def applies(self, pod: PodInfo) -> bool:
        if self.namespace not in (pod.namespace, ROOT_NAMESPACE):
            return False
        return all(pod.labels.get(k) == v for k, v in self.selector)

    def matches(self, r: AuthzRequest) -> bool:
        return any(_rule(rule, r) for rule in self.rules)


@dataclass(frozen=True)
class AuthzConfig:
    """The AuthorizationPolicies in force, immutable (part of the mesh config snapshot)."""

    policies: tuple[_Policy, ...] = ()
    skipped: Mapping[str, str] = field(default_factory=dict)

    def allowed(self, dest: PodInfo, r: AuthzRequest) -> bool:
        """Istio's decision for a request to workload ``dest``."""
        if not self.policies:
            return True
        applicable = [p for p in self.policies if p.applies(dest)]
        if any(p.action == "DENY" and p.matches(r) for p in applicable):
            return False
        allows = [p for p in applicable if p.action == "ALLOW"]
        return not allows or any(p.matches(r) for p in allows)


def compile_authz(policies: Iterable[Obj]) -> AuthzConfig:
    out: list[_Policy] = []
    skipped: dict[str, str] = {}
    for o in policies:
        meta, spec = o.get("metadata") or {}, o.get("spec") or {}
        ns, name = str(meta.get("namespace") or "default"), str(meta.get("name") or "")
        action = str(spec.get("action") or "ALLOW")
        if action == "CUSTOM":
            skipped[f"{ns}/{name}"] = "CUSTOM needs an external authorizer (extensionProviders), which pitwall " \
                                      "does not call"
            continue
        if spec.get("targetRef") or spec.get("targetRefs"):
            skipped[f"{ns}/{name}"] = "targetRef(s) attach to gateways; the mesh proxy applies selector policies"
            continue
        if action == "AUDIT":
            continue
        selector = tuple(sorted((str(k), str(v)) for k, v in
                                ((spec.get("selector") or {}).get("matchLabels") or {}).items()))
        out.append(_Policy(name, ns, action, selector, tuple(r or {} for r in spec.get("rules") or [])))
    return AuthzConfig(tuple(out), skipped)
