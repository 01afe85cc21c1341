"""Column-wise ``| json`` extraction and label filters (``columnar.py``) against the per-entry pipeline.

Every query runs twice, once as shipped (columnar where it can decide) and
once with the columnar paths switched off; results must be identical, on
lines built to hit each case the columnar code hands back to the pipeline.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pitwall.logs.logql import LogQLEngine, LogQLPipelineError, ast
from pitwall.logs.logql import extract as extract_mod
from pitwall.logs.logql import streams as streams_mod
from pitwall.logs.logql.columnar import (
    FALSE,
    TRUE,
    UNKNOWN,
    JsonColumns,
    filter_prefix,
    text_drops,
    tri_filters,
)
from pitwall.logs.logql.parser import parse_expr
from pitwall.logs.logql.pipeline import split_pushdown
from pitwall.logs.memory import InMemoryLogQuerier
from pitwall.logs.model import Direction, LogEntry, PushStream
from tests.logs.logql.helpers import S

LINES = [
    '{"level":"error","status":500,"latency_ms":120.5,"pod":"json-pod"}',
    '{"level":"info","status":200,"latency_ms":3.25}',
    '{"level":"warn","status":"503","latency_ms":"250"}',  # numbers as strings
    '{"level":"error","status":"abc","latency_ms":1e3}',  # filter conversion error, exponent float
    '{"level":"info","status":-0,"latency_ms":0}',  # "-0" keeps its sign in text only
    '{"level":"debug","latency":{"ms":900},"status":502}',  # nested object flattens into latency_ms
    '{"level":"info","status":504,"latency_ms":150,"latency_ms":5}',  # duplicate key: last wins
    '{"level":true,"status":null,"latency_ms":[1,2]}',  # bool, null, array
    '{"lev-el":"x","status":500,"latency_ms":101}',  # key that is not a label name
    '{"level":"error","status":500,"latency_ms":1.10}',  # float whose text is not repr()
    "not json at all",
    "[1,2,3]",
    '{"level":"error","status":599,"latency_ms":99.999}',
    '{"level":"error","status":500,"latency_ms":100.0001,"app":"inner"}',  # collides with a stream label
    '{"level":"info","status":501,"latency_ms":"1e2"}',
    '{"level":"info","status":500,"latency_ms":12345678901234567890}',  # beyond 64-bit
    '{"level":3.50,"status":500,"latency_ms":200}',  # float grouping label
    '{"level":"error","status":500,"latency_ms":300,"extra":{"deep":{"x":1}}}',
]


def _querier(lines: list[str], with_metadata: bool = False) -> InMemoryLogQuerier:
    q = InMemoryLogQuerier()
    streams: dict[tuple[tuple[str, str], ...], list[LogEntry]] = {}
    for i, line in enumerate(lines):
        labels = (("app", "api"), ("pod", f"p{i % 3}"))
        md = (("trace_id", f"t{i}"),) if with_metadata and i % 4 == 0 else ()
        streams.setdefault(labels, []).append(LogEntry((i + 1) * S, line, md))
    q.push(PushStream(k, v) for k, v in streams.items())
    return q


def _run(q: InMemoryLogQuerier, expr: str, *, limit: int = 1000,
         direction: Direction = Direction.BACKWARD) -> Any:
    try:
        res = LogQLEngine().query_range(q, expr, 0, 100 * S, 10 * S, limit=limit, direction=direction)
    except LogQLPipelineError as e:
        return ("error", str(e))
    data = res.to_loki_data(categorize_labels=True)
    data.pop("stats")
    return data


METRIC = [
    'sum by (level) (count_over_time({app="api"} | json [100s]))',
    'sum by (level, pod) (count_over_time({app="api"} | json | status >= 500 [100s]))',
    'quantile_over_time(0.9, {app="api"} | json | unwrap latency_ms [100s]) by (pod)',
    'sum by (level) (sum_over_time({app="api"} | json | status >= 500 and latency_ms > 100 | unwrap latency_ms [100s]))',
    'sum by (level) (count_over_time({app="api"} | json | level=~"err.*" or status < 300 [100s]))',
    'sum by (app) (count_over_time({app="api"} | json | app="inner" [100s]))',
    'sum by (app_extracted) (count_over_time({app="api"} | json | app_extracted!="" [100s]))',
    'sum by (level) (bytes_over_time({app="api"} | json | status != 500 [100s]))',
    'sum by (level) (count_over_time({app="api"} | json | latency_ms > 1ms [100s]))',
    'sum by (level) (count_over_time({app="api"} | json | latency_ms > 100 | __error__="" [100s]))',
    'max_over_time({app="api"} | json | __error__="" | unwrap latency_ms [100s]) by (level)',
]

LOGS = [
    '{app="api"} | json | status >= 500 and latency_ms > 100',
    '{app="api"} | json | status >= 500 or level="info"',
    '{app="api"} | json | level!="error" | line_format "{{.level}}"',
    '{app="api"} | json | status > 500 | __error__=""',
    '{app="api"} | json | pod="p1"',
    '{app="api"} | json | latency_ms < 10 | keep level',
]


def _exact_and_columnar(monkeypatch: pytest.MonkeyPatch, q: InMemoryLogQuerier, expr: str, **kw: Any) -> None:
    fast = _run(q, expr, **kw)
    with monkeypatch.context() as m:
        m.setattr(extract_mod.SampleExtractor, "_columnar_plan", lambda self, hints: None)
        orig = streams_mod.StreamReader.__init__

        def init(self: Any, *a: Any, **k: Any) -> None:
            orig(self, *a, **k)
            self.batch_filters = None
            self.prefilter = streams_mod.compile_prefilter(split_pushdown(self.node.stages)[1])

        m.setattr(streams_mod.StreamReader, "__init__", init)
        slow = _run(q, expr, **kw)
    assert fast == slow, expr


@pytest.mark.parametrize("expr", METRIC + LOGS)
@pytest.mark.parametrize("with_metadata", [False, True])
def test_columnar_matches_pipeline(monkeypatch: pytest.MonkeyPatch, expr: str, with_metadata: bool) -> None:
    q = _querier([x for x in LINES if "12345678901234567890" not in x], with_metadata)
    _exact_and_columnar(monkeypatch, q, expr)


@pytest.mark.parametrize("direction", [Direction.BACKWARD, Direction.FORWARD])
@pytest.mark.parametrize("limit", [1, 3, 7])
def test_log_query_limit_and_direction_match_pipeline(
    monkeypatch: pytest.MonkeyPatch, direction: Direction, limit: int
) -> None:
    q = _querier(LINES * 3)
    for expr in LOGS:
        _exact_and_columnar(monkeypatch, q, expr, limit=limit, direction=direction)


def test_pipeline_errors_are_still_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    q = _querier(LINES)  # "not json" makes ``| json`` set __error__: metric queries fail as Loki's do
    res = _run(q, 'sum by (level) (count_over_time({app="api"} | json [100s]))')
    assert res[0] == "error"
    _exact_and_columnar(monkeypatch, q, 'sum by (level) (count_over_time({app="api"} | json [100s]))')


def _filters(expr: str) -> list[ast.LabelFilter]:
    node = parse_expr(expr)
    assert isinstance(node, ast.LogSelector)
    got = filter_prefix(node.stages)
    assert got is not None
    return got


def test_three_valued_filter_decisions() -> None:
    lines = [
        '{"status":500,"latency_ms":150}',  # kept
        '{"status":200,"latency_ms":150}',  # dropped
        '{"status":"oops","latency_ms":150}',  # LabelFilterErr: only the pipeline knows
        '{"latency_ms":150}',  # no status: dropped
        "garbage",  # not JSON: the pipeline decides
        '{"status":{"code":500}}',  # nested under a used name
        '{"status":500,"latency_ms":50}',  # second filter drops
    ]
    f = _filters('{a="b"} | json | status >= 500 | latency_ms > 100')
    cols = JsonColumns(lines, np.zeros(len(lines), dtype=np.int64), [{"a": "b"}], {"status", "latency_ms"})
    assert tri_filters(f, cols).tolist() == [TRUE, FALSE, UNKNOWN, FALSE, UNKNOWN, UNKNOWN, FALSE]


def test_stream_label_wins_over_json_key() -> None:
    lines = ['{"pod":"from-json","n":1}', '{"n":2}']
    cols = JsonColumns(lines, np.array([0, 1]), [{"pod": "p0"}, {}], {"pod"})
    codes, vocab, unknown = cols.codes("pod")
    assert [vocab[c] if c >= 0 else None for c in codes.tolist()] == ["p0", None]
    assert not unknown.any()


def test_filter_prefix_needs_leading_plain_json() -> None:
    assert filter_prefix(parse_expr('{a="b"} | json | x > 1 | logfmt | y > 2').stages) is not None  # type: ignore[union-attr]
    assert len(_filters('{a="b"} | json | x > 1 | logfmt | y > 2')) == 1
    assert filter_prefix(parse_expr('{a="b"} | logfmt | x > 1').stages) is None  # type: ignore[union-attr]
    assert filter_prefix(parse_expr('{a="b"} | json x="y" | x > 1').stages) is None  # type: ignore[union-attr]


_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none(),
    st.text(max_size=6), st.lists(st.integers(), max_size=2), st.dictionaries(st.sampled_from(["ms", "x"]),
                                                                              st.integers(), max_size=2),
)
_keys = st.sampled_from(["status", "latency_ms", "latency", "level", "pod", "app", "lat.ms", "1x"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(_keys, _values, max_size=5), min_size=1, max_size=12))
def test_random_objects_match_pipeline(objs: list[dict[str, Any]]) -> None:
    lines = [json.dumps(o) for o in objs]
    q = _querier(lines)
    mp = pytest.MonkeyPatch()
    try:
        for expr in (METRIC[1], METRIC[2], METRIC[4], LOGS[0], LOGS[1]):
            _exact_and_columnar(mp, q, expr)
    finally:
        mp.undo()


def test_clean_json_needs_no_per_entry_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [f'{{"level":"l{i % 3}","status":{500 + i % 2},"latency_ms":{i}.5}}' for i in range(50)]
    q = _querier(lines)
    calls: list[int] = []
    orig = extract_mod.SampleExtractor._per_entry_rows

    def spy(self: Any, batch: Any, subset: Any) -> Any:
        calls.append(len(batch) if subset is None else len(subset))
        return orig(self, batch, subset)

    monkeypatch.setattr(extract_mod.SampleExtractor, "_per_entry_rows", spy)
    got = _run(q, 'sum by (level) (count_over_time({app="api"} | json | status > 500 [100s]))')
    assert calls == []
    assert {r["metric"]["level"] for r in got["result"]} == {"l0", "l1", "l2"}
    lines[7] = "broken"
    _run(_querier(lines), 'sum by (level) (count_over_time({app="api"} | json | status > 500 [100s]))')
    assert calls == [1]  # only the broken line goes through the pipeline


def test_text_drops_only_what_json_would_drop() -> None:
    lines = [
        '{"status":200,"x":1}',  # one top-level occurrence, fails >= 500: dropped
        '{"status": 503 , "x":1}',  # passes: kept
        '{"x":1}',  # no such key: dropped
        '{"stat\\u0075s":503}',  # escaped key decodes to "status": kept (backslash)
        '{"a":{"status":200},"status":503}',  # two occurrences: kept
        '{"status":"200"}',  # a string: left to the decoder
        '{"status":0123}',  # not a JSON number: left to the decoder
        'status=200 not json',  # no "status" key text: dropped (json sets no label)
        '{"a":{"status":100}}',  # nested only: label not set, dropped either way
    ]
    f = _filters('{a="b"} | json | status >= 500 and latency_ms > 1')
    assert text_drops(lines, f, frozenset({"a"})).tolist() == [True, False, True, False, False, False, False, True,
                                                               True]
    # a stream label of that name, or an underscore name (sanitized/nested keys may produce it): no decision
    assert not text_drops(lines, f, frozenset({"status"})).any()
    assert not text_drops(lines, _filters('{a="b"} | json | latency_ms > 1'), frozenset()).any()


_TEXT_LINES = [
    '{"status":200,"code":7}', '{"status":503,"code":7}', '{"status":503,"code":2}', '{"code":9}',
    '{"status":5e2,"code":1e400}', '{"status":-0,"code":-1e400}', '{"status":503,"code":"9"}',
    '{"msg":"caf\u00e9 \\"q\\"","status":600,"code":8}', '{"msg":"café ☃","status":600,"code":9}',
    '{"n":{"status":900},"status":100,"code":9}', '{"status":700, "code" : 9 }', "status=700 code=9",
    '{"status":700,"code":9', '{"status":700,"code":9,"status":1}', '', '{"status":1.5E+3,"code":12.25}',
]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(_TEXT_LINES), min_size=1, max_size=20))
def test_text_drops_never_drops_what_the_pipeline_keeps(lines: list[str]) -> None:
    """Each conjunct only looks at lines the earlier ones kept, and the batch-wide backslash test."""
    from pitwall.logs.logql.pipeline import Pipeline

    for expr in ('{a="b"} | json | status >= 500 and code > 8', '{a="b"} | json | code <= 8 | status != 503'):
        node = parse_expr(expr)
        assert isinstance(node, ast.LogSelector)
        pipe = Pipeline.compile(node.stages)
        drop = text_drops(lines, _filters(expr), frozenset({"a"}))
        kept = [pipe.process(0, x, {"a": "b"}, frozenset({"a"})) is not None for x in lines]
        assert not any(d and k for d, k in zip(drop.tolist(), kept, strict=True)), (expr, lines)


def test_a_name_quoted_as_a_value_is_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flat-line reader counts the quoted name: once as a value is not set, twice goes to the pipeline."""
    lines = ['{"msg":"level","status":500}', '{"level":"warn","msg":"level"}', '{"level" : "error"}',
             '{"status":"level","latency_ms":2}', '{"level":"caf\u00e9"}', '{"level":"café ☃","x":1}',
             '{"level":"a","level":"b"}', '{"a":"status","level":"info","status":503}']
    q = _querier(lines)
    for expr in METRIC + LOGS:
        _exact_and_columnar(monkeypatch, q, expr)
    got = _run(q, 'sum by (level) (count_over_time({app="api"} | json [100s]))')
    assert sorted(r["metric"].get("level", "") for r in got["result"]) == ["", "b", "café", "café ☃", "error",
                                                                           "info", "warn"]


