"""The service map: one graph merged from the mesh's Istio metrics and from trace spans.

Mesh edges are read as Kiali reads them: ``rate(istio_requests_total)`` by source and destination,
as reported by the caller's proxy (``reporter="source"``), and by the callee's proxy for callers
outside the mesh (``reporter="destination", source_workload="unknown"``: drawn from an ``unknown``
node); TCP edges from ``istio_tcp_sent_bytes_total``/``istio_tcp_received_bytes_total``. Trace
edges are the trace pillar's dependency links.

Identity: a mesh node is a Service, ``<namespace>/<name>`` (a caller is its canonical service,
i.e. its ``app`` label, else its workload, in its namespace). A trace service joins a mesh node
when its ``service.name`` is ``<name>.<namespace>`` (how the mesh's own proxy spans name services,
as Istio's) or is a bare ``<name>`` that exactly one mesh namespace has; otherwise it is a node
of its own, named as the traces name it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pitwall.core.errors import BadData
from pitwall.core.labels import Labels
from pitwall.traces import DependencyLink
from pitwall.ui.queries import ServiceStats

__all__ = ["MAP_WIDTH", "MODES", "UNKNOWN", "MapEdge", "MapNode", "MeshData", "ServiceGraph", "build_graph",
           "draw", "fetch_mesh", "layout_graph", "mesh_expr", "mesh_queries", "parse_mode"]

MODES = ("both", "mesh", "traces")  # the map's sources, as Kiali's graph type choice: ``?sources=``
UNKNOWN = "unknown"  # the node requests from outside the mesh come from
MAP_WIDTH = 1200  # the service map's drawing width (the SVG scales to the page)
_LAYER_GAP_Y = 96  # vertical room per service in a column

REQUESTS = "istio_requests_total"
DURATION = "istio_request_duration_milliseconds_bucket"
TCP_SENT = "istio_tcp_sent_bytes_total"
TCP_RECEIVED = "istio_tcp_received_bytes_total"
# Kiali's two selectors: what callers in the mesh report, and what the callee reports for callers outside it
_IN_MESH = 'reporter="source",source_workload!="unknown"'
_OUTSIDE = 'reporter="destination",source_workload="unknown"'
_EDGE = ("source_workload,source_workload_namespace,source_canonical_service,"
         "destination_service_name,destination_service_namespace")
_HTTP = _EDGE + ",request_protocol,response_code,grpc_response_status,response_flags"
_NODE = "destination_service_name,destination_service_namespace"
_QUANTILES = {"0.5": "p50", "0.99": "p99"}  # histogram_quantiles' label values -> the attribute


def parse_mode(raw: str | None) -> str:
    """The ``sources`` query parameter: ``both`` (the default), ``mesh`` or ``traces``."""
    mode = (raw or "both").strip().lower()
    if mode not in MODES:
        raise BadData(f"sources must be one of {', '.join(MODES)}; got {mode[:32]!r}")
    return mode


def _both(metric: str, window: str, by: str) -> str:
    """``sum by (by)`` of the rate over the in-mesh and the outside-caller selector."""
    return (f"sum by ({by}) (rate({metric}{{{_IN_MESH}}}[{window}]) "
            f"or rate({metric}{{{_OUTSIDE}}}[{window}]))")


def mesh_queries(window: str) -> dict[str, str]:
    """The PromQL the map runs (concurrently), by what it answers."""
    return {
        "requests": _both(REQUESTS, window, _HTTP),
        # both quantiles from one pass over the buckets (histogram_quantiles labels them ``quantile``)
        "edge_latency": f'histogram_quantiles({_both(DURATION, window, _EDGE + ",le")}, "quantile", 0.5, 0.99)',
        "node_latency": f'histogram_quantiles(sum by ({_NODE},le) (rate({DURATION}{{reporter="destination"}}'
                        f'[{window}])), "quantile", 0.5, 0.99)',
        "tcp_sent": _both(TCP_SENT, window, _EDGE),
        "tcp_received": _both(TCP_RECEIVED, window, _EDGE),
    }


Vector = list[tuple[Labels, float]]
MeshData = dict[str, Vector]


async def fetch_mesh(run: Callable[[str], Awaitable[Vector]], window: str) -> MeshData:
    """Every mesh query at once (each ``run`` is a PromQL instant query off the event loop)."""
    qs = mesh_queries(window)
    answers = await asyncio.gather(*(run(q) for q in qs.values()))
    return dict(zip(qs, answers, strict=True))


def _finite(v: float | None) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


@dataclass
class MapNode:
    """A service on the map; the numbers it shows come from the mesh when it has any, else its spans."""

    id: str
    name: str
    namespace: str = ""
    sources: set[str] = field(default_factory=set)
    trace_names: list[str] = field(default_factory=list)  # the ``service.name`` its spans carry, if any
    mesh_in: float = 0.0  # requests/s it received through the mesh
    mesh_err: float = 0.0  # of which 5xx or gRPC non-OK
    mesh_out: float = 0.0  # requests/s it sent
    tcp_in: float = 0.0  # bytes/s over TCP connections to it (both directions)
    mesh_p50: float | None = None
    mesh_p99: float | None = None
    traces: ServiceStats | None = None

    @property
    def rate(self) -> float | None:
        if self.mesh_in > 0:
            return self.mesh_in
        return self.traces.rate if self.traces is not None else None

    @property
    def error_ratio(self) -> float | None:
        if self.mesh_in > 0:
            return self.mesh_err / self.mesh_in
        return self.traces.error_ratio if self.traces is not None else None

    @property
    def p50(self) -> float | None:
        return self.mesh_p50 if self.mesh_p50 is not None else (self.traces.p50 if self.traces else None)

    @property
    def p99(self) -> float | None:
        return self.mesh_p99 if self.mesh_p99 is not None else (self.traces.p99 if self.traces else None)

    @property
    def weight(self) -> float:
        """How busy it is (requests/s): the most of what it received or sent."""
        return max(self.rate or 0.0, self.mesh_out)

    @property
    def rank(self) -> tuple[float, float]:
        """The order of the top N: requests/s, then (for TCP-only services) bytes/s."""
        return self.weight, self.tcp_in

    def to_json(self) -> dict[str, Any]:
        t = self.traces
        return {"id": self.id, "name": self.name, "namespace": self.namespace, "sources": sorted(self.sources),
                "trace_names": self.trace_names, "rate": _finite(self.rate), "error_ratio": _finite(self.error_ratio),
                "p50": _finite(self.p50), "p99": _finite(self.p99), "rate_out": _finite(self.mesh_out),
                "tcp_bytes": _finite(self.tcp_in),
                "mesh": {"rate_in": self.mesh_in, "errors_in": self.mesh_err, "rate_out": self.mesh_out,
                         "p50": _finite(self.mesh_p50), "p99": _finite(self.mesh_p99)} if "mesh" in self.sources
                else None,
                "traces": {"rate": _finite(t.rate), "error_ratio": _finite(t.error_ratio), "p50": _finite(t.p50),
                           "p99": _finite(t.p99)} if t is not None else None}


@dataclass
class MapEdge:
    """Calls from one node to another: requests/s and bytes/s from the mesh, span counts from traces."""

    source: str
    target: str
    sources: set[str] = field(default_factory=set)
    protocols: set[str] = field(default_factory=set)  # http, grpc, tcp
    rate: float = 0.0  # mesh requests/s
    errors: float = 0.0  # of which 5xx or gRPC non-OK
    flags: dict[str, float] = field(default_factory=dict)  # Envoy response flag -> requests/s
    p50: float | None = None
    p99: float | None = None
    tcp_sent: float = 0.0  # bytes/s
    tcp_received: float = 0.0
    calls: int = 0  # spans over the range
    call_errors: int = 0
    trace_rate: float = 0.0  # calls/s

    @property
    def error_ratio(self) -> float | None:
        if self.rate > 0:
            return self.errors / self.rate
        return self.call_errors / self.calls if self.calls else None

    @property
    def rank(self) -> tuple[float, float]:
        """The order of the top N: requests/s (mesh or traces), then bytes/s; units are never mixed."""
        return max(self.rate, self.trace_rate), self.tcp_sent + self.tcp_received

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "sources": sorted(self.sources),
                "protocols": sorted(self.protocols), "rate": self.rate, "error_ratio": _finite(self.error_ratio),
                "errors": self.errors, "flags": dict(sorted(self.flags.items())), "p50": _finite(self.p50),
                "p99": _finite(self.p99), "tcp_sent": self.tcp_sent, "tcp_received": self.tcp_received,
                "calls": self.calls, "call_errors": self.call_errors, "trace_rate": self.trace_rate}


@dataclass
class ServiceGraph:
    mode: str
    nodes: list[MapNode]
    edges: list[MapEdge]
    hidden_nodes: int = 0  # left out by the top-N bound
    hidden_edges: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"sources": self.mode, "nodes": [n.to_json() for n in self.nodes],
                "edges": [e.to_json() for e in self.edges],
                "hidden": {"nodes": self.hidden_nodes, "edges": self.hidden_edges}}


# ------------------------------------------------------------------ the mesh's graph


def _source_of(lb: dict[str, str]) -> tuple[str, str, str]:
    """(id, name, namespace) of a caller: ``unknown`` outside the mesh, else its canonical service."""
    wl = lb.get("source_workload", "") or UNKNOWN
    if wl == UNKNOWN:
        return UNKNOWN, UNKNOWN, ""
    ns = lb.get("source_workload_namespace", "")
    canon = lb.get("source_canonical_service", "")
    name = canon if canon and canon != UNKNOWN else wl
    return f"{ns}/{name}", name, ns


def _dest_of(lb: dict[str, str]) -> tuple[str, str, str]:
    name = lb.get("destination_service_name", "") or UNKNOWN
    ns = lb.get("destination_service_namespace", "")
    return (f"{ns}/{name}" if ns and ns != UNKNOWN else name), name, ns


def _is_error(lb: dict[str, str]) -> bool:
    """5xx, or a gRPC status other than OK (Kiali's error classes for the edge's health)."""
    if lb.get("response_code", "").startswith("5"):
        return True
    grpc = lb.get("grpc_response_status", "")
    return lb.get("request_protocol") == "grpc" and grpc not in ("", "0")


class _Mesh:
    """Nodes and edges collected from the query answers."""

    def __init__(self) -> None:
        self.nodes: dict[str, MapNode] = {}
        self.edges: dict[tuple[str, str], MapEdge] = {}

    def node(self, ident: tuple[str, str, str]) -> MapNode:
        nid, name, ns = ident
        n = self.nodes.get(nid)
        if n is None:
            n = self.nodes[nid] = MapNode(nid, name, ns, {"mesh"})
        return n

    def edge(self, lb: dict[str, str]) -> MapEdge:
        s, d = self.node(_source_of(lb)), self.node(_dest_of(lb))
        e = self.edges.get((s.id, d.id))
        if e is None:
            e = self.edges[(s.id, d.id)] = MapEdge(s.id, d.id, {"mesh"})
        return e


def mesh_graph(data: MeshData) -> tuple[dict[str, MapNode], dict[tuple[str, str], MapEdge]]:
    """The mesh's nodes and edges from the answers of ``mesh_queries``."""
    m = _Mesh()
    for labels, v in data.get("requests", []):
        lb = dict(labels)
        if not math.isfinite(v) or v <= 0:
            continue
        e = m.edge(lb)
        e.protocols.add(lb.get("request_protocol") or "http")
        e.rate += v
        err = v if _is_error(lb) else 0.0
        e.errors += err
        m.nodes[e.source].mesh_out += v
        m.nodes[e.target].mesh_in += v
        m.nodes[e.target].mesh_err += err
        for flag in (lb.get("response_flags") or "-").split(","):
            if flag.strip() and flag.strip() != "-":
                e.flags[flag.strip()] = e.flags.get(flag.strip(), 0.0) + v
    for labels, v in data.get("edge_latency", []):
        lb = dict(labels)
        e2 = m.edges.get((_source_of(lb)[0], _dest_of(lb)[0]))
        if e2 is not None and lb.get("quantile") in _QUANTILES:
            setattr(e2, _QUANTILES[lb["quantile"]], _finite(v))
    for labels, v in data.get("node_latency", []):
        lb = dict(labels)
        n = m.nodes.get(_dest_of(lb)[0])
        if n is not None and lb.get("quantile") in _QUANTILES:
            setattr(n, "mesh_" + _QUANTILES[lb["quantile"]], _finite(v))
    for key, attr in (("tcp_sent", "tcp_sent"), ("tcp_received", "tcp_received")):
        for labels, v in data.get(key, []):
            if not math.isfinite(v) or v <= 0:
                continue
            e = m.edge(dict(labels))
            e.protocols.add("tcp")
            setattr(e, attr, getattr(e, attr) + v)
            m.nodes[e.target].tcp_in += v
    return m.nodes, m.edges


