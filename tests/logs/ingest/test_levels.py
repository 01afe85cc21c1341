"""``detected_level`` as Loki 3's distributor derives it: Loki's own test cases from
``pkg/distributor/field_detection_test.go`` (rewritten here), per input kind, then the Loki API shapes."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest

from pitwall.config import load_settings
from pitwall.logs.ingest.levels import (
    LevelDetector,
    assign_levels,
    detect_level_in_line,
    json_level_value,
    normalize_level,
)
from pitwall.logs.model import EntryColumns
from tests.logs.conftest import now_ns, push_body

pytestmark = pytest.mark.timeout(60)

# The field list Loki's unit tests configure.
TEST_FIELDS = ["level", "LEVEL", "Level", "severity", "SEVERITY", "Severity", "lvl", "LVL", "Lvl"]
CUSTOM_FIELDS = ["log_level", "logging_level", "LOGGINGLVL", "lvl"]


def _entry_level(det: LevelDetector, line: str, md: tuple[tuple[str, str], ...] = ()) -> str:
    """Loki's detectLogLevelFromLogEntry: OTLP severity number, else the line."""
    return det.detect({}, md, line)


# ---------------------------------------------------------------- Test_detectLogLevelFromLogEntry

ENTRY_CASES = [
    ("error", (("severity_number", "7"),), "debug"),  # SeverityNumberDebug3
    ("", (("severity_number", "foo"),), "info"),
    ("foo", (), "unknown"),
    ("this is a warning log", (), "warn"),
    ("this is a debug message", (), "debug"),
    ("this is a DEBUG message", (), "debug"),
    ("debug: something happened", (), "debug"),
    ("DEBUG: something happened", (), "debug"),
    ("this is a critical message", (), "critical"),
    ("this is a CRITICAL message", (), "critical"),
    ("critical: something happened", (), "critical"),
    ("CRITICAL: something happened", (), "critical"),
    ("[debug] this is a debug message", (), "debug"),
    ("[DEBUG] this is a debug message", (), "debug"),
    ("[critical] this is a critical message", (), "critical"),
    ("[CRITICAL] this is a critical message", (), "critical"),
    ("[info] this is an info message", (), "info"),
    ("[INFO] this is an info message", (), "info"),
    ("[warn] this is a warning message", (), "warn"),
    ("[WARNING] this is a warning message", (), "warn"),
    ("[error] this is an error message", (), "error"),
    ("[ERROR] this is an error message", (), "error"),
    ("[err] this is an error message", (), "error"),
    ("[ERR] this is an error message", (), "error"),
    ('{"foo":"bar","msg":"message with keyword error but it should not get picked up","level":"critical"}', (),
     "critical"),
    ('{"FOO":"bar","MSG":"message with keyword error but it should not get picked up","LEVEL":"Critical"}', (),
     "critical"),
    ('{"foo":"bar","msg":"message with keyword warn but it should not get picked up","level":"warn"}', (), "warn"),
    ('{"foo":"bar","msg":"message with keyword warn but it should not get picked up","SEVERITY":"FATAL"}', (),
     "fatal"),
    ('{"foo":"bar","msg":"message with keyword warn but it should not get picked up","level":"ERR"}', (), "error"),
    ('{"foo":"bar","msg":"message with keyword INFO get picked up"}', (), "info"),
    ('foo=bar msg="message with info and not level should get picked up"', (), "info"),
    ('foo=bar msg="message with keyword error but it should not get picked up" level=warn', (), "warn"),
    ('foo=bar msg="message with keyword error but it should not get picked up" level=Warn', (), "warn"),
    ('foo=bar msg="message with keyword error but it should not get picked up" level=Trace', (), "trace"),
    ('foo=bar msg="message with keyword but it should not get picked up" level=NA', (), "unknown"),
    ('foo=bar msg="message with keyword but it should not get picked up" severity=critical', (), "critical"),
    ('Foo=bar MSG="Message with keyword but it should not get picked up" Severity=critical', (), "critical"),
    ('foo=bar msg="message with keyword error but it should not get picked up" level=inFO', (), "info"),
    ('FOO=bar MSG="message with keyword error but it should not get picked up" LEVEL=inFO', (), "info"),
    ('FOO=bar MSG="message that should qualify to unknown when there is no level defined" LEVEL=Inf', (), "info"),
    ('FOO=bar MSG="message that should qualify to unknown when there is no level defined" LEVEL=Information', (),
     "info"),
]


