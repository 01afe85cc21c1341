"""Istio's ServiceEntry: hosts outside the Kubernetes registry made known to the mesh.

A ServiceEntry adds ``hosts`` (exact names or ``*.suffix`` wildcards) with
``ports`` and where their traffic goes. Compiled here into one immutable
``ServiceEntries`` table (part of the ``MeshConfig`` snapshot), so a pod's
request for such a host through its egress listener is routed by the same
HTTP path as a request to a Service: VirtualService and DestinationRule
rules written for the host apply, and Istio's metrics name the host.

As Istio defines the fields:

- ``resolution``: ``STATIC`` (the ``endpoints``' addresses are IPs),
  ``DNS`` / ``DNS_ROUND_ROBIN`` (the endpoints' addresses, or the host
  itself when there are none, are names resolved when a connection is
  opened; Envoy re-resolves periodically, pitwall at each new upstream
  connection), ``NONE`` (the default: the original destination, i.e. the
  host and port the request names).
- ``location``: ``MESH_EXTERNAL`` (the default) has no sidecar at the
  other end: no AuthorizationPolicy or PeerAuthentication applies there and
  only the source reporter counts the request; ``MESH_INTERNAL`` endpoints
  that are pods are treated as those pods.
- ``ports``: ``number``, ``protocol`` (HTTP, HTTP2, GRPC are routed request
  by request; others are relayed), ``name``, ``targetPort``; an endpoint's
  ``ports[<port name>]`` overrides the port it is reached on, else
  ``targetPort``, else ``number``.
- ``endpoints``: ``address``, ``ports``, ``labels`` (DestinationRule subsets
  select on them), ``weight`` (load-balancing weight: the endpoint appears
  that many times, normalised, in the list the balancer picks from).

Several entries naming one host: the oldest wins (as Istio's conflict
rule); a later one is reported in ``errors``. Not supported: ``addresses``
(VIPs / CIDRs: pods' traffic reaches the mesh by HTTP proxy, not by
address), ``workloadSelector``, ``exportTo``, ``subjectAltNames``, Unix
socket endpoints.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pitwall.traffic.balancer import Backend

__all__ = ["EntryPort", "HostEntry", "ServiceEntries", "compile_service_entries", "entry_error"]

Obj = dict[str, Any]
RESOLUTIONS = ("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN")
LOCATIONS = ("MESH_EXTERNAL", "MESH_INTERNAL")
HTTP_PROTOCOLS = ("HTTP", "HTTP2", "GRPC", "GRPC-WEB")
_MAX_WEIGHTED = 100  # entries of one port's weighted endpoint list, at most


class EntryError(ValueError):
    """A ServiceEntry the mesh cannot use (the message names the field)."""


@dataclass(frozen=True)
class EntryPort:
    """One of an entry's ports, with the endpoints serving it (weights expanded) and their labels."""

    number: int
    name: str
    protocol: str
    endpoints: tuple[Backend, ...]
    labels: Mapping[Backend, Mapping[str, str]] = field(default_factory=dict, hash=False, compare=False)

    @property
    def http(self) -> bool:
        """Whether requests on this port are routed one by one (Istio's HTTP protocols)."""
        return self.protocol in HTTP_PROTOCOLS


@dataclass(frozen=True)
class HostEntry:
    """One host of a ServiceEntry, as the mesh routes it."""

    host: str  # lower-cased; ``*.suffix`` for a wildcard
    namespace: str
    name: str  # the ServiceEntry's name
    location: str
    resolution: str
    ports: tuple[EntryPort, ...]

    @property
    def external(self) -> bool:
        return self.location == "MESH_EXTERNAL"

    @property
    def original_dst(self) -> bool:
        """Resolution ``NONE``: the connection goes where the request names (Envoy's ORIGINAL_DST)."""
        return self.resolution == "NONE"

    def port(self, number: int) -> EntryPort | None:
        """The port ``number``, or (``0``) the first port."""
        if not number:
            return self.ports[0] if self.ports else None
        return next((p for p in self.ports if p.number == number), None)


@dataclass(frozen=True)
class ServiceEntries:
    """The ServiceEntries in force, by host (immutable, part of the mesh snapshot)."""

    hosts: Mapping[str, HostEntry] = field(default_factory=dict)
    wildcards: tuple[HostEntry, ...] = ()  # longest suffix first
    errors: Mapping[str, str] = field(default_factory=dict)  # "ServiceEntry ns/name" -> why ignored

    def lookup(self, host: str) -> HostEntry | None:
        """The entry for ``host`` (a name a request uses, or an entry's own ``*.suffix``): an exact host
        first, else the most specific wildcard."""
        h = host.lower().rstrip(".")
        got = self.hosts.get(h)
        if got is not None or not self.wildcards:
            return got
        return next((e for e in self.wildcards if h.endswith(e.host[1:]) and h != e.host[1:]), None)

    def names(self) -> list[str]:
        """Every host, for compiling the VirtualServices and DestinationRules that name them."""
        return [*self.hosts, *(e.host for e in self.wildcards)]


def _meta(o: Obj) -> tuple[str, str]:
    m = o.get("metadata") or {}
    return str(m.get("namespace") or "default"), str(m.get("name") or "")


