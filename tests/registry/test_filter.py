"""Consul's ``?filter=`` (go-bexpr v0.1.2 semantics): the language alone, then through py-consul."""

from __future__ import annotations

from typing import Any

import consul
import pytest

from pitwall.registry.filter import FilterError, parse_filter

pytestmark = pytest.mark.timeout(60)

ENTRY = {"Node": {"Node": "n1", "Meta": {"rack": "a"}},
         "Service": {"ID": "web-1", "Service": "web", "Tags": ["primary", "v2"], "Port": 8080,
                     "Meta": {"version": "1.0.0"}, "EnableTagOverride": False, "Weights": {"Passing": 1}},
         "Checks": [{"CheckID": "serfHealth", "Status": "passing"}, {"CheckID": "svc", "Status": "critical"}]}


def ok(expr: str, item: dict[str, Any] = ENTRY) -> bool:
    f = parse_filter(expr)
    assert f is not None
    return f.matches(item)


@pytest.mark.parametrize(("expr", "want"), [
    ('Service.Service == "web"', True),
    ("Service.Service == web", True),
    ("Service.Service != web", False),
    ("Service.Port == 8080", True),
    ("Service.Port == 80", False),
    ("Service.EnableTagOverride == false", True),
    ("Service.EnableTagOverride == F", True),
    ("primary in Service.Tags", True),
    ('"v1" not in Service.Tags', True),
    ("Service.Tags contains v2", True),
    ("Service.Tags not contains v2", False),
    ('"eb" in Service.Service', True),
    ('Service.Meta.version == "1.0.0"', True),
    ('Service.Meta["version"] == `1.0.0`', True),
    ("Service.Meta.missing == x", False),  # a missing map key: unequal
    ("Service.Meta.missing != x", True),
    ("Service.Meta.missing is empty", True),
    ("Service.Meta is not empty", True),
    ("version in Service.Meta", True),
    ('Service.ID matches "^web-[0-9]+$"', True),
    ('Service.ID not matches "^api"', True),
    # a list in the path: ANY element, the operator (negated too) applied per element
    ("Checks.Status == passing", True),
    ("Checks.Status != passing", True),
    ("Checks.Status == warning", False),
    ('Checks.CheckID == svc and Checks.Status == "critical"', True),
    ("not Service.Service == web", False),
    ("Service.Service == api or (Service.Port == 8080 and primary in Service.Tags)", True),
    ("Service.Service == api or Service.Port == 8080 and v9 in Service.Tags", False),
    ("Node.Meta.rack == a", True),
])
def test_expressions(expr: str, want: bool) -> None:
    assert ok(expr) is want


@pytest.mark.parametrize(("expr", "why"), [
    ("Service.Nope == x", "selector 'Service.Nope' is not valid"),
    ("Service.Port == eighty", "failed to coerce value 'eighty'"),
    ("Service.Service ==", "expected a value"),
    ('Service.ID matches "("', "failed to compile regular expression"),
    ("(Service.Port == 1", "expected rp"),
    ("Service.Port == 1 junk", "unexpected 'junk'"),
    ("Service.Port > 1", "unexpected character '>'"),
    ("Service.Tags == x", "not a single value"),
])
def test_errors_name_the_problem(expr: str, why: str) -> None:
    with pytest.raises(FilterError) as e:
        ok(expr)
    assert str(e.value).startswith("Failed to create boolean expression evaluator: ")
    assert why in str(e.value)


def test_empty_filter_is_none() -> None:
    assert parse_filter("  ") is None


def test_filter_through_py_consul(c: consul.Consul) -> None:
    c.agent.service.register("api", service_id="api-1", port=9000, tags=["v1"], meta={"team": "pay"},
                             check=consul.Check.ttl("60s"))
    c.agent.service.register("api", service_id="api-2", port=9001, tags=["v2"], meta={"team": "ship"},
                             check=consul.Check.ttl("60s"))
    c.agent.check.ttl_pass("service:api-1")
    assert set(c.agent.services(filter_expr="v2 in Tags")) == {"api-2"}
    assert set(c.agent.services(filter_expr='Meta.team == "pay" or Port == 9001')) == {"api-1", "api-2"}
    _, passing = c.health.service("api", filter_expr='Checks.Status == passing and Service.Meta.team == "pay"')
    assert [e["Service"]["ID"] for e in passing] == ["api-1"]
    _, entries = c.health.service("api", filter_expr="Service.Port == 9001")
    assert [e["Service"]["ID"] for e in entries] == ["api-2"]
    with pytest.raises(consul.ConsulException) as bad:
        c.health.service("api", filter_expr="Service.Port === 1")
    assert "Failed to create boolean expression evaluator" in str(bad.value)
