from __future__ import annotations

import numpy as np
import pytest

from pitwall.core.labels import Labels, Matcher
from pitwall.storage.series_index import SeriesIndex

pytestmark = pytest.mark.timeout(30)


def _idx() -> tuple[SeriesIndex, list[Labels]]:
    series: list[Labels] = [
        (("__name__", "up"), ("instance", "a"), ("job", "api")),
        (("__name__", "up"), ("instance", "b"), ("job", "api")),
        (("__name__", "up"), ("instance", "c"), ("job", "db")),
        (("__name__", "http_total"), ("job", "api"), ("path", "/x")),
        (("__name__", "http_total"), ("job", "api")),
    ]
    idx = SeriesIndex()
    for i, s in enumerate(series):
        idx.add(i, s)
    return idx, series


def test_equality_and_regex() -> None:
    idx, _ = _idx()
    assert idx.select([Matcher.of("=", "__name__", "up")]).tolist() == [0, 1, 2]
    assert idx.select([Matcher.of("=", "__name__", "up"), Matcher.of("=~", "job", "a.*")]).tolist() == [0, 1]
    assert idx.select([Matcher.of("=~", "instance", "a|c")]).tolist() == [0, 2]


def test_regex_is_anchored() -> None:
    idx, _ = _idx()
    assert idx.select([Matcher.of("=~", "job", "ap")]).tolist() == []


def test_negative_and_empty_matchers() -> None:
    idx, _ = _idx()
    # path="" selects series without a path label, as in Prometheus.
    assert idx.select([Matcher.of("=", "__name__", "http_total"), Matcher.of("=", "path", "")]).tolist() == [4]
    assert idx.select([Matcher.of("!=", "job", "api")]).tolist() == [2]
    assert idx.select([Matcher.of("!~", "instance", "a|b")]).tolist() == [2, 3, 4]
    assert idx.select([Matcher.of("=~", "path", ".+")]).tolist() == [3]


def test_names_and_values() -> None:
    idx, _ = _idx()
    assert idx.names() == ["__name__", "instance", "job", "path"]
    assert idx.values("job") == ["api", "db"]


def test_without_drops_series_and_the_values_and_names_left_empty() -> None:
    idx, series = _idx()
    new = idx.without(np.array([2, 3], dtype=np.int64))
    assert new.all_sids().tolist() == [0, 1, 4]
    assert new.values("instance") == ["a", "b"] and new.values("job") == ["api"]
    assert "path" not in new.names()
    assert new.select([Matcher.of("!=", "job", "db")]).tolist() == [0, 1, 4]
    # The old index is untouched (readers may still hold it), and the new one keeps growing.
    assert idx.values("path") == ["/x"] and len(idx) == 5
    new.add(5, series[2])
    assert new.select([Matcher.of("=", "instance", "c")]).tolist() == [5]
    assert idx.select([Matcher.of("=", "instance", "c")]).tolist() == [2]


def test_select_agrees_with_a_scan_of_every_series() -> None:
    # Unions of several values' postings, intersections of sets of very different sizes and
    # negative matchers, against matching each series' labels one by one.
    rng = np.random.default_rng(7)
    idx = SeriesIndex()
    series: list[Labels] = []
    for sid in range(3000):
        lb = [("__name__", f"m{rng.integers(5)}"), ("instance", f"i{rng.integers(40)}")]
        if rng.random() < 0.7:
            lb.append(("path", f"/p{rng.integers(8)}"))
        series.append(tuple(sorted(lb)))
        idx.add(sid, series[-1])
    cases = [
        [Matcher.of("=", "instance", "i3"), Matcher.of("=~", "path", "/p1|/p2|/p7")],
        [Matcher.of("=", "__name__", "m1"), Matcher.of("=~", "instance", "i1.*"), Matcher.of("!=", "path", "/p3")],
        [Matcher.of("=~", "instance", "i[0-4]"), Matcher.of("!~", "path", "/p[0-5]")],
        [Matcher.of("=", "__name__", "m2"), Matcher.of("=", "path", "")],
        [Matcher.of("=", "__name__", "m4"), Matcher.of("=~", "instance", "nope|i9")],
    ]
    for ms in cases:
        want = [sid for sid, lb in enumerate(series) if all(m.matches(dict(lb).get(m.name, "")) for m in ms)]
        assert idx.select(ms).tolist() == want, ms
