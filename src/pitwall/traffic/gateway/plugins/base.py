"""What every plugin is: Kong's phases as methods, its priority, and the shared indexes it reads.

A plugin instance is built once per configuration from its entity
(``config`` with Kong's defaults filled). ``access`` runs before the request
goes upstream and raises ``Reply`` to answer instead; ``response`` edits the
response on its way back (Kong's header_filter and body_filter); ``log``
runs after the answer is sent. The proxy calls only the phases a plugin
overrides (``has_response``, ``has_log``), so an unused phase costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pitwall.traffic.gateway.context import Ctx, ResponseHead

__all__ = ["Consumers", "Env", "Plugin"]

Entity = dict[str, Any]


@dataclass
class Consumers:
    """Consumers and their credentials, indexed for the auth plugins."""

    by_ref: dict[str, Entity] = field(default_factory=dict)  # id, username and custom_id
    keyauth: dict[str, tuple[Entity, Entity]] = field(default_factory=dict)  # key -> (consumer, credential)
    basic: dict[str, tuple[Entity, Entity]] = field(default_factory=dict)  # username -> (consumer, credential)
    jwt: dict[str, tuple[Entity, Entity]] = field(default_factory=dict)  # key -> (consumer, jwt_secret)
    groups: dict[str, list[str]] = field(default_factory=dict)  # consumer id -> acl groups

    @classmethod
    def of(cls, consumers: list[Entity]) -> Consumers:
        out = cls()
        for c in consumers:
            for k in ("id", "username", "custom_id"):
                if c.get(k) is not None:
                    out.by_ref.setdefault(c[k], c)
            for cred in c.get("keyauth_credentials") or []:
                out.keyauth[cred["key"]] = (c, cred)
            for cred in c.get("basicauth_credentials") or []:
                out.basic[cred["username"]] = (c, cred)
            for cred in c.get("jwt_secrets") or []:
                out.jwt[cred["key"]] = (c, cred)
            out.groups[c["id"]] = [a["group"] for a in c.get("acls") or []]
        return out


@dataclass
class Env:
    """What plugins of one configuration share: consumers, services by id, and the metrics sink."""

    consumers: Consumers
    services: Mapping[str, Entity]
    stats: Any = None  # pitwall.traffic.gateway.stats.GatewayStats


class Plugin:
    """One configured plugin instance."""

    name: ClassVar[str] = ""
    priority: ClassVar[int] = 0  # Kong's PRIORITY: higher runs first
    is_auth: ClassVar[bool] = False

    def __init__(self, entity: Entity, env: Env) -> None:
        self.entity = entity
        self.conf: dict[str, Any] = entity["config"]
        self.env = env
        self.consumers = env.consumers
        self.has_response = type(self).response is not Plugin.response
        self.has_log = type(self).log is not Plugin.log

    def access(self, ctx: Ctx) -> None:
        """Before the request goes upstream; raise ``Reply`` to answer instead."""

    def response(self, ctx: Ctx, head: ResponseHead) -> None:
        """Edit the response (status, headers, body) before it is sent to the client."""

    def log(self, ctx: Ctx, head: ResponseHead, bytes_in: int) -> None:
        """After the response; no effect on it."""
