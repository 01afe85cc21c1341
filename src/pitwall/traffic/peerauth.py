"""Istio's PeerAuthentication: which inbound traffic a workload accepts (mutual TLS, plaintext, both).

Scopes and inheritance follow Istio: a policy in the root namespace
(``istio-system``) without a selector is mesh-wide; one without a selector
in a namespace covers that namespace; one with ``selector.matchLabels``
covers the matching pods of its namespace and may set ``portLevelMtls``
(keyed by the workload's port). The most specific policy decides; a mode
``UNSET`` (or no ``mtls``) inherits from the next wider scope, a port's
``UNSET`` from its policy's workload mode; with nothing set the mode is
``PERMISSIVE``. When several policies share one scope the oldest wins.
Modes: ``STRICT`` accepts mutual TLS only, ``PERMISSIVE`` both,
``DISABLE`` plaintext only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pitwall.traffic.pods import PodInfo

__all__ = ["MODES", "PeerAuthConfig", "compile_peer_auth"]

Obj = dict[str, Any]
MODES = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")
ROOT_NAMESPACE = "istio-system"
DEFAULT_MODE = "PERMISSIVE"


@dataclass(frozen=True)
class _Policy:
    name: str
    namespace: str
    selector: tuple[tuple[str, str], ...]
    mode: str
    ports: tuple[tuple[int, str], ...] = ()

    def selects(self, pod: PodInfo) -> bool:
        return self.namespace == pod.namespace and all(pod.labels.get(k) == v for k, v in self.selector)


@dataclass(frozen=True)
class PeerAuthConfig:
    """The PeerAuthentications in force, immutable (part of the mesh config snapshot)."""

    mesh: _Policy | None = None
    namespaces: dict[str, _Policy] = field(default_factory=dict)
    workloads: tuple[_Policy, ...] = ()  # oldest first
    errors: dict[str, str] = field(default_factory=dict)
    # Whether any policy asks for STRICT, computed once: lets the per-request path skip the lookup.
    strict_anywhere: bool = False

    def mode(self, pod: PodInfo | None, port: int) -> str:
        """The effective mode for inbound traffic to ``pod`` on its port ``port``."""
        chain: list[str] = []
        if pod is not None:
            wl = next((p for p in self.workloads if p.selects(pod)), None)
            if wl is not None:
                chain += [m for pt, m in wl.ports if pt == port]
                chain.append(wl.mode)
            ns = self.namespaces.get(pod.namespace)
            if ns is not None:
                chain.append(ns.mode)
        if self.mesh is not None:
            chain.append(self.mesh.mode)
        return next((m for m in chain if m != "UNSET"), DEFAULT_MODE)


def _mode(v: Any, path: str) -> str:
    m = str(v or "UNSET").upper()
    if m not in MODES:
        raise ValueError(f"{path}: unknown mode {v!r} (one of {', '.join(MODES)})")
    return m


def _age(o: Obj) -> tuple[str, str, str]:
    m = o.get("metadata") or {}
    return str(m.get("creationTimestamp") or ""), str(m.get("namespace") or ""), str(m.get("name") or "")


def compile_peer_auth(objs: Iterable[Obj]) -> PeerAuthConfig:
    """Compile the PeerAuthentication objects; one that cannot be used is skipped with its error kept."""
    mesh: _Policy | None = None
    namespaces: dict[str, _Policy] = {}
    workloads: list[_Policy] = []
    errors: dict[str, str] = {}
    for o in sorted(objs, key=_age):
        meta, spec = o.get("metadata") or {}, o.get("spec") or {}
        ns, name = str(meta.get("namespace") or "default"), str(meta.get("name") or "")
        try:
            mode = _mode((spec.get("mtls") or {}).get("mode"), "spec.mtls.mode")
            labels = (spec.get("selector") or {}).get("matchLabels") or {}
            ports = tuple((int(k), _mode((v or {}).get("mode"), f"spec.portLevelMtls[{k}].mode"))
                          for k, v in (spec.get("portLevelMtls") or {}).items())
        except (ValueError, TypeError, AttributeError) as e:
            errors[f"{ns}/{name}"] = str(e)
            continue
        if labels:
            workloads.append(_Policy(name, ns, tuple(sorted((str(k), str(v)) for k, v in labels.items())), mode,
                                     ports))
        elif ns == ROOT_NAMESPACE:  # portLevelMtls without a selector is ignored, as Istio does
            mesh = mesh or _Policy(name, ns, (), mode)
        else:
            namespaces.setdefault(ns, _Policy(name, ns, (), mode))
    pols = [*([mesh] if mesh else []), *namespaces.values(), *workloads]
    strict = any(p.mode == "STRICT" or any(m == "STRICT" for _, m in p.ports) for p in pols)
    return PeerAuthConfig(mesh, namespaces, tuple(workloads), errors, strict)

