"""The service map merged from the mesh's Istio metrics and from traces, over real stores.

``tests.ui.mesh_seed``'s shop (three workloads; ``ledger`` sends no traces) written into a real metric store
on a set clock; spans of ``frontend`` and ``checkout`` (whose client spans name a ``redis`` the mesh never
saw) into a real trace store; the JSON endpoint and the page read both through the UI's router.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.ui.app import ui_client
from tests.ui.mesh_seed import NS, SAMPLED_S, SPAN_S, mesh_series

from pitwall.core.labels import labels_from_dict
from pitwall.metrics import Engine, SampleBatch, TargetsSnapshot, local_instant, local_range
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.metrics import MetricStore
from pitwall.storage.traces_store import TraceStore
from pitwall.traces.model import SpanColumns, tkey_of
from pitwall.traces.query import TraceQuery
from pitwall.ui.queries import MetricsView
from pitwall.ui.settings import UISettings
from pitwall.ui.traces_view import TracesView
from pitwall.ui.web import UIDeps

pytestmark = pytest.mark.timeout(90)

T_END = 1_780_000_000_000  # the pages' range: the ten minutes before this (unix ms)
RANGE = {"from": str(T_END - SPAN_S * 1000), "to": str(T_END)}
TRACES = 10  # frontend -> checkout -> (client) redis; the last one's checkout span failed


def span_columns() -> SpanColumns:
    c = SpanColumns()

    def add(trace: str, span: str, parent: str, service: str, kind: int, start: int, err: bool,
            remote: str = "") -> None:
        for col, v in (("tkey", tkey_of(trace)), ("trace_id", trace), ("span_id", span), ("parent_id", parent),
                       ("service", service), ("name", f"{service} op"), ("kind", kind), ("start_ns", start),
                       ("duration_ns", 5_000_000), ("status_code", 2 if err else 0), ("status_message", ""),
                       ("remote_service", remote), ("flags", 1), ("attributes", "{}"),
                       ("resource", json.dumps({"service.name": service, "service.namespace": NS})),
                       ("scope", "{}"), ("events", "[]"), ("links", "[]")):
            getattr(c, col).append(v)

    for i in range(TRACES):
        trace = f"{i + 1:032x}"
        t0 = (T_END - 300_000 + i * 1000) * 1_000_000
        add(trace, f"{i + 1:08x}0000000a", "", "frontend", 2, t0, False)
        add(trace, f"{i + 1:08x}0000000b", f"{i + 1:08x}0000000a", "checkout", 2, t0 + 1000, i == TRACES - 1)
        add(trace, f"{i + 1:08x}0000000c", f"{i + 1:08x}0000000b", "checkout", 3, t0 + 2000, False, "redis")
    return c


@dataclass
class Seeded:
    client: httpx.AsyncClient
    deps: UIDeps


@pytest.fixture
async def seeded(tmp_path: Path) -> AsyncIterator[Seeded]:
    metrics = MetricStore(TelemetryDB(tmp_path / "m.duckdb"), tmp_path / "mwal", fsync=False, block_ms=60_000)
    tdb = TelemetryDB(tmp_path / "t.duckdb")
    spans = TraceStore(tdb, tmp_path / "twal", retention_ns=0, fsync=False)
    await metrics.start()
    await spans.start()
    try:
        rows = [(labels_from_dict(lb), t, v) for lb, pts in mesh_series(T_END) for t, v in pts]
        await metrics.append("default", SampleBatch.from_rows(rows))
        await spans.append("default", span_columns().to_table("default"))
        engine = Engine()
        mv = MetricsView(local_instant(engine, metrics), local_range(engine, metrics), metrics.querier)
        deps = UIDeps(settings=UISettings(), metrics=mv, targets=lambda: TargetsSnapshot([], [], {}),
                      traces=TracesView(TraceQuery(spans)), logs=None, alerts=None, dashboards=Any)  # type: ignore[arg-type]
        async with ui_client(deps) as c:
            yield Seeded(c, deps)
    finally:
        await spans.stop()
        await metrics.stop()
        tdb.close()


async def _graph(s: Seeded, **params: str) -> dict[str, Any]:
    r = await s.client.get("/api/ui/v1/services/graph", params={**RANGE, **params})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _nodes(g: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in g["nodes"]}


def _edges(g: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["source"], e["target"]): e for e in g["edges"]}


def per_s(n: float) -> Any:
    return pytest.approx(n / SAMPLED_S, rel=1e-9)


async def test_merged_graph_nodes_and_sources(seeded: Seeded) -> None:
    g = await _graph(seeded)
    assert g["sources"] == "both" and g["hidden"] == {"nodes": 0, "edges": 0}
    nodes = _nodes(g)
    assert set(nodes) == {"unknown", "shop/frontend", "shop/checkout", "shop/ledger", "shop/postgres", "redis"}
    # a service in both sources is one node: the spans' bare service.name joins its mesh Service
    assert nodes["shop/frontend"]["sources"] == ["mesh", "traces"]
    assert nodes["shop/frontend"]["trace_names"] == ["frontend"]
    assert nodes["shop/checkout"]["sources"] == ["mesh", "traces"]
    assert nodes["shop/ledger"]["sources"] == ["mesh"] and nodes["shop/ledger"]["trace_names"] == []
    assert nodes["redis"]["sources"] == ["traces"] and nodes["redis"]["namespace"] == ""
    assert nodes["unknown"]["sources"] == ["mesh"] and nodes["unknown"]["rate"] is None
    assert nodes["unknown"]["rate_out"] == per_s(300)
    # node numbers: what reached the service through the mesh (reported once, not once per reporter)
    fe, co, le = nodes["shop/frontend"], nodes["shop/checkout"], nodes["shop/ledger"]
    assert (fe["rate"], fe["error_ratio"], fe["rate_out"]) == (per_s(300), 0.0, per_s(120))
    assert (co["rate"], co["error_ratio"]) == (per_s(120), pytest.approx(12 / 120))
    assert (le["rate"], le["error_ratio"]) == (per_s(60), pytest.approx(1 / 60))  # gRPC 14 is an error
    # latency from the destination's histogram: linear within the one bucket every request fell in
    assert (fe["p50"], fe["p99"]) == (pytest.approx(1 + 4 * 0.5), pytest.approx(1 + 4 * 0.99))
    assert (le["p50"], le["p99"]) == (pytest.approx(50 + 50 * 0.5), pytest.approx(50 + 50 * 0.99))
    assert nodes["shop/postgres"]["tcp_bytes"] == pytest.approx(1200.0)


async def test_merged_graph_edges(seeded: Seeded) -> None:
    edges = _edges(await _graph(seeded))
    assert set(edges) == {("unknown", "shop/frontend"), ("shop/frontend", "shop/checkout"),
                          ("shop/checkout", "shop/ledger"), ("shop/ledger", "shop/postgres"),
                          ("shop/checkout", "redis")}
    ext = edges[("unknown", "shop/frontend")]
    assert (ext["sources"], ext["rate"], ext["error_ratio"], ext["flags"]) == (["mesh"], per_s(300), 0.0, {})
    fc = edges[("shop/frontend", "shop/checkout")]
    assert fc["sources"] == ["mesh", "traces"] and fc["protocols"] == ["http"]
    assert (fc["rate"], fc["errors"], fc["error_ratio"]) == (per_s(120), per_s(12), pytest.approx(0.1))
    assert fc["flags"] == {"UO": per_s(6)}
    assert (fc["calls"], fc["call_errors"]) == (TRACES, 1)
    assert fc["trace_rate"] == pytest.approx(TRACES / SPAN_S)
    assert (fc["p50"], fc["p99"]) == (pytest.approx(10 + 15 * 0.5), pytest.approx(10 + 15 * 0.99))
    cl = edges[("shop/checkout", "shop/ledger")]
    assert (cl["protocols"], cl["rate"], cl["error_ratio"]) == (["grpc"], per_s(60), pytest.approx(1 / 60))
    assert cl["flags"] == {"URX": per_s(5)}
    tcp = edges[("shop/ledger", "shop/postgres")]
    assert (tcp["protocols"], tcp["rate"]) == (["tcp"], 0.0)
    assert (tcp["tcp_sent"], tcp["tcp_received"]) == (pytest.approx(1000.0), pytest.approx(200.0))
    redis = edges[("shop/checkout", "redis")]
    assert (redis["sources"], redis["calls"], redis["rate"]) == (["traces"], TRACES, 0.0)


async def test_toggle_mesh_only_and_traces_only(seeded: Seeded) -> None:
    mesh = await _graph(seeded, sources="mesh")
    assert mesh["sources"] == "mesh"
    assert set(_nodes(mesh)) == {"unknown", "shop/frontend", "shop/checkout", "shop/ledger", "shop/postgres"}
    assert all(n["sources"] == ["mesh"] and n["traces"] is None for n in mesh["nodes"])
    assert _edges(mesh)[("shop/frontend", "shop/checkout")]["calls"] == 0
    traces = await _graph(seeded, sources="traces")
    assert set(_nodes(traces)) == {"frontend", "checkout", "redis"}  # named as the spans name them
    assert all(n["sources"] == ["traces"] and n["mesh"] is None for n in traces["nodes"])
    assert {k: (e["calls"], e["call_errors"]) for k, e in _edges(traces).items()} == {
        ("frontend", "checkout"): (TRACES, 1), ("checkout", "redis"): (TRACES, 0)}


async def test_bound_and_bad_input(seeded: Seeded) -> None:
    top = await _graph(seeded, limit="2")  # the two busiest: frontend (300/s in) and unknown (300/s out)
    assert set(_nodes(top)) == {"shop/frontend", "unknown"}
    assert top["hidden"] == {"nodes": 4, "edges": 4} and len(top["edges"]) == 1
    bad = await seeded.client.get("/api/ui/v1/services/graph", params={**RANGE, "sources": "kiali"})
    assert bad.status_code == 400
    assert bad.json()["error"]["message"] == "sources must be one of both, mesh, traces; got 'kiali'"
    when = await seeded.client.get("/api/ui/v1/services/graph", params={"from": "yesterday"})
    assert when.status_code == 400 and "error" in when.json()
    page = await seeded.client.get("/services", params={**RANGE, "sources": "kiali"})
    assert page.status_code == 400 and "sources must be one of both, mesh, traces" in unescape(page.text)


def _svg_nodes(html: str) -> dict[str, str]:
    return dict(re.findall(r'class="node" data-node="([^"]+)" data-sources="([^"]+)"', html))


async def test_page_draws_the_merged_map(seeded: Seeded) -> None:
    r = await seeded.client.get("/services", params=RANGE)
    assert r.status_code == 200
    html = unescape(r.text)
    assert _svg_nodes(html) == {"unknown": "mesh", "shop/frontend": "mesh traces", "shop/checkout": "mesh traces",
                                "shop/ledger": "mesh", "shop/postgres": "mesh", "redis": "traces"}
    edges = dict(re.findall(r'data-from="([^"]+)" data-to="([^"]+)" data-sources', html))
    assert edges["unknown"] == "shop/frontend" and edges["shop/ledger"] == "shop/postgres"
    # response flags: a badge on the edge, the rate per flag in its hover detail
    assert re.search(r'data-from="shop/frontend" data-to="shop/checkout" data-sources="mesh traces" '
                     r'data-flags="UO"', html)
    assert f"response flag URX: {5 / SAMPLED_S:.3g} req/s" in html
    assert "frontend → checkout (mesh and traces, http)" in html
    assert f"{120 / SAMPLED_S:.3g}/s · 10.00% err" in html
    assert "1000 B/s" in html or "1.2 KiB/s" in html  # the TCP edge, in bytes/s
    # a traced service opens its page; the mesh-only one its requests in the explorer
    assert '<a href="/services/frontend?' in r.text
    assert re.search(r'<a href="/graph\?[^"]*expr=[^"]*destination_service_name%3D%22ledger%22', r.text)
    assert re.search(r'href="/services\?[^"]*sources=mesh[^"]*" data-mode="mesh"', r.text)
    assert 'aria-current="true" data-mode="both"' in r.text
    mesh = await seeded.client.get("/services", params={**RANGE, "sources": "mesh"})
    assert set(_svg_nodes(unescape(mesh.text)).values()) == {"mesh"}
    assert 'aria-current="true" data-mode="mesh"' in mesh.text
    few = await seeded.client.get("/services", params={**RANGE, "limit": "2"})
    assert "4 more services and 4 more edges not drawn" in few.text


async def test_without_the_traces_pillar_the_mesh_still_draws(seeded: Seeded) -> None:
    async with ui_client(replace(seeded.deps, traces=None)) as c:
        page = await c.get("/services", params=RANGE)
        g = (await c.get("/api/ui/v1/services/graph", params=RANGE)).json()
    assert page.status_code == 200 and "the map is drawn from the mesh's metrics only" in page.text
    assert set(_svg_nodes(unescape(page.text))) == {"unknown", "shop/frontend", "shop/checkout", "shop/ledger",
                                                    "shop/postgres"}
    assert {n["id"]: n["sources"] for n in g["nodes"]}["shop/checkout"] == ["mesh"]
