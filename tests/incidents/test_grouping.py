"""Alert grouping, alert creation and signal links, through pdpyras against a live pitwall on a fake clock.

Events go through pdpyras' ``EventsAPISession``; the service is configured and the incidents and
their alerts are read through pdpyras' ``APISession`` (PagerDuty's REST API v2 under ``/pagerduty``).
The server's incident clock is replaced by a fake one, so "5 minutes later" is exact.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from pitwall.cli.main import app as cli
from pitwall.incidents.oncall import parse_time
from tests.conftest import LiveServer
from tests.incidents.conftest import OTHER_KEY, ROUTING_KEY, TOKEN

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # pdpyras announces its deprecation on import (still in use)
    import pdpyras

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

MIN = 60 * 10**9
T0 = parse_time("2026-01-07T12:00:00Z")


@dataclass
class FakeClock:
    now: int = T0

    def __call__(self) -> int:
        return self.now

    def at(self, minutes: float) -> None:
        self.now = T0 + int(minutes * MIN)


@dataclass
class PD:
    """pdpyras sessions on one live pitwall, and its fake clock."""

    events: pdpyras.EventsAPISession
    api: pdpyras.APISession
    clock: FakeClock
    url: str

    def group(self, params: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
        body = {"alert_grouping_parameters": params, **extra} if params is not None else extra
        return dict(self.api.rput("services/PWEB001", json={"service": body}))

    def trigger(self, key: str, summary: str, source: str = "db1", **kw: Any) -> None:
        assert self.events.trigger(summary, source, dedup_key=key, severity="error", **kw) == key

    def incidents(self) -> list[dict[str, Any]]:
        return list(self.api.iter_all("incidents", params={"date_range": "all"}))

    def alerts(self, inc: dict[str, Any]) -> list[dict[str, Any]]:
        return list(self.api.iter_all(f"incidents/{inc['id']}/alerts"))


@pytest.fixture
def pd(pd_live: LiveServer) -> Iterator[PD]:
    clock = FakeClock()
    pd_live.app.state.components.incidents.service.clock = clock
    events = pdpyras.EventsAPISession(ROUTING_KEY)
    events.url = pd_live.url
    events.headers.update({"Authorization": f"Bearer {TOKEN}"})
    api = pdpyras.APISession(TOKEN, default_from="alice@example.com")
    api.url = pd_live.url + "/pagerduty"
    yield PD(events, api, clock, pd_live.url)


def _keys(pd: PD, inc: dict[str, Any]) -> list[str]:
    return [a["alert_key"] for a in pd.alerts(inc)]


def test_time_based_grouping(pd: PD) -> None:
    svc = pd.group({"type": "time", "config": {"timeout": 10}})
    assert svc["alert_grouping_parameters"] == {"type": "time", "config": {"timeout": 10}}
    assert svc["alert_creation"] == "create_alerts_and_incidents"
    pd.trigger("a", "db1 down")
    pd.clock.at(5)
    pd.trigger("b", "api errors", source="api1")
    pd.trigger("b", "api errors", source="api1")  # its dedup key still deduplicates, in the grouped incident
    (first,) = pd.incidents()
    assert first["alert_counts"] == {"all": 2, "triggered": 2, "resolved": 0}
    assert _keys(pd, first) == ["a", "b"]
    pd.clock.at(10.5)  # 10 minutes after the incident opened: a new incident
    pd.trigger("c", "cache evictions")
    pd.clock.at(12)
    pd.trigger("d", "queue backlog")  # within the second incident's 10 minutes
    first, second = pd.incidents()
    assert (_keys(pd, first), _keys(pd, second)) == (["a", "b"], ["c", "d"])
    # Resolving one alert leaves the incident open with the other; the last one resolves it.
    pd.events.resolve("a")
    first = pd.api.rget(f"incidents/{first['id']}")
    assert (first["status"], first["alert_counts"]) == ("triggered", {"all": 2, "triggered": 1, "resolved": 1})
    pd.events.resolve("b")
    assert pd.api.rget(f"incidents/{first['id']}")["status"] == "resolved"
    assert [a["status"] for a in pd.alerts(first)] == ["resolved", "resolved"]


def test_time_based_until_resolved(pd: PD) -> None:
    pd.group({"type": "time", "config": {"timeout": 0}})
    pd.trigger("a", "first")
    pd.clock.at(600)  # ten hours later, still open (auto-resolve is 4 h, but nothing ticks the fake clock)
    pd.trigger("b", "second")
    other = pdpyras.EventsAPISession(OTHER_KEY)  # the "api" service does not group: its own incident
    other.url, other.headers = pd.events.url, pd.events.headers
    other.trigger("third", "api1", dedup_key="c")
    web, api = pd.incidents()
    assert (web["alert_counts"]["all"], _keys(pd, web)) == (2, ["a", "b"])
    assert (api["service"]["id"], _keys(pd, api)) == ("PAPI001", ["c"])


def test_resolved_incident_never_absorbs(pd: PD) -> None:
    pd.group({"type": "time", "config": {"timeout": 0}})
    pd.trigger("a", "first")
    (inc,) = pd.incidents()
    pd.api.rput(f"incidents/{inc['id']}", json={"incident": {"type": "incident", "status": "resolved"}})
    pd.clock.at(1)
    pd.trigger("b", "second")
    pd.clock.at(2)
    pd.trigger("a", "first again")  # its old key is free too: it joins the open incident, not the resolved one
    old, new = pd.incidents()
    assert (old["status"], old["alert_counts"]["all"]) == ("resolved", 1)
    assert (new["status"], _keys(pd, new)) == ("triggered", ["b", "a"])


def test_content_based_all_and_any(pd: PD) -> None:
    svc = pd.group({"type": "content_based",
                    "config": {"aggregate": "all", "fields": ["source", "custom_details.cluster"],
                               "time_window": 300}})
    assert svc["alert_grouping_parameters"] == {"type": "content_based", "config": {
        "aggregate": "all", "fields": ["source", "custom_details.cluster"], "time_window": 300,
        "recommended_time_window": 300}}
    pd.trigger("a", "disk full", "db1", custom_details={"cluster": "eu"})
    pd.clock.at(1)
    pd.trigger("b", "slow queries", "db1", custom_details={"cluster": "eu", "p99": 3})  # both fields equal
    pd.trigger("c", "slow queries", "db1", custom_details={"cluster": "us"})  # one differs: a new incident
    pd.trigger("d", "replica lag", "db1")  # the field is absent: never a match
    incs = pd.incidents()
    assert [_keys(pd, i) for i in incs] == [["a", "b"], ["c"], ["d"]]
    pd.group({"type": "content_based", "config": {"aggregate": "any", "fields": ["source", "custom_details.cluster"],
                                                  "time_window": 300}})
    pd.clock.at(2)
    pd.trigger("e", "conn resets", "db9", custom_details={"cluster": "eu"})  # cluster matches the first incident
    pd.trigger("f", "conn resets", "db7", custom_details={"cluster": "ap"})  # nothing matches
    assert [_keys(pd, i) for i in pd.incidents()] == [["a", "b", "e"], ["c"], ["d"], ["f"]]
    # The window rolls from the latest grouped alert: 5 minutes after "e" (at 2) is 7; at 7.5 it has closed.
    pd.clock.at(7)
    pd.trigger("g", "more resets", "db9", custom_details={"cluster": "eu"})
    pd.clock.at(12.5)
    pd.trigger("h", "more resets", "db9", custom_details={"cluster": "eu"})
    keys = [_keys(pd, i) for i in pd.incidents()]
    assert keys[0] == ["a", "b", "e", "g"] and keys[-1] == ["h"]


def test_intelligent_groups_similar_summaries(pd: PD) -> None:
    svc = pd.group({"type": "intelligent"})
    assert svc["alert_grouping_parameters"]["type"] == "intelligent"
    pd.trigger("a", "High CPU on web-1 (95%)")
    pd.clock.at(1)
    pd.trigger("b", "High CPU on web-2 (97%)")
    pd.trigger("c", "Certificate expires in 3 days for api.example.com")
    assert [_keys(pd, i) for i in pd.incidents()] == [["a", "b"], ["c"]]


def test_grouping_disabled(pd: PD) -> None:
    pd.group({"type": "time", "config": {"timeout": 0}})
    svc = pd.group({"type": None})
    assert svc["alert_grouping_parameters"] == {"type": None, "config": None}
    pd.group({"type": "intelligent"})
    svc = dict(pd.api.rput("services/PWEB001", json={"service": {"alert_grouping_parameters": None}}))
    assert svc["alert_grouping_parameters"] == {"type": None, "config": None}
    pd.trigger("a", "first")
    pd.trigger("b", "second")
    pd.trigger("a", "first")  # the dedup key alone still deduplicates
    assert [_keys(pd, i) for i in pd.incidents()] == [["a"], ["b"]]


def test_bad_grouping_is_refused_in_pagerdutys_error_shape(pd: PD) -> None:
    before = pd.api.rget("services/PWEB001")
    bad = [
        {"alert_grouping_parameters": {"type": "content_based", "config": {"fields": ["source"]}}},
        {"alert_grouping_parameters": {"type": "content_based", "config": {"aggregate": "all", "fields": []}}},
        {"alert_grouping_parameters": {"type": "content_based", "config": {"aggregate": "all",
                                                                           "fields": ["hostname"]}}},
        {"alert_grouping_parameters": {"type": "intelligent", "config": {"time_window": 60}}},
        {"alert_grouping_parameters": {"type": "time", "config": {"timeout": 2000}}},
        {"alert_grouping_parameters": {"type": "sometimes"}},
        {"alert_creation": "create_incidents", "alert_grouping_parameters": {"type": "time"}},
    ]
    for body in bad:
        r = httpx.put(pd.url + "/pagerduty/services/PWEB001", json={"service": body},
                      headers={"Authorization": f"Token token={TOKEN}"})
        assert r.status_code == 400, (body, r.text)
        err = r.json()["error"]
        assert err["message"] == "Invalid Input Provided" and err["errors"], err
    assert pd.api.rget("services/PWEB001") == before


def test_create_incidents_opens_incidents_without_alerts(pd: PD) -> None:
    svc = pd.group(None, alert_creation="create_incidents")
    assert (svc["alert_creation"], svc["alert_grouping_parameters"]["type"]) == ("create_incidents", None)
    pd.trigger("a", "first")
    pd.trigger("a", "first")  # deduplicated by the incident key
    (inc,) = pd.incidents()
    assert inc["alert_counts"] == {"all": 0, "triggered": 0, "resolved": 0}
    assert pd.alerts(inc) == []
    pd.events.resolve("a")
    assert pd.api.rget(f"incidents/{inc['id']}")["status"] == "resolved"


def test_incident_links_to_signals(pd: PD) -> None:
    pd.trigger("a", "checkout p99 over 2s", custom_details={"service": "checkout", "p99_ms": 2300})
    pd.trigger("b", "no service named", custom_details={"free": 0})
    with_svc, without = pd.incidents()
    assert without["pitwall"] == {"service": None, "links": []}
    assert with_svc["pitwall"]["service"] == "checkout"
    links = {link["type"]: link["href"] for link in with_svc["pitwall"]["links"]}
    assert set(links) == {"golden_signals.traffic", "golden_signals.errors", "golden_signals.latency", "logs",
                          "traces.errors", "traces.slow", "service"}
    start_ms = str((T0 - 30 * MIN) // 1_000_000)
    for href in links.values():
        parts = urlsplit(href)
        assert href.startswith(pd.url + "/")
        q = parse_qs(parts.query)
        assert (q["from"], q["to"]) == ([start_ms], ["now"])
        r = httpx.get(href, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, href  # the UI page opens
    errors = parse_qs(urlsplit(links["golden_signals.errors"]).query)["expr"][0]
    assert 'service_name="checkout"' in errors and 'status_code="STATUS_CODE_ERROR"' in errors
    logs = parse_qs(urlsplit(links["logs"]).query)["query"][0]
    assert logs.startswith('{service_name="checkout"} |~ ')
    traces = parse_qs(urlsplit(links["traces.errors"]).query)
    assert (traces["service"], traces["status"]) == (["checkout"], ["error"])
    pd.events.resolve("a")  # a resolved incident's window ends 15 minutes after it resolved
    resolved = pd.api.rget(f"incidents/{with_svc['id']}")
    q = parse_qs(urlsplit(resolved["pitwall"]["links"][0]["href"]).query)
    assert q["to"] == [str((T0 + 15 * MIN) // 1_000_000)]

    out = CliRunner().invoke(cli, ["incident", "show", "1", "--server", pd.url, "--token", TOKEN])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("[#1] checkout p99 over 2s")
    assert "alerts:   1 (0 triggered, 1 resolved)" in out.output
    assert "signals of checkout:" in out.output and links["logs"].split("&to=")[0] in out.output


def test_grouping_in_settings_and_similarity_rules() -> None:
    from pydantic import ValidationError

    from pitwall.incidents.grouping import similar
    from pitwall.incidents.settings import IncidentsSettings
    from tests.incidents.conftest import incidents_config

    cfg = incidents_config()
    cfg["services"][0]["alert_grouping_parameters"] = {"type": "content_based",
                                                       "config": {"aggregate": "any", "fields": ["summary"]}}
    s = IncidentsSettings.model_validate(cfg)
    assert s.services[0].alert_grouping_parameters.render()["config"]["fields"] == ["summary"]
    cfg["services"][0]["alert_grouping_parameters"] = {"type": "content_based", "config": {"fields": ["summary"]}}
    with pytest.raises(ValidationError, match=r"config\.aggregate is required"):
        IncidentsSettings.model_validate(cfg)
    assert similar("Disk 91% full on db-7", "Disk 97% full on db-12")
    assert not similar("Disk full on db1", "Login failures on auth")
    assert not similar("", "anything")
    from pitwall.incidents.signals import signal_service

    assert signal_service({"component": "cart", "custom_details": {"labels": {"service": "checkout"}}}) == "checkout"
    assert signal_service({"component": " cart ", "custom_details": "text"}) == "cart"
    assert signal_service({"custom_details": {"service": ""}}) == ""
