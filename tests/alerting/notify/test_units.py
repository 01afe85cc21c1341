"""Matchers, config errors, routing, time intervals, dedup rules, alert identity, templates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pitwall.alerting.notify.alerts import StoredAlert, fingerprint, sort_alerts
from pitwall.alerting.notify.config import parse_config
from pitwall.alerting.notify.matchers import MatcherError, parse_matchers
from pitwall.alerting.notify.nflog import NflogEntry, needs_update
from pitwall.alerting.notify.route import build_route
from pitwall.alerting.notify.silences import filter_labels_match
from pitwall.alerting.notify.templates import Templates, build_data
from pitwall.alerting.notify.timeintervals import NamedTimeInterval
from pitwall.core.errors import ConfigError

UTC = UTC


@pytest.mark.parametrize(("text", "want"), [
    ('{alertname="Foo"}', ['alertname="Foo"']),
    ("alertname=Foo", ['alertname="Foo"']),
    ('{a=~"x|y", b!="z"}', ['a=~"x|y"', 'b!="z"']),
    ('a="x,y",b!~z', ['a="x,y"', 'b!~"z"']),
    (r'a="quote \" here"', [r'a="quote \" here"']),
    (r'a="new\nline"', [r'a="new\nline"']),
    ('{"service name"="api"}', ['"service name"="api"']),
    ("  a = b  ", ['a="b"']),
])
def test_parse_matchers(text: str, want: list[str]) -> None:
    assert [str(m) for m in parse_matchers(text)] == want


@pytest.mark.parametrize(("text", "err"), [
    ("a", "bad matcher format: a"),
    ('a="unterminated', "unescaped double quote"),
    ('a="x"y"', "unescaped double quote"),
    ("a=~(", "error parsing regexp"),
    ("a=b,,c=d", "bad matcher format"),
])
def test_parse_matcher_errors(text: str, err: str) -> None:
    with pytest.raises(MatcherError, match=err.replace("(", r"\(")):
        parse_matchers(text)


def test_regex_is_anchored_and_negative_matchers() -> None:
    (m,) = parse_matchers("a=~foo|bar")
    assert m.matches("foo") and not m.matches("foobar")
    (n,) = parse_matchers('a!~"fo+"')
    assert n.matches("") and not n.matches("foo")


def test_api_filter_semantics() -> None:
    # An empty-value equality filter also accepts a missing label; != "" requires presence.
    assert filter_labels_match(parse_matchers('a=""'), {"b": "1"})
    assert filter_labels_match(parse_matchers('a!=""'), {"a": "1"})
    assert not filter_labels_match(parse_matchers("a=1"), {"a": "2"})


@pytest.mark.parametrize(("text", "message"), [
    ("route: {receiver: x}\nreceivers: [{name: r}]", 'route.receiver: undefined receiver "x" used in route'),
    ("receivers: [{name: r}]", "route: no routes provided"),
    ("route: {receiver: r}\nreceivers: [{name: r, webhook_configs: [{url: 'http://a/'}, {}]}]",
     "receivers[0].webhook_configs[1]: one of url or url_file must be configured"),
    ("route: {receiver: r, routes: [{routes: [{matchers: ['a=\"x']}]}]}\nreceivers: [{name: r}]",
     "route.routes[0].routes[0].matchers[0]: matcher value contains unescaped double quote"),
    ("route: {receiver: r}\nreceivers: [{name: r, msteams_configs: [{webhook_url: 'http://a/'}]}]",
     "receivers[0].msteams_configs: receiver type not supported by pitwall"),
    ("route: {receiver: r, group_wait: 5x}\nreceivers: [{name: r}]",
     "route.group_wait: not a valid duration string"),
    ("route: {receiver: r}\nreceivers: [{name: r, email_configs: [{to: a@b.c}]}]",
     "receivers[0].email_configs[0].smarthost: no global SMTP smarthost set"),
    ("route: {receiver: r}\nreceivers: [{name: r}]\ninhibit_rules: [{equal: ['bad-name']}]",
     'inhibit_rules[0].equal: invalid label name "bad-name" in equal list'),
    ("route: {receiver: r, routes: [{active_time_intervals: [t]}]}\nreceivers: [{name: r}]",
     'route.routes[0].active_time_intervals[0]: undefined time interval "t" used in route'),
])
def test_config_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    assert message in e.value.message


def test_config_defaults_and_masked_status_yaml() -> None:
    cfg = parse_config("global: {slack_api_url: 'https://hooks.example/x'}\nroute: {receiver: r}\n"
                       "receivers: [{name: r, slack_configs: [{channel: '#a'}], pagerduty_configs: "
                       "[{routing_key: secretkey}]}]\n")
    r = cfg.config.receivers[0]
    assert r.slack_configs[0].send_resolved is False and r.pagerduty_configs[0].send_resolved is True
    assert r.pagerduty_configs[0].source == r.pagerduty_configs[0].client
    text = cfg.to_yaml()
    assert "secretkey" not in text and "hooks.example" not in text and "<secret>" in text
    assert "resolve_timeout: 5m" in text


def test_route_tree_matching_and_inheritance() -> None:
    cfg = parse_config("""
