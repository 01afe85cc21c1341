"""Debian's rsyslog as the real client: omfwd (RFC 5424 octet-counted TCP, RFC 3164 newline TCP, UDP)
to pitwall's syslog listener, and omelasticsearch (bulk mode) to pitwall's ``_bulk`` endpoint.

rsyslogd runs in the foreground with its own config, work directory and pid
file in a temp dir; the system's rsyslog is never touched.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pitwall.config import load_settings
from tests.conftest import LiveServer, free_port
from tests.logs.ingest.test_syslog import wait_lines

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
OMES = Path("/usr/lib/x86_64-linux-gnu/rsyslog/omelasticsearch.so")

pytestmark = [pytest.mark.peer, pytest.mark.slow,
              pytest.mark.skipif(not Path(RSYSLOGD).exists(), reason="rsyslog is not installed")]

CONF = """
global(workDirectory="{work}")
module(load="imtcp")
{es_module}
input(type="imtcp" address="127.0.0.1" port="{in_port}" ruleset="fwd")
template(name="es" type="list" option.jsonf="on") {{
  property(outname="@timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="host" name="hostname" format="jsonf")
  property(outname="app" name="programname" format="jsonf")
  property(outname="message" name="msg" format="jsonf")
}}
ruleset(name="fwd") {{
  if $msg contains "via-octet" then
    action(type="omfwd" target="127.0.0.1" port="{sys_port}" protocol="tcp" TCP_Framing="octet-counted"
           template="RSYSLOG_SyslogProtocol23Format")
  if $msg contains "via-newline" then
    action(type="omfwd" target="127.0.0.1" port="{sys_port}" protocol="tcp"
           template="RSYSLOG_TraditionalForwardFormat")
  if $msg contains "via-udp" then
    action(type="omfwd" target="127.0.0.1" port="{sys_port}" protocol="udp"
           template="RSYSLOG_SyslogProtocol23Format")
  {es_action}
}}
"""

ES_ACTION = """if $msg contains "via-es" then
    action(type="omelasticsearch" server="127.0.0.1" serverport="{http_port}" template="es"
           searchIndex="rsyslog-idx" bulkmode="on" errorFile="{work}/es-errors.json")"""


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[tuple[LiveServer, int]]:
    sys_port, in_port = free_port(), free_port()
    srv = LiveServer(load_settings(
        data_dir=tmp_path / "d", listen="127.0.0.1:0", storage={"fsync": False},
        logs={"syslog": {"enabled": True, "listen": f"127.0.0.1:{sys_port}", "batch_wait_ms": 20},
              "elasticsearch": {"label_fields": ["host", "app"]}}))
    srv.start()
    work = tmp_path / "rsyslog"
    work.mkdir()
    have_es = OMES.exists()
    conf = CONF.format(work=work, in_port=in_port, sys_port=sys_port,
                       es_module='module(load="omelasticsearch")' if have_es else "",
                       es_action=ES_ACTION.format(http_port=srv.port, work=work) if have_es else "")
    (work / "rsyslog.conf").write_text(conf)
    errlog = open(work / "stderr.log", "wb")  # noqa: SIM115 - closed in finally, after rsyslogd exits
    proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(work / "rsyslog.conf"), "-i", str(work / "rsyslogd.pid")],
                            stdout=subprocess.DEVNULL, stderr=errlog)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", in_port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"rsyslogd did not start: {(work / 'stderr.log').read_text()[-2000:]}")
                time.sleep(0.1)
        yield srv, in_port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        errlog.close()
        srv.stop()


def _send(port: int, lines: list[str]) -> None:
    stamp = time.strftime("%b %d %H:%M:%S")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for ln in lines:
            s.sendall(f"<14>{stamp} peerhost myapp[77]: {ln}\n".encode())


def test_rsyslog_forwards_syslog_over_every_framing(rsyslog: tuple[LiveServer, int]) -> None:
    srv, port = rsyslog
    _send(port, ["via-octet one", "via-newline two", "via-udp three", "via-octet four"])
    # rsyslog's %msg% keeps the space after "tag:", and pitwall stores the MSG part as sent.
    got = sorted(x.strip() for x in wait_lines(srv.url, '{job="syslog", app="myapp"}', 4))
    assert got == ["via-newline two", "via-octet four", "via-octet one", "via-udp three"]
    r = httpx.get(srv.url + "/loki/api/v1/series", params={"match[]": '{job="syslog"}'})
    assert {s["host"] for s in r.json()["data"]} == {"peerhost"}
    r = httpx.get(srv.url + "/loki/api/v1/query_range",
                  params={"query": '{job="syslog"} |= "via-octet one"',
                          "start": str(time.time_ns() - 3600 * 10**9)},
                  headers={"X-Loki-Response-Encoding-Flags": "categorize-labels"})
    assert r.status_code == 200


@pytest.mark.skipif(not OMES.exists(), reason="rsyslog-elasticsearch is not installed")
def test_rsyslog_omelasticsearch_bulk(rsyslog: tuple[LiveServer, int]) -> None:
    srv, port = rsyslog
    _send(port, [f"via-es doc {i}" for i in range(20)])
    got = wait_lines(srv.url, '{job="elasticsearch", index="rsyslog-idx"}', 20)
    docs = [json.loads(x) for x in got]
    assert sorted(d["message"].strip() for d in docs) == sorted(f"via-es doc {i}" for i in range(20))
    assert {d["app"] for d in docs} == {"myapp"}
    r = httpx.get(srv.url + "/loki/api/v1/label/app/values", params={"query": '{job="elasticsearch"}'})
    assert r.json()["data"] == ["myapp"]
