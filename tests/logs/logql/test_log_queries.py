"""Log query semantics: ordering, limit with direction, instant queries, interval, limits, stats."""

from __future__ import annotations

import pytest

from pitwall.core.errors import BadData
from pitwall.logs.logql import LogQLEngine, LogQLLimitError
from pitwall.logs.memory import InMemoryLogQuerier
from pitwall.logs.model import Direction
from tests.logs.logql.helpers import S, querier, streams


def _q() -> InMemoryLogQuerier:
    return querier(
        ({"app": "b", "env": "prod"}, [(1, "b1"), (3, "b3"), (5, "b5")]),
        ({"app": "a", "env": "prod"}, [(2, "a2"), (4, "a4"), (6, "a6")]),
        ({"app": "c", "env": "dev"}, [(7, "c7")]),
    )


def test_backward_limit_takes_newest_entries_across_streams() -> None:
    res = streams(_q(), '{env="prod"}', limit=3)
    # streams sorted by their label string; entries newest first within each
    assert res == [
        {"stream": {"app": "a", "env": "prod"}, "values": [["6000000000", "a6"], ["4000000000", "a4"]]},
        {"stream": {"app": "b", "env": "prod"}, "values": [["5000000000", "b5"]]},
    ]


def test_forward_limit_takes_oldest_entries() -> None:
    res = streams(_q(), '{env="prod"}', limit=3, direction=Direction.FORWARD)
    assert res == [
        {"stream": {"app": "a", "env": "prod"}, "values": [["2000000000", "a2"]]},
        {"stream": {"app": "b", "env": "prod"}, "values": [["1000000000", "b1"], ["3000000000", "b3"]]},
    ]


def test_limit_counts_entries_after_the_pipeline() -> None:
    q = querier(({"app": "x"}, [(t, f"n={t}") for t in range(1, 11)]))
    res = streams(q, '{app="x"} | logfmt | n > 3 | drop n', limit=2, direction=Direction.FORWARD)
    assert [v[1] for s in res for v in s["values"]] == ["n=4", "n=5"]
    res = streams(q, '{app="x"} | logfmt | n < 3 | drop n', limit=5)
    assert [v[1] for s in res for v in s["values"]] == ["n=2", "n=1"]
    # without drop each value of n is its own stream, streams ordered by labels
    res = streams(q, '{app="x"} | logfmt | n > 7', limit=5)
    assert [s["stream"]["n"] for s in res] == ["10", "8", "9"]


def test_range_is_start_inclusive_end_exclusive() -> None:
    res = streams(_q(), '{env="prod"}', start=2, end=5)
    assert {v[1] for s in res for v in s["values"]} == {"a2", "b3", "a4"}


def test_regex_and_negative_matchers() -> None:
    res = streams(_q(), '{app=~"a|c", env!="dev"}')
    assert [s["stream"]["app"] for s in res] == ["a"]
    res = streams(_q(), '{env=~".+", app!~"a|b"}')
    assert [s["stream"]["app"] for s in res] == ["c"]


def test_parsed_labels_split_streams() -> None:
    q = querier(({"app": "x"}, [(1, "level=info"), (2, "level=error"), (3, "level=info")]))
    res = streams(q, '{app="x"} | logfmt')
    assert res == [
        {"stream": {"app": "x", "level": "error"}, "values": [["2000000000", "level=error"]]},
        {
            "stream": {"app": "x", "level": "info"},
            "values": [["3000000000", "level=info"], ["1000000000", "level=info"]],
        },
    ]


def test_instant_log_query_returns_streams_from_the_lookback() -> None:
    res = LogQLEngine().query_instant(_q(), '{env="prod"}', 6 * S)
    data = res.to_loki_data()
    assert data["resultType"] == "streams"
    # [t - 30s, t): the entry at t itself is excluded, as the store's end is exclusive
    assert {v[1] for s in data["result"] for v in s["values"]} == {"b1", "a2", "b3", "a4", "b5"}


