"""The Kubernetes API: discovery, OpenAPI, REST verbs, watch, patch/apply, CRDs.

It knows resources, not what they mean: objects of every served kind live
in the revisioned store under Kubernetes' etcd key layout, and controllers
elsewhere in pitwall give them meaning through ``KubeClient``.
``KubePodSource`` and ``KubeWorkloads`` are read-only views other pillars
are handed (pod discovery for scraping, the UI's workloads pages).
"""

from pitwall.kube.client import KubeClient, ListResult, WatchEvent
from pitwall.kube.errors import (
    AlreadyExists,
    BadRequest,
    Cause,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    MethodNotAllowed,
    NotFoundError,
)
from pitwall.kube.meta import fmt_time, parse_time
from pitwall.kube.metricsapi import MetricsProvider
from pitwall.kube.selectors import match_label_selector_object
from pitwall.kube.server import KubeAPI
from pitwall.kube.views import KubePodSource, KubeWorkloads
from pitwall.kube.wiring import build_kube

__all__ = [
    "AlreadyExists",
    "BadRequest",
    "Cause",
    "Conflict",
    "Forbidden",
    "Gone",
    "Invalid",
    "KubeAPI",
    "KubeClient",
    "KubeError",
    "KubePodSource",
    "KubeWorkloads",
    "ListResult",
    "MethodNotAllowed",
    "MetricsProvider",
    "NotFoundError",
    "WatchEvent",
    "build_kube",
    "fmt_time",
    "match_label_selector_object",
    "parse_time",
]
