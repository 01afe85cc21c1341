"""Parser stages (json, logfmt, regexp, pattern, unpack) and their error labels, from Loki's docs."""

from __future__ import annotations

import json

from tests.logs.logql.helpers import labels_of, line_of, one_line, querier, streams

DOC_JSON = json.dumps(
    {
        "protocol": "HTTP/2.0",
        "servers": ["129.0.1.1", "10.2.1.3"],
        "request": {
            "time": "6.032",
            "method": "GET",
            "host": "foo.grafana.net",
            "size": "55",
            "headers": {"Accept": "*/*", "User-Agent": "curl/7.68.0"},
        },
        "response": {"status": 401, "size": "228", "latency_seconds": "6.031"},
    },
    separators=(",", ":"),
)


def test_json_without_parameters_flattens_nested_objects_and_skips_arrays() -> None:
    got = labels_of(one_line(DOC_JSON), '{job="test"} | json')
    assert got == {
        "job": "test",
        "protocol": "HTTP/2.0",
        "request_time": "6.032",
        "request_method": "GET",
        "request_host": "foo.grafana.net",
        "request_size": "55",
        "request_headers_Accept": "*/*",
        "request_headers_User_Agent": "curl/7.68.0",
        "response_status": "401",
        "response_size": "228",
        "response_latency_seconds": "6.031",
    }


def test_json_with_parameters_uses_paths() -> None:
    got = labels_of(
        one_line(DOC_JSON),
        '{job="test"} | json first_server="servers[0]", ua="request.headers[\\"User-Agent\\"]"',
    )
    assert got == {"job": "test", "first_server": "129.0.1.1", "ua": "curl/7.68.0"}


def test_json_parameter_returning_array_and_object_gives_json_text() -> None:
    got = labels_of(
        one_line(DOC_JSON), '{job="test"} | json server_list="servers", headers="request.headers"'
    )
    assert got["server_list"] == '["129.0.1.1","10.2.1.3"]'
    assert got["headers"] == '{"Accept":"*/*","User-Agent":"curl/7.68.0"}'


def test_json_shorthand_parameter_and_missing_path_is_empty() -> None:
    got = labels_of(one_line('{"protocol":"HTTP/2.0","n":1}'), '{job="test"} | json protocol, nope="a.b"')
    assert got == {"job": "test", "protocol": "HTTP/2.0", "nope": ""}


def test_json_numbers_keep_their_source_text_and_bools_null() -> None:
    got = labels_of(one_line('{"a":1.50,"b":1e3,"c":-2,"d":true,"e":null}'), '{job="test"} | json')
    assert got == {"job": "test", "a": "1.50", "b": "1e3", "c": "-2", "d": "true", "e": ""}


def test_json_key_colliding_with_stream_label_gets_extracted_suffix() -> None:
    got = labels_of(one_line('{"job":"inner","x-y":"1","2k":"v"}'), '{job="test"} | json')
    assert got == {"job": "test", "job_extracted": "inner", "x_y": "1", "_2k": "v"}


def test_json_parse_error_sets_error_labels_and_can_be_filtered() -> None:
    q = querier(({"job": "test"}, [(1, "not json"), (2, '{"a":"b"}')]))
    res = streams(q, '{job="test"} | json')
    by_labels = {tuple(sorted(s["stream"].items())): s["values"] for s in res}
    err = [s["stream"] for s in res if "__error__" in s["stream"]]
    assert len(err) == 1 and err[0]["__error__"] == "JSONParserErr" and err[0]["__error_details__"]
    assert (("a", "b"), ("job", "test")) in by_labels
    ok = streams(q, '{job="test"} | json | __error__=""')
    assert [s["stream"] for s in ok] == [{"a": "b", "job": "test"}]
    dropped = streams(q, '{job="test"} | json | __error__!="JSONParserErr"')
    assert [v[1] for s in dropped for v in s["values"]] == ['{"a":"b"}']
    only_err = streams(q, '{job="test"} | json | drop __error__, __error_details__')
    assert {tuple(s["stream"]) for s in only_err} == {("job",), ("a", "job")}


def test_logfmt_doc_example() -> None:
    line = 'at=info method=GET path=/ host=grafana.net fwd="124.133.124.161" service=8ms status=200'
    got = labels_of(one_line(line), '{job="test"} | logfmt')
    assert got == {
        "job": "test",
        "at": "info",
        "method": "GET",
        "path": "/",
        "host": "grafana.net",
        "fwd": "124.133.124.161",
        "service": "8ms",
        "status": "200",
    }


