"""backends.logs on a second pitwall playing the remote Loki: pitwall forwards every line, reads through it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cramjam
import httpx
import pytest

from pitwall.config import load_settings
from pitwall.core.errors import ConfigError, ExecutionError
from pitwall.core.labels import Matcher
from pitwall.logs.ingest.loki_push import LabelCache, decode_protobuf
from pitwall.logs.model import Direction, LineFilter, LineFilterOp
from pitwall.logs.remote_backend import RemoteLogSource, encode_push, logql_of
from pitwall.storage.logs_store import SCHEMA
from tests.backends.logpeer import PitwallPeer, wait_for
from tests.conftest import LiveServer

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def loki(tmp_path: Path) -> Iterator[PitwallPeer]:
    peer = PitwallPeer(tmp_path / "remote")
    yield peer
    peer.stop()


def _server(tmp_path: Path, loki: PitwallPeer, **extra: Any) -> LiveServer:
    s = load_settings(data_dir=tmp_path / "pw", listen="127.0.0.1:0", storage={"fsync": False},
                      kube={"enabled": False},
                      backends={"logs": {"type": "loki-api", "push_url": loki.url + "/loki/api/v1/push",
                                         "query_url": loki.url, "timeout": "5s"}}, **extra)
    srv = LiveServer(s)
    srv.start()
    return srv


def test_settings_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"backends\.logs\.query_url"):
        load_settings(backends={"logs": {"push_url": "http://a/loki/api/v1/push", "query_url": "loki:3100"}})
    with pytest.raises(ConfigError, match=r"backends\.logs\.push_url"):
        load_settings(backends={"logs": {"query_url": "http://a"}})
    with pytest.raises(ConfigError, match=r"backends\.logs\.type"):
        load_settings(backends={"logs": {"type": "elasticsearch", "push_url": "http://a/p", "query_url": "http://a"}})


def test_push_encoding_round_trips() -> None:
    import pyarrow as pa

    batch = pa.RecordBatch.from_arrays([
        pa.array([0, 1, 0], pa.int64()), pa.array([5, 1_700_000_000_123_456_789, 7], pa.int64()),
        pa.array(["a", "b", "c"]), pa.array([None, '[["trace_id","abc"]]', None]),
        pa.nulls(3, pa.string()), pa.nulls(3, pa.string())], schema=SCHEMA)
    labels = {0: (("app", "x"),), 1: (("app", "y"), ("env", 'q"t'))}
    body, n = encode_push(labels.__getitem__, [batch])
    cols = decode_protobuf(bytes(cramjam.snappy.decompress_raw(body)), LabelCache())
    assert n == 3 and cols.streams == [(("app", "x"),), (("app", "y"), ("env", 'q"t'))]
    assert cols.ts.tolist() == [5, 7, 1_700_000_000_123_456_789] and cols.lines == ["a", "c", "b"]
    assert cols.metadata == [(), (), (("trace_id", "abc"),)]


def test_logql_of_quotes_filters() -> None:
    ms = [Matcher.of("=", "app", 'a"b'), Matcher.of("=~", "env", "p.*")]
    fs = [LineFilter(LineFilterOp.CONTAINS, "x`y"), LineFilter(LineFilterOp.NOT_REGEX, r"\d+")]
    assert logql_of(ms, fs) == '{app="a\\"b", env=~"p.*"} |= "x`y" !~ `\\d+`'


def test_remote_querier_pages_by_time_and_skips_ties() -> None:
    """Entries at a page's last timestamp are not returned twice; 503 names the engine when it is down."""
    entries = [(t, f"l{t}-{k}") for t in range(10) for k in range(2)]  # two entries per timestamp

    def engine(req: httpx.Request) -> httpx.Response:
        p = req.url.params
        assert req.headers["X-Scope-OrgID"] == "t1" and req.headers["X-Loki-Response-Encoding-Flags"]
        lo, hi, lim = int(p["start"]), int(p["end"]), int(p["limit"])
        got = [e for e in entries if lo <= e[0] < hi][:lim]
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "streams", "result": [
            {"stream": {"app": "x"}, "values": [[str(t), line, {"structuredMetadata": {"k": "v"}}]
                                                for t, line in got]}]}})

    import pitwall.logs.remote_backend as rb

    src = RemoteLogSource("http://e:1", {}, 5, transport=httpx.MockTransport(engine))
    old, rb.PAGE = rb.PAGE, 3
    try:
        (st,) = src.querier("t1").select([Matcher.of("=", "app", "x")], 0, 10, direction=Direction.FORWARD)
        batch = src.querier("t1").scan([Matcher.of("=", "app", "x")], 0, 10, with_metadata=True)
        old_cap, rb.MAX_SCAN_ENTRIES = rb.MAX_SCAN_ENTRIES, 4
        try:
            with pytest.raises(ExecutionError, match="more than 4 matching entries"):
                src.querier("t1").scan([Matcher.of("=", "app", "x")], 0, 10)
        finally:
            rb.MAX_SCAN_ENTRIES = old_cap
    finally:
        rb.PAGE = old
    assert st.lines == [line for _, line in entries] and st.ts_ns.tolist() == [t for t, _ in entries]
    assert batch.lines == st.lines and batch.metadata == [(("k", "v"),)] * 20

    def down(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    gone = RemoteLogSource("http://e:1", {}, 5, transport=httpx.MockTransport(down))
    with pytest.raises(Exception, match="logs backend loki-api at http://e:1 is down: connection refused"):
        gone.querier("default").label_names(0, 1)


def _answer(r: httpx.Response) -> Any:
    """What an answer says, without its timing statistics (two runs of one query never take equal time)."""
    body = r.json()
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        return {k: v for k, v in body["data"].items() if k != "stats"}
    return body.get("data", body) if isinstance(body, dict) else body


def _push(url: str, streams: list[dict[str, Any]]) -> None:
    r = httpx.post(url + "/loki/api/v1/push", json={"streams": streams}, timeout=30)
    assert r.status_code == 204, r.text


@pytest.mark.slow
def test_lines_reach_the_remote_and_reads_answer_as_the_remote(tmp_path: Path, loki: PitwallPeer) -> None:
    rules = tmp_path / "logs.yml"
    rules.write_text("groups: [{name: g, interval: 200ms, rules: [{alert: RemoteErrors, "
                     "expr: 'sum by (app) (count_over_time({app=\"engine-only\"} |= \"error\" [5m])) > 1'}]}]\n")
    srv = _server(tmp_path, loki, rules={"logql_rule_files": [str(rules)]})
    try:
        now = time.time_ns()
        streams = [{"stream": {"app": app, "env": "prod"},
                    "values": [[str(now - (60 - i) * 10**9), f"{app} request {i} status={200 + (i % 3) * 100}",
                                {"trace_id": f"t{i}"}] for i in range(60)]} for app in ("api", "db")]
        _push(srv.url, streams)
        # OTLP logs go the same way (every ingest path writes the WAL the queue reads).
        otlp = {"resourceLogs": [{"resource": {"attributes": [{"key": "service.name",
                                                               "value": {"stringValue": "checkout"}}]},
                                  "scopeLogs": [{"logRecords": [{"timeUnixNano": str(now - 10**9),
                                                                 "body": {"stringValue": "otlp line"}}]}]}]}
        assert httpx.post(srv.url + "/v1/logs", json=otlp).status_code == 200
        q = {"query": '{env="prod"}', "start": str(now - 120 * 10**9), "end": str(now), "limit": "1000"}
        wait_for(lambda: sum(len(s["values"]) for s in loki.get("/loki/api/v1/query_range", **q).json()[
            "data"]["result"]) == 120)
        wait_for(lambda: loki.get("/loki/api/v1/query_range", query='{service_name="checkout"}',
                                  start=str(now - 60 * 10**9)).json()["data"]["result"])
        rng = {"start": str(now - 120 * 10**9), "end": str(now)}
        cases = [
            ("/loki/api/v1/query_range", {**q, "query": '{app="api"} |= "status=300"'}),
            ("/loki/api/v1/query_range", {**rng, "query": 'sum by (app) (count_over_time({env="prod"}[30s]))',
                                          "step": "15"}),
            ("/loki/api/v1/query", {"query": 'sum(count_over_time({env="prod"} |~ "status=(2|4)00" [5m]))',
                                    "time": str(now)}),
            ("/loki/api/v1/labels", rng),
            ("/loki/api/v1/label/app/values", rng),
            ("/loki/api/v1/series", {**rng, "match[]": '{env="prod"}'}),
            ("/loki/api/v1/index/stats", {**rng, "query": '{env="prod"}'}),
        ]
        for path, params in cases:
            via = httpx.get(srv.url + path, params=params, timeout=30)
            direct = loki.get(path, **params)
            assert via.status_code == direct.status_code == 200, (path, via.text)
            assert _answer(via) == _answer(direct), path
            assert _answer(via), path  # not two empty answers
        # The in-process logs interface (ruler, UI, incidents) reads the engine: pitwall's LogQL engine over it
        # gives what the engine itself answers.
        parts = srv.app.state.components.logs
        res = parts.engine.query_instant(parts.deps.reads.querier("default"),
                                         'sum by (app) (count_over_time({env="prod"} |= "status=400" [5m]))',
                                         now, limit=100, direction=Direction.BACKWARD)
        mine = {s["metric"]["app"]: s["value"][1] for s in res.to_loki_data()["result"]}
        direct = loki.get("/loki/api/v1/query", query='sum by (app) (count_over_time({env="prod"} |= '
                          '"status=400" [5m]))', time=str(now)).json()["data"]["result"]
        assert mine == {s["metric"]["app"]: s["value"][1] for s in direct} == {"api": "20", "db": "20"}
        got = parts.deps.reads.querier("default").by_trace_id("t7", now - 120 * 10**9, now, 10)
        assert sorted(line for st in got for line in st.lines) == ["api request 7 status=300",
                                                                   "db request 7 status=300"]
        # Lines only the engine has (pushed to it directly) fire a LogQL rule in the first pitwall.
        _push(loki.url, [{"stream": {"app": "engine-only"},
                          "values": [[str(time.time_ns() - k * 10**9), f"error {k}"] for k in range(3)]}])

        def firing() -> list[Any]:
            alerts = httpx.get(srv.url + "/api/v1/alerts").json()["data"]["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == "RemoteErrors" and a["state"] == "firing"]

        assert wait_for(firing)[0]["labels"]["app"] == "engine-only"
        # ...and they are visible through the first pitwall's Loki API, though its own store never saw them.
        r = httpx.get(srv.url + "/loki/api/v1/query_range", params={"query": '{app="engine-only"}'}).json()
        assert sorted(v[1] for v in r["data"]["result"][0]["values"]) == ["error 0", "error 1", "error 2"]
        # The UI's logs explorer reads the engine too.
        page = httpx.get(srv.url + "/logs", params={"query": '{app="engine-only"} |~ "error [12]"'})
        assert page.status_code == 200 and "error 1" in page.text and "error 2" in page.text
        assert "error 0" not in page.text
    finally:
        srv.stop()


@pytest.mark.slow
def test_remote_down_under_load_loses_nothing_acknowledged(tmp_path: Path, loki: PitwallPeer) -> None:
    # A small head flushes to blocks often: the WAL segments the queue has not passed must stay.
    srv = _server(tmp_path, loki, logs={"head_max_bytes": 4096})
    acked: list[int] = []
    stop = threading.Event()
    t0 = time.time_ns() - 600 * 10**9

    def load() -> None:
        with httpx.Client(timeout=10) as c:
            i = 0
            while not stop.is_set():
                body = {"streams": [{"stream": {"job": "load", "w": str(i % 4)},
                                     "values": [[str(t0 + i * 1_000_000), f"req={i} " + "x" * 200]]}]}
                try:
                    if c.post(srv.url + "/loki/api/v1/push", json=body).status_code == 204:
                        acked.append(i)
                except httpx.HTTPError:
                    pass
                i += 1
                time.sleep(0.01)

    writer = threading.Thread(target=load)
    writer.start()
    try:
        wait_for(lambda: len(acked) > 20)
        loki.stop()
        # Reads answer 503 naming the engine (Loki's plain-text errors); /-/ready says which backend is down.
        r = httpx.get(srv.url + "/loki/api/v1/query_range", params={"query": '{job="load"}'})
        assert r.status_code == 503 and "logs backend loki-api at http://127.0.0.1:" in r.text
        ready = wait_for(lambda: (x := httpx.get(srv.url + "/-/ready")).status_code == 503 and x.text)
        assert "logs backend loki-api" in ready
        n_before = len(acked)
        time.sleep(15)  # the engine is down 15+ s while pushes go on
        assert len(acked) > n_before + 50  # pitwall kept acknowledging from its own WAL
        assert len(list((tmp_path / "pw" / "wal" / "logs").glob("*.wal"))) > 2  # flushed, every segment kept
        loki.start()
    finally:
        stop.set()
        writer.join()
    want = set(acked)
    q = {"query": '{job="load"}', "start": str(t0 - 10**9), "end": str(t0 + 600 * 10**9), "limit": "5000",
         "direction": "forward"}

    def missing() -> set[int]:
        res = loki.get("/loki/api/v1/query_range", **q).json()["data"]["result"]
        return want - {int(v[1].split()[0].removeprefix("req=")) for s in res for v in s["values"]}

    try:
        wait_for(lambda: not missing() or None, timeout=90) if missing() else None
        assert not missing()
        wait_for(lambda: httpx.get(srv.url + "/-/ready").status_code == 200)
    finally:
        srv.stop()


async def test_queue_moves_only_on_ack_and_survives_a_flush(tmp_path: Path) -> None:
    """The position persists after a 2xx only; 5xx retries, another 4xx drops; flushed segments stay for it."""
    from pitwall.logs.model import LogEntry, PushStream
    from pitwall.logs.remote_backend import LokiForwarder
    from pitwall.storage.duckdb import TelemetryDB
    from pitwall.storage.logs_store import LogStore

    answers = [500, 204, 400]
    got: list[httpx.Request] = []

    def engine(req: httpx.Request) -> httpx.Response:
        got.append(req)
        return httpx.Response(answers.pop(0))

    store = LogStore(TelemetryDB(tmp_path / "t.duckdb"), tmp_path / "wal", fsync=False)
    fw = LokiForwarder(store.wal, store.labels_of, "http://e:1/loki/api/v1/push", {"X-Team": "a"}, 5, 1000,
                       transport=httpx.MockTransport(engine))
    store.wal_keep = fw.keep_from
    await store.start()
    await fw.start()
    await fw.tasks.stop()  # drive it step by step instead of the loop
    try:
        await store.push("t1", [PushStream((("app", "x"),), [LogEntry(10, "a"), LogEntry(11, "b")])])
        await store.flush()  # the head goes to blocks; the queue has not passed the segment: it stays
        assert store.wal.segments()[0] == 1
        with pytest.raises(httpx.HTTPStatusError):
            await fw.step()
        assert fw.pos == (1, 0) and not fw.pos_file.exists()  # nothing acked: nothing moves
        assert await fw.step()
        req = got[-1]
        assert req.headers["X-Scope-OrgID"] == "t1" and req.headers["X-Team"] == "a"
        cols = decode_protobuf(bytes(cramjam.snappy.decompress_raw(req.content)), LabelCache())
        assert cols.streams == [(("app", "x"),)] and cols.lines == ["a", "b"] and fw.sent == 2
        assert fw.pos_file.exists() and fw.pos > (1, 0)
        await store.push("t1", [PushStream((("app", "x"),), [LogEntry(12, "c")])])
        assert await fw.step() and fw.dropped == 1  # a 400: dropped, the queue moves on
        assert not await fw.step()
        again = LokiForwarder(store.wal, store.labels_of, "http://e:1/loki/api/v1/push", {}, 5, 1000)
        assert again.pos == fw.pos
    finally:
        await fw.stop()
        await store.stop()


@pytest.mark.slow
def test_kill_9_with_the_remote_down_loses_nothing_acknowledged(tmp_path: Path, loki: PitwallPeer) -> None:
    """The logs queue's position and the WAL segments it has not passed survive kill -9 of pitwall."""
    import signal

    import yaml

    from tests.conftest import free_port, start_pitwall_process, wait_ready
    from tests.crash import Stop, kill_under_load

    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text(yaml.safe_dump({"kube": {"enabled": False}, "otlp_grpc": {"enabled": False},
                                   "logs": {"head_max_bytes": 4096}, "backends": {"logs": {
                                       "type": "loki-api", "push_url": loki.url + "/loki/api/v1/push",
                                       "query_url": loki.url}}}))
    port, data = free_port(), tmp_path / "data"
    proc = start_pitwall_process(data, port, config=cfg)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc=proc, timeout=90)
    t0 = time.time_ns() - 600 * 10**9
    clients = [httpx.Client(timeout=5) for _ in range(4)]

    def send(w: int, n: int) -> str | None:
        rid = f"{w}-{n}"
        body = {"streams": [{"stream": {"job": "crash", "w": str(w)},
                             "values": [[str(t0 + n * 1000), f"req={rid}"]]}]}
        try:
            r = clients[w].post(url + "/loki/api/v1/push", json=body)
        except httpx.HTTPError:
            raise Stop from None
        if n == 50 and w == 0:
            loki.stop()  # the rest queues up in pitwall's WAL
        return rid if r.status_code == 204 else None

    acked = kill_under_load(proc, send, want=400, within_s=60)
    for c in clients:
        c.close()
    loki.start()
    proc = start_pitwall_process(data, port, config=cfg)
    q = {"query": '{job="crash"}', "start": str(t0 - 10**9), "end": str(t0 + 10**9), "limit": "5000",
         "direction": "forward"}
    try:
        wait_ready(url, proc=proc, timeout=90)

        def missing() -> set[str]:
            res = loki.get("/loki/api/v1/query_range", **q).json()["data"]["result"]
            return acked - {v[1].removeprefix("req=") for s in res for v in s["values"]}

        wait_for(lambda: not missing() or None, timeout=90)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