# ------------------------------------------------------------------ merging with the traces' graph


def trace_identity(service: str, mesh: dict[str, MapNode]) -> str:
    """The node a trace ``service.name`` is: a mesh node's id when it names one (``name.namespace``, or a
    bare name only one mesh namespace has), else the name itself."""
    name, dot, ns = service.rpartition(".")
    if dot and f"{ns}/{name}" in mesh:
        return f"{ns}/{name}"
    same = [n.id for n in mesh.values() if n.name == service and n.namespace]
    return same[0] if len(same) == 1 else service


def build_graph(mode: str, mesh: MeshData | None, links: Sequence[DependencyLink], services: Sequence[str],
                stats: dict[str, ServiceStats], span_s: float, limit: int) -> ServiceGraph:
    """The merged graph for ``mode`` (``both``, ``mesh`` or ``traces``), bounded to the ``limit`` busiest
    nodes (and ``4 * limit`` busiest edges among them)."""
    nodes, edges = mesh_graph(mesh or {}) if mode != "traces" else ({}, {})
    if mode != "mesh":
        mesh_nodes = dict(nodes)
        ident = {s: trace_identity(s, mesh_nodes) for s in {*services, *(x for ln in links
                                                                            for x in (ln.parent, ln.child))}}
        for svc, nid in sorted(ident.items()):
            n = nodes.get(nid)
            if n is None:
                n = nodes[nid] = MapNode(nid, svc)
            n.sources.add("traces")
            n.trace_names = sorted({*n.trace_names, svc})
            n.traces = n.traces or stats.get(svc)  # the app's own spans and the mesh's hop spans: either
        for ln in links:
            key = (ident[ln.parent], ident[ln.child])
            e = edges.get(key)
            if e is None:
                e = edges[key] = MapEdge(*key)
            e.sources.add("traces")
            e.calls += ln.call_count
            e.call_errors += ln.error_count
            e.trace_rate = e.calls / max(span_s, 1.0)
    return _bounded(mode, nodes, edges, limit)


