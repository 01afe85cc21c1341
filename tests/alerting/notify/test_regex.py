"""Security finding 23 for alerting: matchers, API filters and template regexes are RE2 (linear time)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from pitwall.alerting.notify.alerts import StoredAlert
from pitwall.alerting.notify.matchers import MatcherError, parse_matchers
from pitwall.alerting.notify.templates import Templates, build_data
from pitwall.alerting.rules import templates as rule_templates
from tests.alerting.notify.helpers import Receiver, webhook_config

EVIL = "a" * 40 + "!"


@pytest.mark.timeout(60)
def test_matchers_and_templates_take_linear_time() -> None:
    (m,) = parse_matchers('v=~"(a+)+b"')
    assert not m.matches(EVIL) and m.matches("aab")
    t = datetime(2024, 1, 1, tzinfo=UTC)
    data = build_data("ops", {}, [StoredAlert({"v": EVIL}, {}, t, None, t)], "http://am", t)
    text = '{{ match "(a+)+b" .CommonLabels.v }} {{ reReplaceAll "(a+)+(b?)" "<$2>" .CommonLabels.v }}'
    assert Templates().render(text, data) == "false <>!"
    assert not rule_templates.match("(a+)+b", EVIL)
    assert rule_templates.re_replace_all("(a+)+(?P<x>!)", "${x}$1", EVIL) == "!" + "a" * 40
    with pytest.raises(ValueError, match="error parsing regexp: invalid escape sequence"):
        rule_templates.match("(a)\\1", "aa")


@pytest.mark.parametrize("bad", ['a=~"(a)\\\\1"', 'a=~"(?=a)"'])
def test_backreferences_and_lookarounds_are_rejected(bad: str) -> None:
    with pytest.raises(MatcherError, match=r"^error parsing regexp: "):
        parse_matchers(bad)


@pytest.mark.timeout(60)
async def test_api_filters(am_app: Any, receiver: Receiver) -> None:
    async with am_app(webhook_config(receiver.url)) as c:
        r = await c.post("/api/v2/alerts", json=[{"labels": {"alertname": "X", "v": EVIL}}])
        assert r.status_code == 200, r.text
        r = await c.get("/api/v2/alerts", params={"filter": 'v=~"(a+)+b"'})
        assert r.status_code == 200 and r.json() == []
        r = await c.get("/api/v2/alerts", params={"filter": 'v!~"(a+)+b"'})
        assert [a["labels"]["v"] for a in r.json()] == [EVIL]
        r = await c.get("/api/v2/alerts/groups", params={"receiver": "(w+)+x"})
        assert r.status_code == 200 and r.json() == []
        r = await c.get("/api/v2/alerts", params={"receiver": "(?=x)"})
        assert r.status_code == 400
        assert r.json() == "failed to parse receiver param: error parsing regexp: invalid or unsupported Perl syntax: `(?=`"
        r = await c.get("/api/v2/alerts", params={"filter": 'v=~"(a)\\\\1"'})
        assert r.status_code == 400 and "error parsing regexp: invalid escape sequence: `\\1`" in r.json()
