"""LogQL's ``ip()`` line and label filters, with the cases of Loki's docs (single, range, CIDR; v4 and v6)."""

from __future__ import annotations

import pytest

from pitwall.logs.logql.errors import LogQLParseError
from pitwall.logs.logql.ipfilter import compile_ip_pattern, text_has_ip
from pitwall.logs.logql.parser import parse_expr
from tests.logs.logql.helpers import querier, streams

pytestmark = pytest.mark.timeout(30)

LINES = [
    (1, "msg=a addr=192.168.0.1 took=1ms"),
    (2, "msg=b addr=192.168.4.5:8080 took=2ms"),
    (3, "msg=c addr=10.1.2.3 took=3ms"),
    (4, "msg=d addr=2001:db8::5 took=4ms"),
    (5, "msg=e addr=none took=5ms"),
    (6, "msg=f peer 172.16.0.9, retry."),
]


def _msgs(expr: str) -> set[str]:
    q = querier(({"job": "x"}, LINES))
    return {v[1].split()[0].removeprefix("msg=") for s in streams(q, expr) for v in s["values"]}


@pytest.mark.parametrize(("expr", "expected"), [
    ('{job="x"} |= ip("192.168.0.1")', {"a"}),
    ('{job="x"} != ip("192.168.0.1")', {"b", "c", "d", "e", "f"}),
    ('{job="x"} |= ip("192.168.0.0/16")', {"a", "b"}),
    ('{job="x"} |= ip("192.168.0.0-192.168.3.255")', {"a"}),
    ('{job="x"} |= ip("2001:db8::/32")', {"d"}),
    ('{job="x"} |= ip("2001:db8::1-2001:db8::8")', {"d"}),
    ('{job="x"} |= ip("172.16.0.0/12")', {"f"}),
    ('{job="x"} |= "took" |= ip("10.0.0.0/8")', {"c"}),
])
def test_ip_line_filter(expr: str, expected: set[str]) -> None:
    assert _msgs(expr) == expected


@pytest.mark.parametrize(("expr", "expected"), [
    ('{job="x"} | logfmt | addr = ip("192.168.0.1")', {"a"}),
    ('{job="x"} | logfmt | addr != ip("192.168.0.1")', {"b", "c", "d", "e"}),  # no addr label in f
    ('{job="x"} | logfmt | addr = ip("10.0.0.0/8") or addr = ip("192.168.0.0/24")', {"a", "c"}),
    ('{job="x"} | logfmt | addr = ip("2001:db8::1-2001:db8::8")', {"d"}),
    ('{job="x"} | logfmt | addr = ip("::/0") and took > 1ms', {"d"}),
])
def test_ip_label_filter(expr: str, expected: set[str]) -> None:
    assert _msgs(expr) == expected


def test_ip_label_filter_in_metric_query_parses() -> None:
    parse_expr('sum by (addr) (count_over_time({job="x"} | logfmt | addr = ip("10.0.0.0/8") [5m]))')


@pytest.mark.parametrize(("expr", "needle"), [
    ('{job="x"} |= ip("300.1.1.1")', 'ip: invalid pattern: "300.1.1.1"'),
    ('{job="x"} |= ip("10.0.0.9-10.0.0.1")', "ip: invalid pattern"),
    ('{job="x"} |= ip("10.0.0.1-::1")', "ip: invalid pattern"),
    ('{job="x"} |= ip("10.0.0.0/33")', "ip: invalid pattern"),
    ('{job="x"} | addr = ip("10.0.0.0/33")', "ip: invalid pattern"),
    ('{job="x"} |~ ip("10.0.0.1")', "syntax error"),
])
def test_ip_errors(expr: str, needle: str) -> None:
    with pytest.raises(LogQLParseError, match="parse error") as e:
        parse_expr(expr)
    assert needle in str(e.value)


def test_ip_matching_units() -> None:
    cidr = compile_ip_pattern("10.0.0.0/8")
    assert text_has_ip(cidr, "from 10.2.3.4 on") and not text_has_ip(cidr, "from 11.2.3.4 on")
    # a trailing dot joins the run of v4 characters, which then does not parse: as Loki, no match
    assert not text_has_ip(cidr, "from 10.2.3.4.")
    assert text_has_ip(cidr, "x=10.0.0.7:443") and text_has_ip(cidr, "[10.9.9.9]")
    v4 = compile_ip_pattern("10.0.0.1")
    assert not text_has_ip(v4, "::ffff:10.0.0.1")  # a v4-mapped v6 address is another family, as Go's netip
    v6 = compile_ip_pattern("2001:db8::/32")
    assert text_has_ip(v6, "peer=[2001:db8::1]:80") and not text_has_ip(v6, "peer=2001:db9::1")


def test_ip_label_filter_in_metric_query_groups() -> None:
    from tests.logs.logql.helpers import vector
    q = querier(({"job": "x"}, LINES))
    got = vector(q, 'sum by (msg) (count_over_time({job="x"} | logfmt | addr = ip("192.168.0.0/16") [1m]))', 10)
    assert sorted(lbl["msg"] for lbl, _ in got) == ["a", "b"]