def _bounded(mode: str, nodes: dict[str, MapNode], edges: dict[tuple[str, str], MapEdge],
             limit: int) -> ServiceGraph:
    ranked = sorted(nodes.values(), key=lambda n: (-n.rank[0], -n.rank[1], n.id))
    keep = {n.id for n in ranked[:limit]}
    inner = sorted((e for e in edges.values() if e.source in keep and e.target in keep),
                   key=lambda e: (-e.rank[0], -e.rank[1], e.source, e.target))
    shown = inner[:4 * limit]
    return ServiceGraph(mode, [n for n in ranked if n.id in keep], shown,
                        hidden_nodes=len(nodes) - len(keep), hidden_edges=len(edges) - len(shown))


# ------------------------------------------------------------------ drawing


def _layers(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Each node's column: the longest chain of callers before it (back edges of cycles ignored)."""
    out: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a != b and b not in out[a]:
            out[a].append(b)
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    back: set[tuple[str, str]] = set()

    def visit(n: str) -> None:  # iterative DFS: deep call chains must not hit the recursion limit
        stack = [(n, iter(out[n]))]
        state[n] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                order.append(node)
                stack.pop()
            elif state.get(nxt) == 1:
                back.add((node, nxt))
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(out[nxt])))

    for n in nodes:
        if n not in state:
            visit(n)
    layer = dict.fromkeys(nodes, 0)
    for n in reversed(order):  # a topological order of the graph without its back edges
        for m in out[n]:
            if (n, m) not in back:
                layer[m] = max(layer[m], layer[n] + 1)
    return layer


