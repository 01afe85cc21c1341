"""The in-memory LogQuerier honours the LogQuerier protocol (limit, direction, filters, scan order)."""

from __future__ import annotations

from pitwall.core.labels import Matcher
from pitwall.logs.memory import InMemoryLogQuerier
from pitwall.logs.model import Direction, LineFilter, LineFilterOp
from tests.logs.logql.helpers import S, querier


def _q() -> InMemoryLogQuerier:
    return querier(
        ({"app": "a"}, [(3, "error three"), (1, "info one"), (5, "error five")]),
        ({"app": "b"}, [(2, "error two"), (4, "info four")]),
    )


def test_select_limit_newest_across_streams_and_direction_order() -> None:
    q = _q()
    out = q.select([Matcher.of("=~", "app", "a|b")], 0, 10 * S, limit=3)
    assert {tuple(s.labels): s.lines for s in out} == {
        (("app", "a"),): ["error five", "error three"],
        (("app", "b"),): ["info four"],
    }
    fwd = q.select([Matcher.of("=~", "app", "a|b")], 0, 10 * S, limit=2, direction=Direction.FORWARD)
    assert {tuple(s.labels): s.lines for s in fwd} == {
        (("app", "a"),): ["info one"],
        (("app", "b"),): ["error two"],
    }


def test_select_filters_and_bounds() -> None:
    q = _q()
    f = [LineFilter(LineFilterOp.CONTAINS, "error"), LineFilter(LineFilterOp.NOT_REGEX, "t(wo|hree)")]
    out = q.select([Matcher.of("=~", "app", ".+")], 0, 5 * S, filters=f)
    assert [s.lines for s in out] == []
    out = q.select([Matcher.of("=~", "app", ".+")], 0, 6 * S, filters=f, limit=1)
    assert [s.lines for s in out] == [["error five"]]


def test_scan_is_sorted_by_stream_then_time() -> None:
    b = _q().scan([Matcher.of("=~", "app", ".+")], 0, 10 * S, with_lines=True)
    assert b.streams == [(("app", "a"),), (("app", "b"),)]
    assert b.stream_idx.tolist() == [0, 0, 0, 1, 1]
    assert (b.ts_ns // S).tolist() == [1, 3, 5, 2, 4]
    assert b.line_bytes.tolist() == [8, 11, 10, 9, 9]
    assert b.lines == ["info one", "error three", "error five", "error two", "info four"]


def test_series_and_labels() -> None:
    q = _q()
    assert q.series([Matcher.of("=", "app", "b")], 0, 10 * S) == [(("app", "b"),)]
    assert q.label_names(0, 10 * S) == ["app"]
    assert q.label_values("app", [], 0, 10 * S) == ["a", "b"]
    assert q.series([], 6 * S, 10 * S) == []
