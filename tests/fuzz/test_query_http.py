"""PromQL and LogQL over HTTP, in-process: random text, grammar-ish expressions and odd parameters, never a 5xx.

The grammar-ish expressions parse most of the time, so they reach the
engines (over the seeded series and stream, and whatever the ingest fuzzers
stored when run in the same module order); random text mostly exercises the
lexers and parsers. Parameters (time, start, end, step, limit, direction)
are drawn from valid, odd and hostile values.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import strategies as fz
from tests.fuzz.conftest import Seeded
from tests.metrics.promql.test_fuzz import _vector_expr

FUZZ = settings(max_examples=fz.examples(200), deadline=5000, suppress_health_check=list(HealthCheck), database=None)
pytestmark = pytest.mark.timeout(120)

odd_numbers = st.sampled_from(["", "0", "-1", "²", "-١٢", "1e400", "NaN", "Inf", "-Inf", "1.5", "abc", "9" * 30, "1m", "0x10",
                               "2024-01-01T00:00:00Z", "-9223372036854775808", "1e-300"])

promql_text = st.text(alphabet='{}[]()=!~"` abcz,.:5m0123456789@_+-*/^%<>#\n\\sumratebyoffset', max_size=60)
logql_text = st.text(alphabet='{}[]()|=!~"` abc,.5m0123456789jsonlogfmtsumrate_by-+*/<>#\n\\', max_size=60)

selectors = st.sampled_from(['{fuzzseed="1"}', '{fuzzseed=~".+"}', '{job="elasticsearch"}', '{service_name=~".*"}',
                             '{fuzzseed!="2", fuzzseed=~"1|2"}', "{}", '{x=""}', '{a="b"} ', '{fuzzseed="1",}'])
filters = st.sampled_from(['|= "seed"', '!= "x"', '|~ "s.*d"', '!~ "("', '|= ip("10.0.0.0/8")', '| json',
                           "| logfmt", '| regexp "(?P<n>\\\\d+)"', '| pattern "<a> <b>"', '| line_format "{{.n}}"',
                           '| label_format x="{{ .fuzzseed }}"', "| unpack", "| drop fuzzseed", "| keep n",
                           "| n > 1", '| n = "2"', "| decolorize", '| __error__=""', "| unwrap n",
                           "| json a, b=\"c.d\"", '| line_format "{{ printf \\"%d\\" 1 }}"', "| x > 1.5s"])
range_fns = st.sampled_from(["count_over_time", "rate", "bytes_rate", "bytes_over_time", "sum_over_time",
                             "avg_over_time", "quantile_over_time(0.5,", "absent_over_time", "first_over_time",
                             "rate_counter", "stddev_over_time"])
ranges = st.sampled_from(["[1m]", "[5s]", "[1h]", "[0s]", "[1m] offset 5m", "[1ms]"])
aggs = st.sampled_from(["sum", "avg", "max", "topk(2,", "count", "stddev", "sort", "bottomk(1,"])


@st.composite
def logql_exprs(draw: st.DrawFn) -> str:
    log = draw(selectors) + " ".join(draw(st.lists(filters, max_size=3)))
    if draw(st.booleans()):
        return log
    fn = draw(range_fns)
    inner = f"{fn}({log} {draw(ranges)})" if not fn.endswith(",") else f"{fn} {log} {draw(ranges)})"
    if draw(st.booleans()):
        agg = draw(aggs)
        grouping = draw(st.sampled_from(["", " by (fuzzseed)", " without (x)"]))
        inner = f"{agg}{grouping} ({inner})" if not agg.endswith(",") else f"{agg} {inner})"
    if draw(st.booleans()):
        inner = f"{inner} {draw(st.sampled_from(['/', '>', 'and', 'or', '+ on(x)', '> bool']))} " \
                f"{draw(st.sampled_from(['2', inner, 'vector(1)']))}"
    return inner


def _check(app: Seeded, path: str, params: dict[str, str], method: str = "GET") -> None:
    if method == "POST":
        r = app.request("POST", path, data=params)
    else:
        r = app.request("GET", path, params=params)
    assert r.status_code < 500, (r.status_code, params, r.text[:500])


@st.composite
def times(draw: st.DrawFn, app_t: float, scale: float) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in ("time", "start", "end"):
        if draw(st.integers(0, 4)) == 0:
            out[key] = draw(odd_numbers)
        elif draw(st.booleans()):
            out[key] = str(int((app_t - draw(st.integers(0, 3600))) * scale))
    if draw(st.booleans()):
        out["step"] = draw(st.one_of(odd_numbers, st.sampled_from(["15", "15s", "1h", "0.001", "1ms"])))
    if draw(st.integers(0, 3)) == 0:
        out["limit"] = draw(odd_numbers)
    if draw(st.integers(0, 5)) == 0:
        out["direction"] = draw(st.sampled_from(["forward", "backward", "sideways", ""]))
    return out


@FUZZ
@given(st.data(), st.one_of(_vector_expr(2), promql_text), st.sampled_from(["/api/v1/query", "/api/v1/query_range"]),
       st.sampled_from(["GET", "POST"]))
def test_promql(seeded: Seeded, data: st.DataObject, expr: str, path: str, method: str) -> None:
    params = data.draw(times(seeded.t_s, 1.0))
    if path.endswith("range"):
        params.setdefault("start", str(seeded.t_s - 600))
        params.setdefault("end", str(seeded.t_s))
        params.setdefault("step", "30")
    _check(seeded, path, {"query": expr, **params}, method)


@FUZZ
@given(st.data(), st.one_of(logql_exprs(), logql_text),
       st.sampled_from(["/loki/api/v1/query", "/loki/api/v1/query_range"]), st.sampled_from(["GET", "POST"]))
def test_logql(seeded: Seeded, data: st.DataObject, expr: str, path: str, method: str) -> None:
    params = data.draw(times(seeded.t_s, 1e9))
    _check(seeded, path, {"query": expr, **params}, method)


@settings(max_examples=fz.examples(60), deadline=5000, suppress_health_check=list(HealthCheck), database=None)
@given(st.sampled_from(["/api/v1/series", "/api/v1/labels", "/api/v1/label/job/values", "/loki/api/v1/series",
                        "/loki/api/v1/labels", "/loki/api/v1/label/fuzzseed/values", "/loki/api/v1/index/stats",
                        "/loki/api/v1/index/volume", "/api/v1/format_query", "/api/v1/query_exemplars"]),
       st.one_of(st.sampled_from(['{fuzzseed="1"}', 'fuzz_seed_metric{k="v"}', '{__name__=~".+"}']), logql_text))
def test_metadata_endpoints(seeded: Seeded, path: str, selector: str) -> None:
    key = "match[]" if path.startswith("/api/v1/") and "query" not in path else "query"
    _check(seeded, path, {key: selector, "start": str(int(seeded.t_s - 3600)), "end": str(int(seeded.t_s))})


@pytest.mark.parametrize(("path", "params"), [
    ("/api/v1/query", {"query": "1", "time": "999999999999999999999999999999"}),
    ("/api/v1/query_range", {"query": "up", "start": "-62135596800", "end": "1e30", "step": "1e15"}),
    ("/api/v1/series", {"match[]": "up", "start": "-62135596800", "end": "9999-12-31T23:59:59Z"}),
    ("/loki/api/v1/query_range", {"query": '{fuzzseed="1"}', "end": "-9223372036854775808"}),
    ("/loki/api/v1/query_range", {"query": 'count_over_time({fuzzseed="1"}[1m])', "start": "-9" * 12,
                                  "end": "9" * 30, "step": "1e12"}),
    ("/loki/api/v1/labels", {"start": "-9223372036854775808", "since": "100000000h"}),
])
def test_times_past_int64_are_clamped_not_500(seeded: Seeded, path: str, params: dict[str, str]) -> None:
    """Times whose int64 form overflowed in the engines' numpy arrays (OverflowError, a 500; fuzzer finds)."""
    r = seeded.request("GET", path, params=params)
    assert r.status_code < 500, r.text


@pytest.mark.parametrize(("path", "params"), [
    ("/loki/api/v1/query", {"query": '{fuzzseed="1"}', "time": "²"}),
    ("/loki/api/v1/index/volume", {"query": '{fuzzseed="1"}', "start": "-²"}),
    ("/api/traces/v1/search", {"limit": "²"}),
])
def test_unicode_digits_are_400(seeded: Seeded, path: str, params: dict[str, str]) -> None:
    """str.isdigit passes "²" and int() then raised ValueError, a 500 (found by schemathesis)."""
    r = seeded.request("GET", path, params=params)
    assert r.status_code == 400, r.text