def layout_graph(nodes: list[str], edges: list[tuple[str, str]] | None = None,
                 width: float = MAP_WIDTH) -> tuple[dict[str, tuple[float, float]], float]:
    """A layered drawing: callers left of callees, one column per call depth, each column ordered by its
    neighbours' average position (a few barycenter sweeps) so edges cross less; (positions, height)."""
    edges = edges or []
    layer = _layers(nodes, edges)
    cols: dict[int, list[str]] = {}
    for n in nodes:
        cols.setdefault(layer[n], []).append(n)
    ncols = max(cols) + 1 if cols else 1
    height = max(260.0, max((len(c) for c in cols.values()), default=1) * _LAYER_GAP_Y + 80)
    rank = {n: float(i) for c in cols.values() for i, n in enumerate(c)}
    near: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a in near and b in near and a != b:
            near[a].append(b)
            near[b].append(a)
    for _ in range(4):
        for c in cols.values():
            c.sort(key=lambda n: sum(rank[m] for m in near[n]) / len(near[n]) if near[n] else rank[n])
            for i, n in enumerate(c):
                rank[n] = float(i)
    margin = 90.0
    pos: dict[str, tuple[float, float]] = {}
    for li, c in cols.items():
        x = width / 2 if ncols == 1 else margin + li * (width - 2 * margin) / (ncols - 1)
        step = (height - 80) / len(c)
        for i, n in enumerate(c):
            pos[n] = (x, 40 + step * (i + 0.5))
    return pos, height