def _age(o: Obj) -> tuple[str, str, str]:
    return str((o.get("metadata") or {}).get("creationTimestamp") or ""), *_meta(o)


def _choice(v: Any, allowed: tuple[str, ...], default: str, path: str) -> str:
    s = str(v or default).upper()
    if s not in allowed:
        raise EntryError(f"{path}: {v!r} is not one of {', '.join(allowed)}")
    return s


def _port_number(v: Any, path: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 < v < 65536:
        raise EntryError(f"{path}: a port number 1-65535 is needed, not {v!r}")
    return v


def _weighted(backends: list[tuple[Backend, int]]) -> tuple[Backend, ...]:
    """Each backend repeated in proportion to its weight (equal weights: once each), bounded."""
    weights = [w for _, w in backends]
    if len(set(weights)) <= 1:
        return tuple(b for b, _ in backends)
    g = math.gcd(*weights)
    total = sum(weights) // g
    scale = min(1.0, _MAX_WEIGHTED / total)
    return tuple(b for b, w in backends for _ in range(max(1, round(w // g * scale))))


def _host_entries(o: Obj) -> list[HostEntry]:
    ns, name = _meta(o)
    spec = o.get("spec") or {}
    hosts = [str(h).strip().lower().rstrip(".") for h in spec.get("hosts") or []]
    if not hosts:
        raise EntryError("spec.hosts: at least one host is needed")
    location = _choice(spec.get("location"), LOCATIONS, "MESH_EXTERNAL", "spec.location")
    resolution = _choice(spec.get("resolution"), RESOLUTIONS, "NONE", "spec.resolution")
    if spec.get("workloadSelector"):
        raise EntryError("spec.workloadSelector: not supported by pitwall's mesh (give endpoints)")
    raw_ports = spec.get("ports") or []
    if not raw_ports:
        raise EntryError("spec.ports: at least one port is needed")
    eps = spec.get("endpoints") or []
    if resolution == "STATIC" and not eps:
        raise EntryError("spec.endpoints: resolution STATIC needs endpoints")
    if resolution in ("DNS", "DNS_ROUND_ROBIN") and not eps and any(h.startswith("*") for h in hosts):
        raise EntryError("spec.hosts: a wildcard host cannot be resolved by DNS without endpoints")
    out = []
    for host in hosts:
        ports = []
        for i, p in enumerate(raw_ports):
            path = f"spec.ports[{i}]"
            number = _port_number((p or {}).get("number"), f"{path}.number")
            pname = str(p.get("name") or "")
            target = _port_number(p["targetPort"], f"{path}.targetPort") if p.get("targetPort") else number
            weighted: list[tuple[Backend, int]] = []
            labels: dict[Backend, Mapping[str, str]] = {}
            if resolution != "NONE":
                for j, ep in enumerate(eps or [{"address": host}]):
                    epath = f"spec.endpoints[{j}]"
                    addr = str((ep or {}).get("address") or "")
                    if not addr or addr.startswith("unix://"):
                        raise EntryError(f"{epath}.address: an IP or host name is needed")
                    over = (ep.get("ports") or {}).get(pname)
                    b = Backend(addr, _port_number(over, f"{epath}.ports.{pname}") if over else target)
                    w = ep.get("weight") or 1
                    if not isinstance(w, int) or w < 1:
                        raise EntryError(f"{epath}.weight: a positive integer is needed, not {w!r}")
                    weighted.append((b, w))
                    labels[b] = {str(k): str(v) for k, v in (ep.get("labels") or {}).items()}
            ports.append(EntryPort(number, pname, str(p.get("protocol") or "TCP").upper(), _weighted(weighted),
                                   labels))
        out.append(HostEntry(host, ns, name, location, resolution, tuple(ports)))
    return out


def entry_error(o: Obj) -> str | None:
    """Why the mesh cannot use this ServiceEntry (the field path and the reason), or None."""
    try:
        _host_entries(o)
    except (EntryError, TypeError, AttributeError) as e:
        return str(e)
    return None


def compile_service_entries(objs: Iterable[Obj]) -> ServiceEntries:
    """The table of the ServiceEntry objects; per host the oldest entry wins, as in Istio."""
    hosts: dict[str, HostEntry] = {}
    errors: dict[str, str] = {}
    for o in sorted(objs, key=_age):
        ns, name = _meta(o)
        try:
            entries = _host_entries(o)
        except (EntryError, TypeError, AttributeError) as err:
            errors[f"ServiceEntry {ns}/{name}"] = str(err)
            continue
        for e in entries:
            if e.host in hosts:
                first = hosts[e.host]
                errors[f"ServiceEntry {ns}/{name}"] = (f"spec.hosts: {e.host} is already defined by "
                                                       f"{first.namespace}/{first.name} (the oldest wins)")
                continue
            hosts[e.host] = e
    wild = sorted((e for e in hosts.values() if e.host.startswith("*")), key=lambda e: -len(e.host))
    return ServiceEntries({h: e for h, e in hosts.items() if not h.startswith("*")}, tuple(wild), errors)
