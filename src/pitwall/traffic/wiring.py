"""Builds the service proxy (the mesh's data plane) over the Kubernetes API, as a ``core.lifecycle.Part``.

The composition root lists the traffic part after the kube part: the proxy
lists and watches through ``kube.client``, so it starts after ``KubeAPI``
and stops before it. Istio's CRDs are handed to the kube part here, so they
are installed when it starts. Istio's request metrics go to ``metrics``
(the metric store's appender) and a span per sampled hop to ``spans`` (the
trace store) when given; both sinks start before the proxy and stop after
it, so their last flush sees every request. Envoy's access log goes to ``logs``
(the log store's appender), as Telemetry objects and ``access_log`` decide.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pitwall.core.lifecycle import Component, Mount
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.incidents import ChangeSink
from pitwall.kube import KubeAPI
from pitwall.logs import LogAppender
from pitwall.metrics import Appender
from pitwall.traces import SpanAppender
from pitwall.traffic.accesslog import AccessLogSink
from pitwall.traffic.egress import EgressListeners
from pitwall.traffic.istio_crds import istio_crds
from pitwall.traffic.meshca import DEFAULT_LEAF_TTL_S
from pitwall.traffic.meshtls import MeshNode, MeshNodeStats
from pitwall.traffic.proxy import ServiceProxy
from pitwall.traffic.telemetry import MeshTelemetry
from pitwall.traffic.tracing import MeshTracer

__all__ = ["TrafficPart", "build_proxy", "build_traffic_part"]


def build_proxy(kube: KubeAPI, *, drain_timeout_s: float = 30.0, connect_budget_s: float = 5.0,
                telemetry: MeshTelemetry | None = None, tracer: MeshTracer | None = None,
                changes: ChangeSink | None = None, mesh_node: MeshNode | None = None,
                retry_budget: tuple[float, float, float] | None = None, access_log: AccessLogSink | None = None,
                access_log_default: str = "off") -> ServiceProxy:
    """The service proxy for every Service ``kube`` serves: a Component, its loops under ``.tasks``.
    Its outlier ejections go to ``changes`` (the control plane's change-event stream); ``mesh_node``
    carries hops to other nodes' endpoints over mutual TLS; ``retry_budget`` (ratio, minimum retries a
    second, window seconds) bounds every destination's retries as Linkerd's budget does; ``access_log``
    takes Envoy's access-log lines, ``access_log_default`` (off, text, json) applying where no Telemetry
    object decides."""
    return ServiceProxy(kube.client, drain_timeout_s=drain_timeout_s, connect_budget_s=connect_budget_s,
                        telemetry=telemetry, tracer=tracer, changes=changes, mesh_node=mesh_node,
                        retry_budget=retry_budget, access_log=access_log, access_log_default=access_log_default)


class _ProxyCollector(Collector):
    """Per-Service counters of the proxy, read at scrape time."""

    def __init__(self, proxy: ServiceProxy) -> None:
        self.proxy = proxy

    def collect(self) -> Iterator[Metric]:
        labels = ["namespace", "service"]
        conns = CounterMetricFamily("pitwall_service_proxy_connections", "Connections accepted on a Service's "
                                    "cluster IP.", labels=labels)
        active = GaugeMetricFamily("pitwall_service_proxy_open_connections", "Connections open now.", labels=labels)
        sent = CounterMetricFamily("pitwall_service_proxy_sent_bytes", "Bytes from clients to endpoints.",
                                   labels=labels)
        received = CounterMetricFamily("pitwall_service_proxy_received_bytes", "Bytes from endpoints to clients.",
                                       labels=labels)
        refused = CounterMetricFamily("pitwall_service_proxy_connect_failures", "Connects to an endpoint that "
                                      "were refused or timed out (then retried on another).", labels=labels)
        lost = CounterMetricFamily("pitwall_service_proxy_no_endpoint", "Connections closed because no endpoint "
                                   "accepted them in time.", labels=labels)
        for (ns, name), s in sorted(self.proxy.stats.items()):
            conns.add_metric([ns, name], s.connections_total)
            active.add_metric([ns, name], s.connections_active)
            sent.add_metric([ns, name], s.bytes_sent)
            received.add_metric([ns, name], s.bytes_received)
            refused.add_metric([ns, name], s.connect_failures)
            lost.add_metric([ns, name], s.no_endpoint)
        yield from (conns, active, sent, received, refused, lost)
        ejections = CounterMetricFamily("pitwall_mesh_outlier_ejections", "Hosts ejected by a DestinationRule's "
                                        "outlierDetection.", labels=["cluster"])
        spent = CounterMetricFamily("pitwall_mesh_retry_budget_exhausted", "Retries the retry budget refused.",
                                    labels=["cluster"])
        ejected = GaugeMetricFamily("pitwall_mesh_outlier_ejected_hosts", "Hosts ejected now.", labels=["cluster"])
        now = time.monotonic()
        for name, c in sorted(self.proxy.clusters().items()):
            ejections.add_metric([name], c.ejections_total)
            ejected.add_metric([name], c.ejected(now))
            if c.budget is not None:
                spent.add_metric([name], c.budget.exhausted)
        yield from (ejections, ejected, spent)


class _AccessLogCollector(Collector):
    """The access log's counters, read at scrape time."""

    def __init__(self, sink: AccessLogSink) -> None:
        self.sink = sink

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("pitwall_mesh_access_log_dropped", "Access-log lines dropped: the queue to the "
                                  "log store was full, or the store failed them.", value=self.sink.dropped)
        yield CounterMetricFamily("pitwall_mesh_access_log_lines", "Access-log lines written to the log store.",
                                  value=self.sink.written)