route:
  receiver: root
  group_by: [alertname]
  group_wait: 10s
  routes:
    - receiver: a
      matchers: [team="a"]
      continue: true
      routes:
        - receiver: a-db
          match: {svc: db}
          group_by: [instance]
    - receiver: b
      matchers: ['team=~"a|b"']
      repeat_interval: 1m
receivers: [{name: root}, {name: a}, {name: a-db}, {name: b}]
""")
    root = build_route(cfg.route)
    got = root.match({"team": "a", "svc": "db"})
    assert [r.receiver for r in got] == ["a-db", "b"]
    assert got[0].group_by == frozenset({"instance"}) and got[0].group_wait_ms == 10_000
    assert got[1].repeat_interval_ms == 60_000 and got[1].group_interval_ms == 300_000
    assert got[0].key == '{}/{team="a"}/{svc="db"}'
    assert [r.receiver for r in root.match({"team": "c"})] == ["root"]
    assert [r.receiver for r in root.match({"team": "b"})] == ["b"]


def test_time_intervals() -> None:
    ti = NamedTimeInterval.model_validate({"name": "biz", "time_intervals": [{
        "times": [{"start_time": "09:00", "end_time": "17:00"}], "weekdays": ["monday:friday"],
        "location": "Europe/Berlin"}]})
    # 2024-01-08 is a Monday; 08:30 UTC is 09:30 in Berlin.
    assert ti.contains(datetime(2024, 1, 8, 8, 30, tzinfo=UTC))
    assert not ti.contains(datetime(2024, 1, 8, 16, 30, tzinfo=UTC))
    assert not ti.contains(datetime(2024, 1, 6, 10, 0, tzinfo=UTC))  # Saturday
    last = NamedTimeInterval.model_validate({"name": "eom", "time_intervals": [
        {"days_of_month": ["-1"], "months": ["february"]}]})
    assert last.contains(datetime(2024, 2, 29, 12, tzinfo=UTC)) and not last.contains(datetime(2024, 2, 28, tzinfo=UTC))


def test_dedup_rules() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    hour = timedelta(hours=1)
    assert needs_update(None, frozenset({1}), frozenset(), True, hour, now)
    assert not needs_update(None, frozenset(), frozenset({1}), True, hour, now)
    e = NflogEntry(now - timedelta(minutes=5), frozenset({1, 2}), frozenset())
    assert not needs_update(e, frozenset({1, 2}), frozenset(), True, hour, now)
    assert not needs_update(e, frozenset({1}), frozenset(), False, hour, now)
    assert needs_update(e, frozenset({1}), frozenset({2}), True, hour, now)
    assert needs_update(e, frozenset({1, 3}), frozenset(), False, hour, now)
    assert needs_update(e, frozenset(), frozenset({1, 2}), False, hour, now)
    assert needs_update(e, frozenset({1, 2}), frozenset(), True, timedelta(minutes=1), now)


def test_fingerprint_matches_prometheus() -> None:
    # FNV-1a as Prometheus computes it (test_peers compares fingerprints with Alertmanager itself).
    assert f"{fingerprint({}):016x}" == "cbf29ce484222325"
    assert f"{fingerprint({'alertname': 'A', 'job': 'j'}):016x}" == "59693fc3068e9acc"


def test_alert_order_and_merge() -> None:
    t = datetime(2024, 1, 1, tzinfo=UTC)

    def a(**labels: str) -> StoredAlert:
        return StoredAlert(labels, {}, t, t + timedelta(minutes=5), t)

    order = sort_alerts([a(x="1"), a(job="b"), a(job="a", instance="2"), a(job="a", instance="1")])
    assert [x.labels for x in order] == [{"job": "a", "instance": "1"}, {"job": "a", "instance": "2"},
                                         {"job": "b"}, {"x": "1"}]
    old = StoredAlert({"a": "1"}, {}, t - timedelta(minutes=1), t + timedelta(minutes=9), t)
    new = StoredAlert({"a": "1"}, {"n": "1"}, t, t + timedelta(minutes=5), t + timedelta(seconds=1), timeout=True)
    m = old.merge(new)
    assert m.starts_at == old.starts_at and m.ends_at == old.ends_at and m.annotations == {"n": "1"}


def test_default_subject_and_text_list() -> None:
    t = datetime(2024, 1, 1, tzinfo=UTC)
    alerts = [StoredAlert({"alertname": "Disk", "instance": "a", "job": "node"}, {"summary": "full"}, t, None, t,
                          "http://prom/x"),
              StoredAlert({"alertname": "Disk", "instance": "b", "job": "node"}, {}, t, t, t)]
    data = build_data("ops", {"alertname": "Disk"}, alerts, "http://am", t + timedelta(seconds=1))
    tm = Templates()
    assert tm.render('{{ template "__subject" . }}', data) == "[FIRING:1] Disk (node)"
    assert tm.render('{{ template "slack.default.titlelink" . }}', data) == "http://am/#/alerts?receiver=ops"
    assert tm.render('{{ template "__text_alert_list" .Alerts.Firing }}', data) == (
        "Labels:\n - alertname = Disk\n - instance = a\n - job = node\nAnnotations:\n - summary = full\n"
        "Source: http://prom/x\n")
    assert tm.render('{{ .CommonLabels.Remove .GroupLabels.Names | len }} {{ .Alerts.Resolved | len }}',
                     data) == "1 1"