def test_logfmt_with_parameters_renames() -> None:
    line = "at=info method=GET status=200"
    got = labels_of(one_line(line), '{job="test"} | logfmt http_method="method", status')
    assert got == {"job": "test", "http_method": "GET", "status": "200"}


def test_logfmt_keep_empty_and_strict() -> None:
    q = one_line("a=1 standalone b=")
    assert labels_of(q, '{job="test"} | logfmt') == {"job": "test", "a": "1", "b": ""}
    assert labels_of(q, '{job="test"} | logfmt --keep-empty') == {
        "job": "test",
        "a": "1",
        "standalone": "",
        "b": "",
    }
    bad = one_line("a=1 =oops c=3")
    assert labels_of(bad, '{job="test"} | logfmt') == {"job": "test", "a": "1", "c": "3"}
    strict = labels_of(bad, '{job="test"} | logfmt --strict')
    assert strict["__error__"] == "LogfmtParserErr" and "__error_details__" in strict


def test_regexp_doc_example() -> None:
    q = one_line("POST /api/prom/api/v1/query_range (200) 1.5s")
    got = labels_of(
        q,
        '{job="test"} | regexp "(?P<method>\\\\w+) (?P<path>[\\\\w|/]+) \\\\((?P<status>\\\\d+?)\\\\) (?P<duration>.*)"',
    )
    assert got == {
        "job": "test",
        "method": "POST",
        "path": "/api/prom/api/v1/query_range",
        "status": "200",
        "duration": "1.5s",
    }


def test_regexp_go_named_group_syntax_and_no_match() -> None:
    q = one_line("user=alice")
    assert labels_of(q, '{job="test"} | regexp `user=(?<user>\\w+)`')["user"] == "alice"
    assert labels_of(q, '{job="test"} | regexp `nomatch (?P<x>\\d+)`') == {"job": "test"}


NGINX = (
    '0.191.12.2 - - [10/Jun/2021:09:14:29 +0000] "GET /api/plugins/versioncheck HTTP/1.1" 200 2 "-" '
    '"Go-http-client/2.0" "13.76.247.102, 34.120.177.193" "TLSv1.2" "US" ""'
)


def test_pattern_doc_example() -> None:
    got = labels_of(
        one_line(NGINX),
        '{job="test"} | pattern `<ip> - - <_> "<method> <uri> <_>" <status> <size> <_> "<agent>" <_>`',
    )
    assert got == {
        "job": "test",
        "ip": "0.191.12.2",
        "method": "GET",
        "uri": "/api/plugins/versioncheck",
        "status": "200",
        "size": "2",
        "agent": "Go-http-client/2.0",
    }


def test_pattern_requires_leading_literal_and_partial_match_captures_rest() -> None:
    q = one_line("level=info msg=hi")
    assert labels_of(q, '{job="test"} | pattern `x<a>`') == {"job": "test"}
    assert labels_of(q, '{job="test"} | pattern `level=<level> msg=<msg> extra=<e>`') == {
        "job": "test",
        "level": "info",
        "msg": "hi",
    }


def test_unpack_replaces_line_with_entry() -> None:
    q = one_line('{"container":"myapp","pod":"pod-3223f","_entry":"original log message"}')
    res = streams(q, '{job="test"} | unpack')
    assert res == [
        {
            "stream": {"container": "myapp", "job": "test", "pod": "pod-3223f"},
            "values": [["1000000000", "original log message"]],
        }
    ]


def test_line_filter_after_unpack_sees_new_line() -> None:
    q = one_line('{"_entry":"hello world","a":"b"}')
    assert line_of(q, '{job="test"} | unpack |= "hello"') == "hello world"
    assert streams(q, '{job="test"} | unpack |= "_entry"') == []


def test_structured_metadata_is_a_label() -> None:
    from pitwall.logs.memory import InMemoryLogQuerier
    from pitwall.logs.model import LogEntry, PushStream

    q = InMemoryLogQuerier(
        [
            PushStream(
                (("job", "test"),),
                [LogEntry(1_000_000_000, "a", (("trace_id", "abc"),)), LogEntry(2_000_000_000, "b")],
            )
        ]
    )
    res = streams(q, '{job="test"} | trace_id="abc"')
    assert res == [{"stream": {"job": "test", "trace_id": "abc"}, "values": [["1000000000", "a"]]}]
    from pitwall.logs.logql import LogQLEngine

    data = LogQLEngine().query_range(q, '{job="test"}', 0, 10**10, 10**9).to_loki_data(categorize_labels=True)
    assert data["result"] == [
        {
            "stream": {"job": "test"},
            "values": [["2000000000", "b"], ["1000000000", "a", {"structuredMetadata": {"trace_id": "abc"}}]],
        }
    ]