@pytest.mark.parametrize(("line", "md", "want"), ENTRY_CASES)
def test_level_from_entry(line: str, md: tuple[tuple[str, str], ...], want: str) -> None:
    det = LevelDetector(TEST_FIELDS)
    assert _entry_level(det, line, md) == want
    # the column-wise path gives the same answer for lines it is handed
    if not md:
        assert det.detect_column(pa.array([line]), np.ones(1, dtype=bool)).to_pylist() == [want]


CUSTOM_CASES = [
    ('{"foo":"bar","msg":"message with keyword error but it should not get picked up","log_level":"critical"}',
     "critical"),
    ('{"FOO":"bar","MSG":"message with keyword error but it should not get picked up","LOGGINGLVL":"Critical"}',
     "critical"),
    ('{"foo":"bar","msg":"message with keyword warn but it should not get picked up","lvl":"warn"}', "warn"),
    ('{"foo":"bar","msg":"message with keyword warn but it should not get picked up","LOGGINGLVL":"FATAL"}', "fatal"),
    ('{"foo":"bar","msg":"message with keyword warn but it should not get picked up","logging_level":"ERR"}', "error"),
    ("[debug] this is a debug message with custom fields", "debug"),
    ("[CRITICAL] this is a critical message with custom fields", "critical"),
    ("foo", "unknown"),
]


@pytest.mark.parametrize(("line", "want"), CUSTOM_CASES)
def test_level_from_entry_with_custom_fields(line: str, want: str) -> None:
    det = LevelDetector(CUSTOM_FIELDS)
    assert _entry_level(det, line) == want
    assert det.detect_column(pa.array([line]), np.ones(1, dtype=bool)).to_pylist() == [want]


@pytest.mark.parametrize(("number", "want"), [
    ("1", "trace"), ("4", "trace"), ("5", "debug"), ("6", "debug"), ("8", "debug"), ("9", "info"), ("12", "info"),
    ("13", "warn"), ("16", "warn"), ("17", "error"), ("20", "error"), ("21", "fatal"), ("24", "fatal"),
    ("0", "unknown"), ("25", "unknown"), ("100", "unknown"), ("foo", "info"),
])
def test_level_from_otlp_severity_number(number: str, want: str) -> None:
    det = LevelDetector(TEST_FIELDS)
    assert _entry_level(det, "some log message", (("severity_number", number),)) == want


# ---------------------------------------------------------------- TestGetLevelUsingJsonParser


@pytest.mark.parametrize(("text", "fields", "depth", "want"), [
    ('{"level": "error"}', {"level"}, 0, "error"),
    ('{"a": {"level": "info"}}', {"level"}, 0, "info"),
    ('{"a": {"b": {"c": {"level": "warn"}}}}', {"level"}, 0, "warn"),
    ('{"severity": "error", "level": "info"}', {"level", "severity"}, 0, "error"),
    ('{"a": {"level": "error"}, "b": {"level": "info"}}', {"level"}, 0, "error"),
    ('{"arr": [{"level": "debug"}], "level": "info"}', {"level"}, 0, "info"),
    ('{"level": 123, "severity": "warn"}', {"level", "severity"}, 0, "warn"),
    ('{"foo": "bar"}', {"level"}, 0, ""),
    ('{"foo": "bar"', {"level"}, 0, ""),
    ('{"custom_level": "error", "log_severity": "warn"}', {"custom_level", "log_severity"}, 0, "error"),
    ('{"a": {"level": "debug"}, "level": "info"}', {"level"}, 1, "info"),
    ('{"a": {"level": "debug"}}', {"level"}, 1, ""),
])
def test_json_level_field(text: str, fields: set[str], depth: int, want: str) -> None:
    assert json_level_value(text, frozenset(fields), depth) == want


def test_json_default_depth_is_two_levels() -> None:
    det = LevelDetector()
    assert det.from_line('{"a": {"level": "warn"}}') == "warn"
    # deeper than log_level_from_json_max_depth (2): the words of the line decide
    assert det.from_line('{"a": {"b": {"level": "inf"}}, "msg": "an error"}') == "error"
    assert LevelDetector(json_max_depth=0).from_line('{"a": {"b": {"level": "inf"}}, "msg": "an error"}') == "info"


# ---------------------------------------------------------------- Test_detectLevelFromLogLine

WORDS = [("trace", "trace"), ("debug", "debug"), ("info", "info"), ("warn", "warn"), ("warning", "warn"),
         ("error", "error"), ("err", "error"), ("fatal", "fatal"), ("critical", "critical"),
         ("unknown", "unknown")]
