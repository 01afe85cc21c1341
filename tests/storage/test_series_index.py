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
