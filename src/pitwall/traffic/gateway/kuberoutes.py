"""The routes the gateway takes from the Kubernetes API: HTTPRoutes first, then Ingress rules."""

from __future__ import annotations

from dataclasses import dataclass, field

from pitwall.traffic.gateway.context import Ctx, Request
from pitwall.traffic.gateway.gatewayapi import HTTPRouteTable
from pitwall.traffic.gateway.ingress import IngressRoutes
from pitwall.traffic.gateway.runtime import RouteRT

__all__ = ["KubeRoutes"]


@dataclass
class KubeRoutes:
    """One immutable snapshot of both sources; the gateway swaps the whole object on change."""

    http: HTTPRouteTable = field(default_factory=HTTPRouteTable)
    ingress: IngressRoutes = field(default_factory=IngressRoutes)

    def find(self, req: Request, ctx: Ctx) -> RouteRT | None:
        """An HTTPRoute's match, else an Ingress rule's; None when neither (Kong's routes come next)."""
        got = self.http.find(req, ctx)
        return got if got is not None else self.ingress.find(req.host, req.path)

    @property
    def empty(self) -> bool:
        """No HTTPRoute, Ingress rule or default backend: requests go to Kong's routes as without it."""
        i = self.ingress
        return not self.http.entries and not (i.exact_hosts or i.wildcard_hosts or i.any_host) and i.default is None

    @property
    def default(self) -> RouteRT | None:
        """The Ingress default backend: the last resort, after Kong's routes."""
        return self.ingress.default