WORD_TEMPLATES = ["this is a {} message", "{} occurred", "an {}", "this is an {} message", "{}: something happened",
                  "{}, something happened", "{}! something happened", "({}) something happened",
                  "[{}] something happened", "2024-01-01T10:00:00Z {}: connection failed", "[{}] connection failed"]


@pytest.mark.parametrize(("word", "want"), WORDS)
def test_level_words(word: str, want: str) -> None:
    for tpl in WORD_TEMPLATES:
        assert detect_level_in_line(tpl.format(word)) == want, tpl
        assert detect_level_in_line(tpl.format(word.upper())) == want, tpl


@pytest.mark.parametrize(("line", "want"), [
    ("this is a terror attack", "unknown"), ("there were multiple errors", "unknown"),
    ("error123 occurred", "unknown"), ("123error occurred", "unknown"), ("errorCode is invalid", "unknown"),
    ("myError occurred", "unknown"), ("debugging the issue", "unknown"), ("debugger attached", "unknown"),
    ("information is available", "unknown"), ("informative message", "unknown"), ("warnings issued", "unknown"),
    ("criticality assessment", "unknown"), ("fatalism philosophy", "unknown"), ("tracer bullet", "unknown"),
    ("traced the issue", "unknown"), ("", "unknown"), ("this is a regular log message", "unknown"),
    ('{"message": "error occurred"}', "error"), ('{"error": "something"}', "error"),
    ('{"errorCode": 123}', "unknown"), ('msg="error occurred"', "error"), ("errorCode=123", "unknown"),
    ("error=something", "error"), ("level=error", "error"), ("[terror] attack occurred", "unknown"),
    ("[errors] occurred", "unknown"), ("[errorCode] is invalid", "unknown"), ("[debugging] the issue", "unknown"),
    ("[information] is available", "unknown"), ('{"message": "[error] occurred"}', "error"),
    ('msg="[error] occurred"', "error"), ("error_code is 500", "unknown"), ("log_error function called", "unknown"),
    ("trace_id is abc123", "unknown"), ("stack_trace printed", "unknown"), ("some_error_code is invalid", "unknown"),
    # Test_detectLevelFromLogLine_earliestPosition
    ("2024-01-01T10:00:00Z info request failed -l warning --log-level misc:error", "info"),
    ("warning: degraded, info follows", "warn"),
    ("[error] something went wrong, info available", "error"),
    ("component=misc:error [info] processed", "info"),
    ("fooerror [error] message", "error"),
    ("fooerror errorbar misc:error error_code", "unknown"),
    ("2024/01/01 10:00:00 [error] 1234#1234: *1 connect() failed (111: Connection refused) while connecting to "
     "upstream", "error"),
    ("2024/01/01 10:00:00 [warn] 1234#1234: upstream server temporarily disabled while reading response header "
     "from upstream", "warn"),
    ('192.168.1.1 - - [01/Jan/2024:10:00:00 +0000] "GET /api/error-handler HTTP/1.1" 500 1234 "-" "curl/7.68.0"',
     "unknown"),
    ("[Mon Jan 01 10:00:00.000000 2024] [error] [pid 1234] File does not exist: /var/www/html/favicon.ico", "error"),
    ("[Mon Jan 01 10:00:00.000000 2024] [warn] [pid 1234] RSA server certificate CommonName does not match", "warn"),
    ("2024-01-01 10:00:00.000  INFO 1234 --- [main] com.example.App : Starting application on host", "info"),
    ("2024-01-01 10:00:00.000 ERROR 1234 --- [main] com.example.App : Application startup failed due to "
     "connection error", "error"),
    ("2024-01-01 10:00:00.000  INFO 1234 --- [main] com.example.ErrorController : Handling request for "
     "/api/error-resource", "info"),
    ("2024-01-01 10:00:00,000 WARN  com.example.service.UserService - Failed to load user preferences, using "
     "defaults", "warn"),
    ("2024-01-01 10:00:00,000 ERROR com.example.service.DatabaseService - Connection failed after error: timeout",
     "error"),
    ("2024-01-01T10:00:00.000000Z\twarn\tads\tcluster update: warning threshold exceeded, error_rate=0.05", "warn"),
    ("2024-01-01T10:00:00.000000Z    info    Envoy command: [-c /etc/envoy.json -l warning --component-log-level "
     "misc:error --concurrency 2]", "info"),
    ("Tue Mar 24 2026 19:49:19 GMT+0000 (Coordinated Universal Time)|INFO|Integration|core-api-service:server|"
     "undefined|Received request from API GW", "info"),
    ("event='User logged in' level='info' timestamp='2022-10-13T16:29:27Z'", "info"),
    ("event='Connection refused' level='error' timestamp='2022-10-13T16:30:01Z' host='db.internal'", "error"),
])
def test_level_words_in_context(line: str, want: str) -> None:
    assert detect_level_in_line(line) == want


