"""LogQL's ``| distinct`` (Loki's DistinctFilter): the first entry of each label combination, in read order."""

from __future__ import annotations

import pytest

from pitwall.logs.logql.errors import LogQLParseError
from pitwall.logs.logql.parser import parse_expr
from tests.logs.logql.helpers import querier, streams

pytestmark = pytest.mark.timeout(30)

LINES = [
    (1, "msg=a user=ann city=oslo"),
    (2, "msg=b user=bob city=oslo"),
    (3, "msg=c user=ann city=rome"),
    (4, "msg=d user=ann city=oslo"),
    (5, "msg=e city=oslo"),
    (6, "msg=f user=bob city=oslo"),
]


def _msgs(expr: str, direction: str = "forward") -> list[str]:
    from pitwall.logs.model import Direction
    q = querier(({"job": "x"}, LINES))
    got = [(v[0], v[1].split()[0].removeprefix("msg=")) for s in streams(q, expr, direction=Direction(direction))
           for v in s["values"]]
    return [m for _, m in sorted(got)]


@pytest.mark.parametrize(("expr", "direction", "expected"), [
    ('{job="x"} | logfmt | distinct user', "forward", ["a", "b", "e"]),  # e: no user label, kept
    ('{job="x"} | logfmt | distinct user', "backward", ["d", "e", "f"]),  # newest first keeps the last ones
    ('{job="x"} | logfmt | distinct user, city', "forward", ["a", "b", "c", "e"]),
    # a line filter after distinct is not moved before it: distinct keeps a and c, neither holds "bob"
    ('{job="x"} | logfmt | distinct city |= "bob"', "forward", []),
    ('{job="x"} |= "ann" | logfmt | distinct city', "forward", ["a", "c"]),
])
def test_distinct(expr: str, direction: str, expected: list[str]) -> None:
    assert _msgs(expr, direction) == expected


def test_distinct_needs_labels() -> None:
    with pytest.raises(LogQLParseError):
        parse_expr('{job="x"} | distinct')