@dataclass
class TrafficPart:
    """The data plane as a part of the server: the service proxy (later the mesh and the gateway)."""

    proxy: ServiceProxy
    telemetry: MeshTelemetry | None = None
    tracer: MeshTracer | None = None
    access_log: AccessLogSink | None = None
    egress: EgressListeners | None = None  # the per-pod egress listeners (hand to the kubelet); None: off
    name: str = "traffic"

    @property
    def mesh_node(self) -> MeshNode | None:
        """This node's end of the mesh (CA, leaves, inbound listeners), when mutual TLS is on."""
        return self.proxy.mesh_node

    def components(self) -> Sequence[Component]:
        """The sinks start before the proxy and stop after it, so their last flush sees every request; the
        mesh node (the CA, the inbound listeners) starts before the proxy and stops after it; the pods'
        egress listeners close before the proxy stops."""
        sinks: list[Component] = [c for c in (self.telemetry, self.tracer, self.access_log) if c is not None]
        node: list[Component] = [self.proxy.mesh_node] if self.proxy.mesh_node is not None else []
        egress: list[Component] = [self.egress] if self.egress is not None else []
        return [*sinks, *node, self.proxy, *egress]

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        return []

    async def reload(self, settings: Any) -> None:
        """Nothing to reload: Services and their endpoints come from the Kubernetes API."""

    def register_metrics(self, metrics: SelfMetrics) -> None:
        p = self.proxy
        metrics.add_gauges("pitwall_service_proxy_listeners", "Cluster IP ports the service proxy serves.",
                           lambda: float(len(p.listening())))
        metrics.registry.register(_ProxyCollector(p))
        if self.access_log is not None:
            metrics.registry.register(_AccessLogCollector(self.access_log))
        metrics.add_gauges("pitwall_mesh_config_errors", "Istio objects ignored because the mesh cannot use them.",
                           lambda: float(len(p.mesh.errors)))
        node = p.mesh_node
        if node is not None:
            st = node.stats
            for field_name, help_text in (
                    ("inbound_tls", "Mutual-TLS connections accepted by this node's inbound mesh listener."),
                    ("inbound_plaintext", "Plaintext connections accepted by this node's inbound mesh listener."),
                    ("rejected_plaintext", "Plaintext inbound connections reset by a STRICT PeerAuthentication."),
                    ("rejected_tls", "TLS inbound connections reset by a DISABLE PeerAuthentication."),
                    ("rejected_preamble", "Inbound connections naming no endpoint of this node."),
                    ("denied", "Inbound connections or requests denied by an AuthorizationPolicy."),
                    ("outbound_tls", "Hops to other nodes opened over mutual TLS."),
                    ("outbound_plaintext", "Hops to other nodes opened in plaintext."),
                    ("handshake_failures", "Hops to other nodes whose TLS handshake or server identity failed.")):
                metrics.add_gauges(f"pitwall_mesh_{field_name}", help_text, _counter(st, field_name))
            metrics.add_gauges("pitwall_mesh_leaves_issued", "Workload certificates issued by this node.",
                               lambda: float(node.leaves.issued_total if node.leaves is not None else 0))
        egress = self.egress
        if egress is not None:
            metrics.add_gauges("pitwall_mesh_egress_listeners", "Pods with an egress listener (HTTP_PROXY) open.",
                               lambda: float(len(egress.listening())))
            for field_name, help_text in (
                    ("connections_total", "Connections accepted by pods' egress listeners."),
                    ("rejected", "Egress connections reset because their pod had too many open."),
                    ("service_requests", "Requests through egress listeners routed to a Service's HTTP port."),
                    ("tcp_service_requests", "Requests through egress listeners to a Service's TCP port (relayed)."),
                    ("passthrough_requests", "Requests through egress listeners to hosts that are no Service."),
                    ("tunnels", "CONNECT tunnels opened by egress listeners.")):
                metrics.add_gauges(f"pitwall_mesh_egress_{field_name.removesuffix('_total')}", help_text,
                                   _stat(egress, field_name))