def test_normalize_keeps_unknown_values() -> None:
    assert [normalize_level(v) for v in ["WaRn", "InFo", "CRITICAL", "Debug", "FaTaL", "tRaCe", "ERROR", "Wrn",
                                         "informational", "notice"]] == \
        ["warn", "info", "critical", "debug", "fatal", "trace", "error", "warn", "informational", "notice"]


# ---------------------------------------------------------------- Test_DetectLogLevels (precedence)


def _assign(streams: list[tuple[tuple[str, str], ...]], rows: list[tuple[int, str, tuple[tuple[str, str], ...]]]
            ) -> tuple[list[str | None], list[tuple[tuple[str, str], ...]] | None]:
    mds = [md for _, _, md in rows]
    cols = EntryColumns(streams=streams, stream_idx=np.asarray([s for s, _, _ in rows], dtype=np.int64),
                        ts=np.arange(len(rows), dtype=np.int64), lines=[ln for _, ln, _ in rows],
                        metadata=mds if any(mds) else None)
    out = assign_levels(cols, LevelDetector())
    assert out.levels is not None
    return out.levels.to_pylist(), out.metadata


def test_precedence_of_level_sources() -> None:
    streams = [(("foo", "bar"),), (("foo", "bar"), ("level", "debug")), (("SeverityText", "debug"), ("foo", "bar"))]
    json_error = '{"msg":"this is a test message", "level":"error"}'
    levels, mds = _assign(streams, [
        (0, "test log", ()),                                      # nothing: unknown
        (0, "test log", (("severity", "warn"),)),                  # level field in metadata
        (1, "test log", ()),                                      # level stream label
        # metadata detected_level wins over everything, and is only normalized
        (1, json_error, (("severity_number", "13"), ("severity", "critical"), ("detected_level", "tRaCe"))),
        (2, json_error, (("severity_number", "13"),)),             # an indexed SeverityText wins
        (2, '{"msg":"another", "level":"trace"}', (("severity_text", "info"),)),
        (0, "log message without level", (("level", ""),)),       # an empty level field adds nothing
        (0, json_error, (("severity_text", "WARNING"),)),          # OTLP severity_text
        (0, json_error, (("severity_number", "21"),)),             # OTLP severity_number beats the line
    ])
    assert levels == ["unknown", "warn", "debug", "trace", "debug", "debug", None, "warn", "fatal"]
    assert mds is not None
    assert mds[3] == (("severity_number", "13"), ("severity", "critical"))  # moved out, not duplicated


@pytest.mark.parametrize(("value", "want"), [
    ("ERROR", "error"), ("WaRn", "warn"), ("InFo", "info"), ("CRITICAL", "critical"), ("Debug", "debug"),
    ("FaTaL", "fatal"), ("tRaCe", "trace"), ("informational", "informational"), ("notice", "notice"),
])
def test_level_label_is_normalized(value: str, want: str) -> None:
    levels, _ = _assign([(("foo", "bar"), ("level", value))], [(0, "log message without level", ())])
    assert levels == [want]


def test_column_path_agrees_with_per_line_path() -> None:
    det = LevelDetector()
    lines = [
        '{"level":"info","msg":"x"}', ' {"level" : "WARN" }', '{"level":"notice","msg":"an error"}',
        '{"level":"in\\u0066o"}', '{"level":1,"severity":"err"}', '{"level":"info"} trailing', '{"level":"info"}\v',
        '{"msg":"x","level":"debug"}', 'level=info', "plain error text", '{"a":{"level":"trace"}}', "",
        '{"level":"info"', '{"le\\u0076el":"fatal"}', '{"level":"Information"}',
    ]
    want = [det.from_line(ln) for ln in lines]
    assert det.detect_column(pa.array(lines), np.ones(len(lines), dtype=bool)).to_pylist() == want
    assert want[:5] == ["info", "warn", "error", "unknown", "error"]


# ---------------------------------------------------------------- through the Loki API


