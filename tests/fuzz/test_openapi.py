"""schemathesis over pitwall's own ``/openapi.json``, in-process: every documented operation, never a 5xx.

One app for the module (schemathesis enters its lifespan once), with the
seeded series, stream and trace so reads have something to find. Requests
use schemathesis' ASGI host name, so the Host allow-list lets it in.
``/-/reload`` is left out: it re-reads the settings, which is not an API
for clients to fuzz.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import cramjam
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import HOST, get_client

from pitwall.config import load_settings
from pitwall.metrics.ingest import prompb
from tests.fuzz.strategies import examples

pytestmark = pytest.mark.timeout(180)
EXAMPLES = examples(25)


# What the handlers read from the query string (or the form of a POST query) but /openapi.json does not
# declare: without these, schemathesis has nothing to vary on most read endpoints. Names as the handlers use.
_RANGE = ("start", "end")
QUERY_PARAMS: dict[str, tuple[str, ...]] = {
    "/api/v1/query": ("query", "time", "timeout", "limit"),
    "/api/v1/query_range": ("query", *_RANGE, "step", "timeout", "limit"),
    "/api/v1/series": ("match[]", *_RANGE, "limit"),
    "/api/v1/labels": ("match[]", *_RANGE, "limit"),
    "/api/v1/label/{name}/values": ("match[]", *_RANGE, "limit"),
    "/api/v1/format_query": ("query",),
    "/api/v1/query_exemplars": ("query", *_RANGE),
    "/api/v1/metadata": ("metric", "limit", "limit_per_metric"),
    "/loki/api/v1/query": ("query", "time", "limit", "direction"),
    "/loki/api/v1/query_range": ("query", *_RANGE, "since", "step", "interval", "limit", "direction"),
    "/loki/api/v1/labels": (*_RANGE, "since", "query"),
    "/loki/api/v1/label/{name}/values": (*_RANGE, "since", "query"),
    "/loki/api/v1/series": ("match[]", *_RANGE, "since"),
    "/loki/api/v1/index/stats": ("query", *_RANGE),
    "/loki/api/v1/index/volume": ("query", *_RANGE, "limit", "targetLabels", "aggregateBy"),
    "/api/v2/spans": ("serviceName",),
    "/api/v2/remoteServices": ("serviceName",),
    "/api/v2/traces": ("serviceName", "remoteServiceName", "spanName", "annotationQuery", "minDuration",
                       "maxDuration", "endTs", "lookback", "limit"),
    "/api/v2/traceMany": ("traceIds",),
    "/api/v2/dependencies": ("endTs", "lookback"),
    "/api/v2/autocompleteValues": ("key",),
    "/api/traces/v1/search": (*_RANGE, "since", "service", "operation", "status", "min_duration", "max_duration", "attr",
                              "limit"),
    "/api/traces/v1/dependencies": (*_RANGE, "since"),
    "/api/v2/alerts": ("filter", "active", "silenced", "inhibited", "unprocessed", "receiver"),
    "/api/v2/alerts/groups": ("filter", "active", "silenced", "inhibited", "receiver"),
    "/api/v2/silences": ("filter",),
}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
# Alertmanager's PostableAlerts / PostableSilence, loosely (wrong types must be a 400, not a 500).
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("/api/v2/alerts", "post"): {"type": "array", "items": {"type": "object", "properties": {
        "labels": _STRINGS, "annotations": _STRINGS, "startsAt": {"type": "string"}, "endsAt": {"type": "string"},
        "generatorURL": {"type": "string"}}, "required": ["labels"]}},
    ("/api/v2/silences", "post"): {"type": "object", "properties": {
        "id": {"type": "string"}, "matchers": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "value": {"type": "string"}, "isRegex": {"type": "boolean"},
            "isEqual": {"type": "boolean"}}}}, "startsAt": {"type": "string"}, "endsAt": {"type": "string"},
        "createdBy": {"type": "string"}, "comment": {"type": "string"}}},
}


def with_parameters(doc: dict[str, Any]) -> dict[str, Any]:
    for path, names in QUERY_PARAMS.items():
        for op in doc["paths"].get(path, {}).values():
            declared = {p["name"] for p in op.get("parameters", [])}
            op.setdefault("parameters", []).extend(
                {"name": n, "in": "query", "required": False,
                 "schema": {"type": "array", "items": {"type": "string"}} if n in ("match[]", "filter")
                 else {"type": "string"}}
                for n in names if n not in declared)
    for (path, method), body in BODIES.items():
        doc["paths"][path][method]["requestBody"] = {"content": {"application/json": {"schema": body}}}
    return doc


@pytest.fixture(scope="module")
def pitwall_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from pitwall.server import create_app

    app = create_app(load_settings(
        data_dir=tmp_path_factory.mktemp("openapi") / "data", listen="127.0.0.1:0", storage={"fsync": False},
        allowed_hosts=[HOST, "localhost", "127.0.0.1"],
        limits={"max_request_bytes": 1 << 20, "max_decompressed_bytes": 4 << 20},
    ))
    schema = schemathesis.openapi.from_dict(with_parameters(app.openapi()))
    schema.app = app
    yield schema.exclude(path="/-/reload")


@pytest.fixture(scope="module")
def seeded_once(pitwall_schema: Any) -> None:
    """A series and a log stream through the same in-process client schemathesis uses."""
    w = prompb.WriteRequest()
    ts = w.timeseries.add()
    lb = ts.labels.add()
    lb.name, lb.value = "__name__", "up"
    s = ts.samples.add()
    s.timestamp, s.value = int(time.time() * 1000), 1.0
    with get_client(pitwall_schema.app) as c:
        r = c.post(f"http://{HOST}/api/v1/write", data=bytes(cramjam.snappy.compress_raw(w.SerializeToString())),
                   headers={"content-type": "application/x-protobuf", "content-encoding": "snappy"})
        assert r.status_code == 204, r.text
        r = c.post(f"http://{HOST}/loki/api/v1/push", json={"streams": [
            {"stream": {"app": "x"}, "values": [[str(time.time_ns()), "hello"]]}]})
        assert r.status_code == 204, r.text


def test_no_server_errors(pitwall_schema: Any, seeded_once: None) -> None:
    """Each operation in turn under its own small hypothesis run; all failures reported together.

    (Not ``@schema.parametrize()`` over ``schemathesis.pytest.from_fixture``: schemathesis 4.32's lazy
    loader reads ``request.node._nodeid``, which pytest 9 no longer has.)
    """
    failures: list[str] = []
    n = 0
    client = get_client(pitwall_schema.app).__enter__()
    for result in pitwall_schema.get_all_operations():
        op = result.ok()
        n += 1

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  phases=[Phase.explicit, Phase.generate])
        @given(case=op.as_strategy())
        def run(case: schemathesis.Case[Any]) -> None:
            response = case.call(base_url=f"http://{HOST}", session=client)
            case.validate_response(response, checks=[not_a_server_error])

        try:
            run()
        except Exception as e:  # collected, reported below
            failures.append(f"{op.label}: {str(e)[:2000]}")
    assert n > 60, f"only {n} operations in /openapi.json"
    assert not failures, "\n\n".join(failures)