def test_interval_skips_entries_closer_than_interval() -> None:
    q = querier(({"app": "x"}, [(t, str(t)) for t in range(1, 11)]))
    res = LogQLEngine().query_range(
        q, '{app="x"}', 0, 20 * S, S, direction=Direction.FORWARD, interval_ns=3 * S
    )
    assert [v[1] for s in res.to_loki_data()["result"] for v in s["values"]] == ["1", "4", "7", "10"]
    res = LogQLEngine().query_range(q, '{app="x"}', 0, 20 * S, S, interval_ns=3 * S)
    assert [v[1] for s in res.to_loki_data()["result"] for v in s["values"]] == ["10", "7", "4", "1"]


def test_limit_zero_returns_nothing() -> None:
    assert streams(_q(), '{env="prod"}', limit=0) == []


def test_max_entries_limit_is_bad_data() -> None:
    with pytest.raises(LogQLLimitError) as e:
        streams(_q(), '{env="prod"}', limit=6000)
    assert (
        str(e.value)
        == "max entries limit per query exceeded, limit > max_entries_limit_per_query (6000 > 5000)"
    )
    assert isinstance(e.value, BadData)


def test_query_length_limit() -> None:
    eng = LogQLEngine(max_query_length_ns=3600 * S)
    with pytest.raises(
        LogQLLimitError, match=r"the query time range exceeds the limit \(query length: 2h, limit: 1h\)"
    ):
        eng.query_range(_q(), '{env="prod"}', 0, 7200 * S, S)


def test_timeout_is_core_timeout() -> None:
    from pitwall.core.errors import Timeout

    q = querier(({"app": "x"}, [(t, "level=info") for t in range(1, 50)]))
    with pytest.raises(Timeout):
        LogQLEngine(timeout_s=-1).query_range(q, '{app="x"} | logfmt', 0, 100 * S, S)


def test_stats_shape_and_counts() -> None:
    data = LogQLEngine().query_range(_q(), '{env="prod"} |= "a"', 0, 10 * S, S).to_loki_data()
    stats = data["stats"]
    assert set(stats) >= {"summary", "querier", "ingester", "cache"}
    summary = stats["summary"]
    assert summary["totalEntriesReturned"] == 3
    assert summary["totalLinesProcessed"] == 3
    assert summary["totalBytesProcessed"] == 6
    assert summary["execTime"] >= 0
    assert "chunk" in stats["querier"]["store"]


def test_streams_json_shape() -> None:
    data = LogQLEngine().query_range(_q(), '{app="c"}', 0, 10 * S, S).to_loki_data()
    assert data["resultType"] == "streams"
    assert data["result"] == [{"stream": {"app": "c", "env": "dev"}, "values": [["7000000000", "c7"]]}]


def test_selective_pipeline_reads_the_rest_of_the_range_in_one_window() -> None:
    # 1 entry in 50 passes: after the first window (1/16 of the range) the rate says the limit is
    # out of reach, so the second read covers the rest instead of four more doubling windows.
    q = querier(({"app": "x"}, [(t, f"n={t} k={int(t % 50 == 0)}") for t in range(1, 1601)]))
    expr = '{app="x"} | logfmt | k == "1" | drop n, k'
    res = LogQLEngine().query_range(q, expr, 0, 1601 * S, S, limit=100)
    assert res.stats is not None and res.stats.splits == 2
    got = [v[1] for s in res.to_loki_data()["result"] for v in s["values"]]
    assert got == [f"n={t} k=1" for t in range(1600, 0, -50)]


def test_bytes_processed_are_utf8_bytes_for_list_and_arrow_lines() -> None:
    import pyarrow as pa

    from pitwall.logs.model import ArrowLines

    q = querier(({"app": "x"}, [(1, "é"), (2, "ab")]))
    summary = LogQLEngine().query_range(q, '{app="x"}', 0, 10 * S, S).to_loki_data()["stats"]["summary"]
    assert summary["totalBytesProcessed"] == 4  # as the metric path's strlen: bytes, not characters
    arr = pa.array(["x", "é", "ab"])
    assert ArrowLines(arr.slice(1)).utf8_bytes() == 4 == ArrowLines(pylist=["é", "ab"]).utf8_bytes()
    assert ArrowLines(arr.cast(pa.large_string()).slice(1)).utf8_bytes() == 4