async def _push_and_query(client: httpx.AsyncClient, query: str, **headers: str) -> dict:
    t = now_ns() - 10**9
    body = push_body({
        (("app", "lvl"),): [[t, '{"level":"error","msg":"boom"}'], [t + 1, "all fine, info only"],
                            [t + 2, "no level here"], [t + 3, "x", {"severity_number": "13"}]],
        (("app", "lvl"), ("level", "WARNING")): [[t + 4, "labelled"]],
    })
    r = await client.post("/loki/api/v1/push", json=body)
    assert r.status_code == 204, r.text
    r = await client.get("/loki/api/v1/query_range", headers=headers, params={
        "query": query, "start": str(t - 10**9), "end": str(t + 10**9), "direction": "forward", "limit": "100"})
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


async def test_query_streams_carry_detected_level(client: httpx.AsyncClient) -> None:
    data = await _push_and_query(client, '{app="lvl"}')
    got = {tuple(sorted(s["stream"].items())): [v[1] for v in s["values"]] for s in data["result"]}
    assert got == {
        (("app", "lvl"), ("detected_level", "error"), ("service_name", "lvl")): ['{"level":"error","msg":"boom"}'],
        (("app", "lvl"), ("detected_level", "info"), ("service_name", "lvl")): ["all fine, info only"],
        (("app", "lvl"), ("detected_level", "unknown"), ("service_name", "lvl")): ["no level here"],
        (("app", "lvl"), ("detected_level", "warn"), ("service_name", "lvl"), ("severity_number", "13")): ["x"],
        (("app", "lvl"), ("detected_level", "warn"), ("level", "WARNING"), ("service_name", "lvl")): ["labelled"],
    }


async def test_detected_level_filter_and_metric(client: httpx.AsyncClient) -> None:
    data = await _push_and_query(client, '{app="lvl"} | detected_level="warn"')
    assert sorted(v[1] for s in data["result"] for v in s["values"]) == ["labelled", "x"]
    r = await client.get("/loki/api/v1/query", params={
        "query": 'sum by (detected_level) (count_over_time({app="lvl"}[1h]))', "time": str(now_ns())})
    assert r.status_code == 200, r.text
    got = {s["metric"].get("detected_level"): s["value"][1] for s in r.json()["data"]["result"]}
    assert got == {"error": "1", "info": "1", "unknown": "1", "warn": "2"}


async def test_categorized_labels_put_detected_level_in_structured_metadata(client: httpx.AsyncClient) -> None:
    data = await _push_and_query(client, '{app="lvl", level="WARNING"}',
                                 **{"X-Loki-Response-Encoding-Flags": "categorize-labels"})
    [stream] = data["result"]
    assert stream["stream"] == {"app": "lvl", "level": "WARNING", "service_name": "lvl"}
    assert stream["values"][0][2] == {"structuredMetadata": {"detected_level": "warn"}}
    assert data["encodingFlags"] == ["categorize-labels"]


async def test_stream_selector_does_not_match_metadata(client: httpx.AsyncClient) -> None:
    # detected_level is structured metadata, not an indexed label: Loki's label APIs do not list it
    await _push_and_query(client, '{app="lvl"}')
    r = await client.get("/loki/api/v1/labels")
    assert "detected_level" not in r.json()["data"]


async def test_discover_log_levels_off(tmp_path: Path) -> None:
    from pitwall.server import create_app

    s = load_settings(data_dir=tmp_path / "off", listen="127.0.0.1:0", storage={"fsync": False},
                      kube={"enabled": False},
                      logs={"limits": {"discover_log_levels": False, "discover_service_name": []}})
    app = create_app(s)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport,
                                                                   base_url="http://localhost") as c:
        data = await _push_and_query(c, '{app="lvl"}')
    assert sorted(tuple(sorted(st["stream"])) for st in data["result"]) == [
        ("app",), ("app", "level"), ("app", "severity_number")]


def test_logfmt_fast_path_agrees_with_the_decoder() -> None:
    """The regex path reads well-formed lines exactly as the byte-wise port of Loki's decoder."""
    import random

    from pitwall.logs.ingest.levels import _logfmt_pairs, _logfmt_pairs_fast

    rng = random.Random(24)
    alphabet = ["a", "b", "=", '"', " ", "\\", "x", "\t", "é", "l", "1"]
    checked = 0
    for _ in range(20_000):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        fast = _logfmt_pairs_fast(line)
        if fast is not None:
            checked += 1
            assert fast == _logfmt_pairs(line.encode()), line
    assert checked > 5_000
    assert _logfmt_pairs_fast('a="x"b=1 c') == [(b"a", b"x"), (b"b", b"1"), (b"c", b"")]
    assert _logfmt_pairs_fast("a=b=c") is None  # a syntax error: the decoder decides
