"""Kong's plugins, implemented for pitwall's gateway; ``PLUGIN_TYPES`` maps a plugin name to its class."""

from pitwall.traffic.gateway.plugins.auth import ACL, BasicAuth, JWTAuth, KeyAuth
from pitwall.traffic.gateway.plugins.base import Consumers, Env, Plugin
from pitwall.traffic.gateway.plugins.edge import CORS, CorrelationID, IPRestriction, RequestTermination
from pitwall.traffic.gateway.plugins.prometheus import Prometheus
from pitwall.traffic.gateway.plugins.ratelimit import RateLimiting
from pitwall.traffic.gateway.plugins.transform import RequestTransformer, ResponseTransformer

__all__ = ["PLUGIN_TYPES", "Consumers", "Env", "Plugin"]

PLUGIN_TYPES: dict[str, type[Plugin]] = {p.name: p for p in (
    ACL, BasicAuth, JWTAuth, KeyAuth, CORS, CorrelationID, IPRestriction, RequestTermination, Prometheus,
    RateLimiting, RequestTransformer, ResponseTransformer)}
