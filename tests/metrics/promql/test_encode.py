"""The text-built matrix body equals the one built point by point (``format_float``, ``format_seconds``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pitwall.core.labels import labels_from_dict
from pitwall.metrics.memory import MemoryQuerier
from pitwall.metrics.promql import encode
from pitwall.metrics.promql.encode import matrix_result_json, matrix_result_text, values_text
from pitwall.metrics.promql.engine import Engine, QueryResult, encode_response_body
from pitwall.metrics.promql.format import format_float, format_seconds

pytestmark = pytest.mark.timeout(60)

SPECIAL = [0.0, -0.0, 2.0, -2.0, 1.5, 1e15, 1e16, 1.2345e20, -1e21, 1.5e-7, 1e-5, 9.9e-6, 5e-324,
           1.7976931348623157e308, 1 / 3, np.nan, np.inf, -np.inf, 123456789.0, 0.1, 100.0, -3.25e-12]


def _straightforward(res: QueryResult) -> dict[str, object]:
    rows = [{"metric": dict(lb), "values": [[format_seconds(t), format_float(v)]
                                            for t, v in zip(ts.tolist(), vals.tolist(), strict=True)]}
            for lb, ts, vals in zip(res.series, res.timestamps, res.values, strict=True)]
    body: dict[str, object] = {"status": "success", "data": {"resultType": "matrix", "result": rows}}
    if res.warnings:
        body["warnings"] = res.warnings
    if res.infos:
        body["infos"] = res.infos
    return body


def _random_matrix(seed: int) -> QueryResult:
    rng = np.random.default_rng(seed)
    series, tss, vals = [], [], []
    shared = seed % 2 == 0  # every series at the same times (a range query's usual matrix), or each its own
    n_shared = int(rng.integers(1, 40))
    shared_grid = np.sort(rng.choice(200, size=n_shared, replace=False)).astype(np.int64) * 15_000 + 1_700_000_000_000
    for i in range(int(rng.integers(0, 12))):
        n = n_shared if shared else int(rng.integers(0, 40))
        grid = shared_grid.copy() if shared else (
            np.sort(rng.choice(200, size=n, replace=False)).astype(np.int64) * 15_000 + 1_700_000_000_000)
        if seed % 3 == 1 and not shared:
            grid += rng.integers(0, 1000, size=n)  # some (or all) times not on whole seconds
        if seed % 3 == 1 and shared:
            grid = shared_grid + 500 * (i == 0)  # same counts, one series off by half a second
        v = rng.normal(size=n) * 10.0 ** float(rng.integers(-9, 22))
        if seed % 2:
            v = np.round(v, int(rng.integers(0, 4)))
        picks = rng.integers(0, len(SPECIAL), size=n)
        special = rng.random(n) < 0.2
        v[special] = np.array(SPECIAL)[picks[special]]
        series.append(labels_from_dict({"__name__": "m", "i": str(i), "u": 'é"\n<\\'}))
        tss.append(grid)
        vals.append(v)
    return QueryResult("matrix", series, tss, vals, warnings=["w"] if seed % 4 == 0 else [],
                       infos=["i"] if seed % 5 == 0 else [])


@pytest.mark.parametrize("seed", range(40))
def test_matrix_body_equals_point_by_point(seed: int) -> None:
    res = _random_matrix(seed)
    got = json.loads(encode_response_body(res))
    want = _straightforward(res)
    assert got == want
    # Spelling, not just value: every point's strings and number types are the same.
    for a, b in zip(got["data"]["result"], want["data"]["result"], strict=True):  # type: ignore[index]
        assert [[type(t), t, v] for t, v in a["values"]] == [[type(t), t, v] for t, v in b["values"]]


def test_values_text_over_magnitudes_and_specials() -> None:
    rng = np.random.default_rng(11)
    for k in range(200):
        v = rng.normal(size=50) * 10.0 ** int(rng.integers(-25, 25))
        if k % 2:
            v[::7] = np.array(SPECIAL)[rng.integers(0, len(SPECIAL), size=len(v[::7]))]
        assert values_text(v).split(",")[:-1] == [format_float(x) for x in v.tolist()]
    assert values_text(np.array([])) == ""


def test_empty_matrix_and_stats() -> None:
    res = QueryResult("matrix")
    assert json.loads(encode_response_body(res)) == {"status": "success",
                                                     "data": {"resultType": "matrix", "result": []}}
    q = MemoryQuerier()
    for t in range(0, 60_000, 15_000):
        q.add(labels_from_dict({"__name__": "m", "i": "1"}), t, t / 7)
    ran = Engine().range(q, "rate(m[1m])", 0, 60_000, 15_000)  # an info annotation: m is no counter
    body = json.loads(encode_response_body(ran, stats=True))
    assert ran.stats is not None and ran.infos
    assert body["data"]["stats"] == json.loads(json.dumps(ran.stats.to_prometheus()))
    assert body["infos"] == ran.infos
    del body["data"]["stats"]
    assert body == _straightforward(ran)


def test_tiny_values_grouped_by_exponent_match_format_float() -> None:
    rng = np.random.default_rng(3)
    for _ in range(100):
        v = rng.normal(size=300) * 10.0 ** rng.integers(-330, -4, size=300)
        v[::5] = np.round(v[::5] * 1e8) / 1e8  # zeros and short digits among them
        v[::7] = 10.0 ** rng.integers(-30, -5, size=len(v[::7]))  # exact powers: log10 at the edge
        v[::11] = np.nextafter(v[::11], 0)
        assert values_text(v).split(",")[:-1] == [format_float(x) for x in v.tolist()]


native = pytest.mark.skipif(encode._metricsc is None, reason="C helper not built")


@native
@pytest.mark.parametrize("seed", range(40))
def test_c_matrix_text_is_the_python_text(seed: int) -> None:
    res = _random_matrix(seed)
    assert matrix_result_json(res.series, res.timestamps, res.values) == \
        matrix_result_text(res.series, res.timestamps, res.values).encode()


@native
def test_c_matrix_text_labels_times_and_values_at_the_edges() -> None:
    every_char = "".join(map(chr, range(0x80))) + "é€😀\u2028"
    series = [labels_from_dict({"__name__": "m", "k": every_char}), labels_from_dict({every_char: "v"}), (),
              labels_from_dict({"a": ""})]
    # Negative, fractional and large times; integers around 1e15 and the values orjson spells with exponents.
    ts = [np.array([-1_500, -1_000, -1, 0, 1, 10, 100, 999_999_999_999_999], dtype=np.int64),
          np.array([1_700_000_000_120], dtype=np.int64), np.array([], dtype=np.int64),
          np.array([5, 50, 500], dtype=np.int64)]
    vals = [np.array([999_999_999_999_999.0, -999_999_999_999_999.0, 1e15, -1e15, 1e16 + 2, 2.5e-9, -0.0, 0.5]),
            np.array([-7.0]), np.array([]), np.array([np.nan, np.inf, -np.inf])]
    got = matrix_result_json(series, ts, vals)
    assert got == matrix_result_text(series, ts, vals).encode()
    assert json.loads(got)[0]["metric"]["k"] == every_char
    assert json.loads(got)[2] == {"metric": {}, "values": []}


@native
def test_c_matrix_text_leaves_far_times_to_python() -> None:
    series = [labels_from_dict({"a": "b"})]
    for t in (10**15, -(10**15), 2**62):
        ts, vals = [np.array([0, t], dtype=np.int64)], [np.array([1.0, 0.1])]
        assert encode._metricsc.matrix_json(series, np.array([2]), ts[0], vals[0], lambda: b"[1.0,0.1]") is None
        assert matrix_result_json(series, ts, vals) == matrix_result_text(series, ts, vals).encode()


@native
def test_c_matrix_text_rejects_mismatched_input() -> None:
    series = [labels_from_dict({"a": "b"})]
    ts, vals = np.array([1000, 2000], dtype=np.int64), np.array([0.5, 0.25])
    with pytest.raises(ValueError):
        encode._metricsc.matrix_json(series, np.array([3]), ts, vals, lambda: b"[0.5,0.25]")
    with pytest.raises(ValueError):
        encode._metricsc.matrix_json(series, np.array([1]), ts, vals, lambda: b"[0.5,0.25]")
    with pytest.raises(ValueError):
        encode._metricsc.matrix_json(series, np.array([2]), ts, vals, lambda: b"[0.5]")
    with pytest.raises(TypeError):
        encode._metricsc.matrix_json(series, np.array([2]), ts.astype(np.int32), vals, lambda: b"[0.5,0.25]")
    with pytest.raises(TypeError):
        encode._metricsc.matrix_json([(("a", 1),)], np.array([2]), ts, vals, lambda: b"[0.5,0.25]")