def _counter(stats: MeshNodeStats, name: str) -> Callable[[], float]:
    return lambda: float(getattr(stats, name))


def _stat(egress: EgressListeners, name: str) -> Callable[[], float]:
    return lambda: float(getattr(egress.stats, name))


def build_traffic_part(kube: KubeAPI, metrics: Appender | None = None,
                       spans: SpanAppender | None = None, changes: ChangeSink | None = None, *,
                       node_name: str = "", mtls: bool = True, inbound_host: str = "127.0.0.1",
                       inbound_port: int = 0, leaf_ttl_s: float = DEFAULT_LEAF_TTL_S,
                       retry_budget: tuple[float, float, float] | None = None, logs: LogAppender | None = None,
                       access_log: str = "off", egress: bool = False) -> TrafficPart:
    """``build_proxy`` wrapped as a ``Part`` for ``server.py`` (listed after the kube part); Istio's CRDs
    are installed into ``kube`` when it starts; Istio's metrics are appended to ``metrics``, a span per
    sampled hop to ``spans``. With ``mtls`` and a ``node_name`` (the kubelet's), hops to endpoints on
    other nodes go over mutual TLS through their inbound listeners (``traffic.meshtls``). Envoy's access
    log goes to ``logs`` (``traffic.accesslog``; ``access_log`` is ``kube.mesh_access_log``). With
    ``egress`` (``kube.mesh_egress_listener``), ``.egress`` gives each pod an egress listener once it is
    handed to the kubelet (``traffic.egress``)."""
    kube.add_builtin_crds(istio_crds())
    telemetry = MeshTelemetry(metrics) if metrics is not None else None
    tracer = MeshTracer(spans) if spans is not None else None
    sink = AccessLogSink(logs) if logs is not None else None
    node = MeshNode(kube.client, node_name, host=inbound_host, tls_port=inbound_port,
                    leaf_ttl_s=leaf_ttl_s) if mtls and node_name else None
    proxy = build_proxy(kube, telemetry=telemetry, tracer=tracer, changes=changes, mesh_node=node,
                        retry_budget=retry_budget, access_log=sink, access_log_default=access_log)
    return TrafficPart(proxy, telemetry, tracer, sink, EgressListeners(proxy) if egress else None)