def test_flat_lines_are_read_from_text_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    from pitwall.logs.logql import columnar

    decoded: list[str] = []
    orig = columnar._decode

    def spy(lines: list[str]) -> list[object]:
        decoded.extend(lines)
        return orig(lines)

    monkeypatch.setattr(columnar, "_decode", spy)
    lines = [
        '{"level":"info","n":12.50,"ok":true,"x":null}',  # flat: numbers keep their source text
        '{ "level" : "warn" , "n" : -0 }',  # flat, JSON whitespace
        '{"level":"a\\"b","n":1}',  # an escape: decoded
        '{"level":"x","n":1,"n":2}',  # flat, duplicate key: left to the pipeline
        '{"level":"x","n":123456789012345678901}',  # too many digits for the text path: decoded
    ]
    cols = JsonColumns(lines, np.zeros(len(lines), dtype=np.int64), [{}], {"level", "n"})
    assert decoded == [lines[2], lines[4]]
    assert [cols.text("n", i) for i in (0, 1)] == ["12.50", "-0"]
    assert cols.text("ok", 0) == "true" and cols.text("x", 0) == "" and cols.text("missing", 0) is None
    assert cols.column("n").kind.tolist()[3] == 3  # K_UNKNOWN
    assert cols.text("level", 2) == 'a"b'
