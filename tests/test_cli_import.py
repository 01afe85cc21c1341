"""`pitwall import metrics` against a live server: backfill a file, read it back through the query API."""

from __future__ import annotations

import gzip
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from pitwall.cli import _backfill
from pitwall.cli.main import app
from pitwall.config import load_settings
from tests.conftest import LiveServer
from tests.peers import need_prometheus

pytestmark = pytest.mark.timeout(120)

STEP = 15
POINTS = 2 * 3600 // STEP + 1  # 2 h of history at 15 s
START = (int(time.time()) // 3600 - 3) * 3600  # whole hours, 3 h ago: every sample is older than "now"
BUCKETS = ("0.1", "1", "+Inf")


def _ts(i: int) -> float:
    return START + i * STEP + 0.25  # float seconds: .25 is exact in binary, 250 ms on the server


def openmetrics_file() -> str:
    """Counters, a gauge and a histogram; 2 h at 15 s; family by family, each in time order."""
    out = ["# HELP http_requests Requests served.", "# TYPE http_requests counter"]
    for i in range(POINTS):
        out.append(f'http_requests_total{{code="200"}} {i * 10} {_ts(i)}')
        out.append(f'http_requests_total{{code="500"}} {i} {_ts(i)}')
    out += ["# TYPE temperature_celsius gauge", "# UNIT temperature_celsius celsius"]
    out += [f"temperature_celsius {20 + (i % 7) * 0.5} {_ts(i)}" for i in range(POINTS)]
    out += ["# TYPE request_duration_seconds histogram"]
    for i in range(POINTS):
        for n, le in enumerate(BUCKETS):
            ex = f' # {{trace_id="abc{i}"}} 0.05 {_ts(i)}' if n == 0 and i == 10 else ""
            out.append(f'request_duration_seconds_bucket{{le="{le}"}} {i * (n + 1)} {_ts(i)}{ex}')
        out.append(f"request_duration_seconds_sum {i * 0.75} {_ts(i)}")
        out.append(f"request_duration_seconds_count {i * 3} {_ts(i)}")
    return "\n".join(out) + "\n# EOF\n"


SAMPLES = POINTS * (2 + 1 + len(BUCKETS) + 2)


@pytest.fixture
def om_file(tmp_path: Path) -> Path:
    p = tmp_path / "history.om"
    p.write_text(openmetrics_file())
    return p


def _import(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(app, ["import", "metrics", *args], input=input)


def _range(srv: LiveServer, query: str, tenant: str | None = None) -> list[dict[str, Any]]:
    r = httpx.get(srv.url + "/api/v1/query_range", params={
        "query": query, "start": _ts(0), "end": _ts(POINTS - 1), "step": STEP},
        headers={"X-Scope-OrgID": tenant} if tenant else {})
    assert r.status_code == 200, r.text
    result: list[dict[str, Any]] = r.json()["data"]["result"]
    return result


def _values(srv: LiveServer, query: str, tenant: str | None = None) -> list[float]:
    (series,) = _range(srv, query, tenant)
    return [float(v) for _, v in series["values"]]


def _stored(srv: LiveServer, metric: str) -> int:
    """How many samples of ``metric`` the server holds in the history's 2 h (counted at its end, not "now":
    the module's START is fixed at collection, which may be long before this test runs in a whole suite)."""
    r = httpx.get(srv.url + "/api/v1/query", params={"query": f"count_over_time({metric}[3h])",
                                                     "time": START + POINTS * STEP})
    result = r.json()["data"]["result"]
    return int(result[0]["value"][1]) if result else 0


def test_import_then_query_back_exact_values(live_server: LiveServer, om_file: Path) -> None:
    out = _import(str(om_file), "--server", live_server.url, "--batch", "1000", "--progress")
    assert out.exit_code == 0, out.output + out.stderr
    assert f"imported: 8 series, {SAMPLES} samples" in out.stdout
    assert "0 refused" in out.stdout
    first = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(START))
    assert f"{first}.250Z .. " in out.stdout
    assert "samples/s" in out.stderr and "\r" in out.stderr  # the progress line was drawn
    assert _values(live_server, 'http_requests_total{code="200"}') == [i * 10 for i in range(POINTS)]
    assert _values(live_server, 'http_requests_total{code="500"}') == list(range(POINTS))
    assert _stored(live_server, "temperature_celsius") == POINTS
    assert _values(live_server, "temperature_celsius") == [20 + (i % 7) * 0.5 for i in range(POINTS)]
    assert _values(live_server, 'request_duration_seconds_bucket{le="1"}') == [i * 2 for i in range(POINTS)]
    assert _values(live_server, "request_duration_seconds_sum") == [i * 0.75 for i in range(POINTS)]
    # A query over the history: once a full minute is stored, the rate of the 200s is 10 per 15 s.
    rates = _values(live_server, 'rate(http_requests_total{code="200"}[1m])')  # none at the first point
    assert len(rates) == POINTS - 1 and all(abs(v - 10 / 15) < 1e-9 for v in rates[4:])
    r = httpx.get(live_server.url + "/api/v1/query_exemplars", params={
        "query": "request_duration_seconds_bucket", "start": _ts(0), "end": _ts(POINTS - 1)})
    (ex_series,) = r.json()["data"]
    assert ex_series["exemplars"] == [{"labels": {"trace_id": "abc10"}, "value": "0.05", "timestamp": _ts(10)}]
    # The # TYPE / # HELP / # UNIT lines went along as remote-write metadata.
    md = httpx.get(live_server.url + "/api/v1/metadata", params={"metric": "temperature_celsius"}).json()["data"]
    assert md["temperature_celsius"][0]["type"] == "gauge"


def test_no_progress_line_unless_asked(live_server: LiveServer, om_file: Path) -> None:
    out = _import(str(om_file), "--server", live_server.url)  # stderr is no terminal here
    assert out.exit_code == 0, out.output
    assert out.stderr == ""
    assert _values(live_server, "temperature_celsius")[:2] == [20.0, 20.5]


def test_prometheus_text_with_ms_timestamps_and_gzip_and_labels(live_server: LiveServer, tmp_path: Path) -> None:
    t0 = START * 1000
    text = "# TYPE jobs gauge\n" + "".join(f'jobs{{q="a"}} {i} {t0 + i * 15_000}\n' for i in range(10))
    p = tmp_path / "h.prom.gz"
    p.write_bytes(gzip.compress(text.encode()))
    out = _import(str(p), "--server", live_server.url, "--label", "backfill=2024", "--label", "q=b")
    assert out.exit_code == 0, out.output
    assert "1 series, 10 samples" in out.stdout
    (series,) = _range(live_server, "jobs")
    assert series["metric"] == {"__name__": "jobs", "backfill": "2024", "q": "b"}
    assert [float(v) for _, v in series["values"]][:10] == list(range(10))
    assert _stored(live_server, "jobs") == 10


def test_stdin_is_openmetrics(live_server: LiveServer) -> None:
    body = f"up 1 {_ts(0)}\nup 0 {_ts(1)}\n# EOF\n"
    out = _import("-", "--server", live_server.url, input=body)
    assert out.exit_code == 0, out.output
    assert _values(live_server, "up")[:2] == [1.0, 0.0]


def test_label_cannot_set_metric_name(om_file: Path) -> None:
    out = _import(str(om_file), "--dry-run", "--label", "__name__=x")
    assert out.exit_code == 2 and "__name__" in out.stderr


def test_tenant_lands_in_that_tenant_only(live_server: LiveServer, om_file: Path) -> None:
    out = _import(str(om_file), "--server", live_server.url, "--tenant", "team-a")
    assert out.exit_code == 0, out.output
    assert len(_values(live_server, "temperature_celsius", tenant="team-a")) == POINTS
    assert _range(live_server, "temperature_celsius") == []
    assert _range(live_server, "temperature_celsius", tenant="team-b") == []


def test_dry_run_sends_nothing(live_server: LiveServer, om_file: Path) -> None:
    out = _import(str(om_file), "--server", live_server.url, "--dry-run")
    assert out.exit_code == 0, out.output
    assert f"parsed (dry run, nothing sent): 8 series, {SAMPLES} samples" in out.stdout
    assert _range(live_server, "temperature_celsius") == []


def test_parse_error_names_the_line_and_what_was_sent(live_server: LiveServer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_backfill, "CHUNK_LINES", 2)
    lines = [f"good {i} {_ts(i)}" for i in range(6)] + ['bad{x="1" 3 ' + "y" * 300] + ["# EOF"]
    p = tmp_path / "bad.om"
    p.write_text("\n".join(lines) + "\n")
    out = _import(str(p), "--server", live_server.url, "--batch", "2")
    assert out.exit_code == 1
    assert "line 7: " in out.stderr and 'bad{x="1" 3 yyy' in out.stderr
    assert "y" * 201 not in out.stderr  # the line is quoted up to 200 characters
    assert "import aborted: 6 samples were already sent" in out.stderr
    assert _stored(live_server, "good") == 6


def test_unreadable_input_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cut = tmp_path / "cut.om.gz"
    cut.write_bytes(gzip.compress(openmetrics_file().encode())[:2000])
    out = _import(str(cut), "--dry-run")
    assert out.exit_code != 0 and "cannot read" in out.stderr
    out = _import(str(cut), "--dry-run", "--format", "openmetrics")  # no look at the end first: fails mid-way
    assert out.exit_code == 1 and "cannot read" in out.stderr and "import aborted" in out.stderr
    monkeypatch.setattr(_backfill, "MAX_LINE", 64)
    long = tmp_path / "long.om"
    long.write_text(f"a 1 {_ts(0)}\n" + f'a{{x="{"x" * 100}"}} 1 {_ts(0)}\n# EOF\n')
    out = _import(str(long), "--dry-run")
    assert out.exit_code == 1 and "line 2: longer than 64 bytes" in out.stderr
    assert _import(str(tmp_path / "absent.om"), "--dry-run").exit_code == 2
    latin = tmp_path / "latin.om"
    latin.write_bytes(f"a 1 {_ts(0)}\n".encode() + b'a{x="\xe9"} 1 1\n# EOF\n')
    out = _import(str(latin), "--dry-run")
    assert out.exit_code == 1 and "line 2: invalid UTF-8 (invalid continuation byte) at byte 6" in out.stderr
    after = tmp_path / "after.om"
    after.write_text(f"a 1 {_ts(0)}\n# EOF\na 2 {_ts(1)}\n")
    out = _import(str(after), "--dry-run", "--format", "openmetrics")
    assert out.exit_code == 1 and "line 3: unexpected data after # EOF (line 2)" in out.stderr
    out = _import(str(after), "--dry-run")  # not ending '# EOF': read as text, where seconds are no timestamp
    assert out.exit_code == 1 and "line 1: invalid timestamp" in out.stderr and "read as Prometheus text" in out.stderr


def test_sample_without_timestamp_is_refused_as_promtool_does(live_server: LiveServer, tmp_path: Path) -> None:
    p = tmp_path / "nots.om"
    p.write_text(f'a 1 {_ts(0)}\nb{{x="1"}} 2\n# EOF\n')
    out = _import(str(p), "--server", live_server.url)
    assert out.exit_code == 1
    assert 'line 2: expected timestamp for series b{x="1"}, got none' in out.stderr
    assert _stored(live_server, "a") == 0  # the batch holding the error was not sent


def test_old_samples_are_refused_and_counted(live_server: LiveServer, tmp_path: Path) -> None:
    new = tmp_path / "new.om"
    new.write_text(f"x 1 {_ts(10)}\n# EOF\n")
    assert _import(str(new), "--server", live_server.url).exit_code == 0
    old = tmp_path / "old.om"
    old.write_text(f"x 0 {_ts(0)}\ny 5 {_ts(0)}\nz 6 {_ts(0)}\n# EOF\n")
    out = _import(str(old), "--server", live_server.url)
    assert out.exit_code == 1
    assert "3 series, 2 samples" in out.stdout and "1 refused" in out.stdout
    assert "1 samples refused; first: out of order sample for series x" in out.stderr
    assert _values(live_server, "y")[0] == 5.0 and _values(live_server, "z")[0] == 6.0


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[LiveServer]:
    s = load_settings(data_dir=tmp_path / "small", listen="127.0.0.1:0", storage={"fsync": False},
                      kube={"enabled": False}, limits={"max_request_bytes": 300, "max_label_value_length": 20})
    srv = LiveServer(s)
    srv.start()
    yield srv
    srv.stop()


def test_413_and_400_from_the_server_are_reported(small_server: LiveServer, tmp_path: Path) -> None:
    big = tmp_path / "big.om"
    big.write_text("".join(f"m {i} {_ts(i)}\n" for i in range(200)) + "# EOF\n")
    out = _import(str(big), "--server", small_server.url)
    assert out.exit_code == 1
    assert "HTTP 413" in out.stderr and "exceeds the limit" in out.stderr
    long = tmp_path / "long.om"
    long.write_text(f'm{{v="{"v" * 40}"}} 1 {_ts(0)}\n# EOF\n')
    out = _import(str(long), "--server", small_server.url)
    assert out.exit_code == 1
    assert "HTTP 400" in out.stderr and "longer than 20" in out.stderr


def test_retries_429_and_5xx_then_gives_up(tmp_path: Path) -> None:
    answers = iter([429, 503, 204])
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        code = next(answers, 503)
        seen.append(code)
        return httpx.Response(code, text="overloaded", headers={"Retry-After": "1"})

    p = tmp_path / "a.om"
    p.write_text(f"a 1 {_ts(0)}\n# EOF\n")
    slept: list[float] = []
    imp = _backfill.Importer("openmetrics", url="http://x", headers={}, batch=10, extra=(), dry_run=False,
                             sleep=slept.append, client=httpx.Client(transport=httpx.MockTransport(handler)))
    with _backfill.Reader(str(p)) as reader:
        imp.run(reader)
    assert seen == [429, 503, 204] and imp.stats.samples_sent == 1
    assert slept == [1.0, 2.0]  # doubling, never shorter than Retry-After
    imp = _backfill.Importer("openmetrics", url="http://x", headers={}, batch=10, extra=(), dry_run=False,
                             sleep=slept.append, client=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(_backfill.BackfillError, match="HTTP 503: overloaded"), _backfill.Reader(str(p)) as reader:
        imp.run(reader)
    assert len(seen) == 3 + _backfill.RETRIES


@pytest.mark.slow
def test_promtool_and_pitwall_accept_and_refuse_the_same_files(om_file: Path, tmp_path: Path) -> None:
    need_prometheus()
    bad = tmp_path / "nots.om"
    bad.write_text(f"a 1 {_ts(0)}\nb 2\n# EOF\n")
    for path, ok in ((om_file, True), (bad, False)):
        blocks = tmp_path / f"blocks-{path.stem}"
        blocks.mkdir()
        promtool = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(path), str(blocks)],
                                  capture_output=True, text=True, timeout=100)
        ours = _import(str(path), "--dry-run")
        assert (promtool.returncode == 0) is ok, promtool.stderr
        assert (ours.exit_code == 0) is ok, ours.output
        if not ok:
            assert "expected timestamp for series" in promtool.stderr + promtool.stdout
            assert "expected timestamp for series" in ours.stderr