def _quote(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mesh_expr(node_id: str, name: str, namespace: str) -> str:
    """The PromQL behind a mesh node, for the explorer: its inbound requests by caller and code (for the
    ``unknown`` node, what callers outside the mesh sent, by service)."""
    if node_id == UNKNOWN:
        return f"sum by (destination_service_name, response_code) (rate({REQUESTS}{{{_OUTSIDE}}}[5m]))"
    sel = (f'reporter="destination",destination_service_name={_quote(name)},'
           f"destination_service_namespace={_quote(namespace)}")
    return f"sum by (source_workload, response_code) (rate({REQUESTS}{{{sel}}}[5m]))"


def _error_colour(ratio: float | None) -> str:
    if ratio is None:
        return "var(--muted)"
    if ratio >= 0.05:
        return "var(--err)"
    if ratio >= 0.01:
        return "var(--warn)"
    return "var(--ok)"


def draw(g: ServiceGraph, width: float = MAP_WIDTH) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """Positions, radii and colours of the graph's nodes and edges for the page's SVG; (nodes, edges, height).
    Callers (nodes with outgoing edges) come first so a column's order is stable."""
    callers = {e.source for e in g.edges}
    order = sorted(g.nodes, key=lambda n: (n.id not in callers, n.id))
    pos, height = layout_graph([n.id for n in order], [(e.source, e.target) for e in g.edges], width)
    max_rate = max([n.weight for n in g.nodes] + [1e-9])
    nodes = []
    for n in order:
        x, y = pos[n.id]
        nodes.append({**n.to_json(), "x": x, "y": y, "r": 14 + 22 * math.sqrt(n.weight / max_rate),
                      "colour": _error_colour(n.error_ratio)})
    radius = {nd["id"]: nd["r"] for nd in nodes}
    names = {n.id: n.name for n in g.nodes}
    edges = []
    for e in g.edges:
        (x1, y1), (x2, y2) = pos[e.source], pos[e.target]
        dx, dy = x2 - x1, y2 - y1
        d = math.hypot(dx, dy) or 1.0
        r1, r2 = float(radius[e.source]), float(radius[e.target]) + 6
        ratio = e.error_ratio  # an edge is coloured once 1% of its calls fail (as its callee would be)
        edges.append({**e.to_json(), "source_name": names[e.source], "target_name": names[e.target],
                      "x1": x1 + dx / d * r1, "y1": y1 + dy / d * r1, "x2": x2 - dx / d * r2, "y2": y2 - dy / d * r2,
                      "mx": (x1 + x2) / 2, "my": (y1 + y2) / 2,
                      "colour": "var(--edge)" if not ratio or ratio < 0.01 else _error_colour(ratio)})
    return nodes, edges, height
