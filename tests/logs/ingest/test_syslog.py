"""Syslog: RFC 5424 / RFC 3164 parsing, TCP framings and UDP, against pitwall's listener directly."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pitwall.config import load_settings
from pitwall.logs.ingest.syslog import parse_syslog
from tests.conftest import LiveServer, free_port

NOW = 1_700_000_000 * 10**9


def test_rfc5424_with_structured_data() -> None:
    m = parse_syslog('<165>1 2023-11-14T22:13:20.5Z web01 shop 4242 ID47 [ex@32473 iut="3" ev="a\\"b"][x y="1"] '
                     "\ufeffpayment failed", NOW)
    assert (m.facility, m.severity, m.host, m.app) == ("local4", "notice", "web01", "shop")
    assert m.ts_ns == 1_700_000_000_500_000_000
    assert m.line == "payment failed"
    assert dict(m.metadata) == {"pid": "4242", "msgid": "ID47", "sd_ex_32473_iut": "3", "sd_ex_32473_ev": 'a"b',
                                "sd_x_y": "1"}


def test_rfc5424_nil_values() -> None:
    m = parse_syslog("<14>1 - - - - - - just text", NOW, peer="10.0.0.1")
    assert (m.ts_ns, m.host, m.app, m.line, m.metadata) == (NOW, "10.0.0.1", "", "just text", ())


def test_rfc3164() -> None:
    m = parse_syslog("<34>Nov 14 22:13:20 mymachine su[99]: 'su root' failed", NOW)
    assert (m.facility, m.severity, m.host, m.app, m.line) == ("auth", "crit", "mymachine", "su", "'su root' failed")
    assert dict(m.metadata) == {"pid": "99"}
    nohost = parse_syslog("<13>Nov 14 22:13:20 cron: tick", NOW, peer="p")
    assert (nohost.host, nohost.app, nohost.line) == ("p", "cron", "tick")
    bare = parse_syslog("no header at all", NOW, peer="p")
    assert (bare.severity, bare.line, bare.ts_ns) == ("notice", "no header at all", NOW)


@pytest.fixture
def syslog_server(tmp_path: Path) -> Iterator[tuple[LiveServer, int]]:
    port = free_port()
    s = load_settings(data_dir=tmp_path / "d", listen="127.0.0.1:0", storage={"fsync": False},
                      logs={"syslog": {"enabled": True, "listen": f"127.0.0.1:{port}", "batch_wait_ms": 20}})
    srv = LiveServer(s)
    srv.start()
    yield srv, port
    srv.stop()


def wait_lines(url: str, expr: str, want: int, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        r = httpx.get(url + "/loki/api/v1/query_range", params={"query": expr, "limit": "1000",
                                                                 "start": str(time.time_ns() - 86400 * 10**9)})
        assert r.status_code == 200, r.text
        lines = sorted(v[1] for s in r.json()["data"]["result"] for v in s["values"])
        if len(lines) >= want:
            return lines
        time.sleep(0.2)
    return lines


def test_tcp_framings_and_udp(syslog_server: tuple[LiveServer, int]) -> None:
    srv, port = syslog_server
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode()
    bsd = time.strftime("%b %d %H:%M:%S").encode()
    msg1 = b"<14>1 " + stamp + b" h1 app1 - - - octet one"
    msg2 = "<14>1 - h1 app1 - - - octet two, ünïcode".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"%d %s%d %s" % (len(msg1), msg1, len(msg2), msg2))
        s.sendall(b"<13>%s h2 app2: newline one\n<13>%s h2 app2: newline two\n" % (bsd, bsd))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.sendto(b"<11>1 - h3 app3 - - - over udp", ("127.0.0.1", port))
    got = wait_lines(srv.url, '{job="syslog"}', 5)
    assert got == ["newline one", "newline two", "octet one", "octet two, ünïcode", "over udp"]
    r = httpx.get(srv.url + "/loki/api/v1/series", params={"match[]": '{app="app3"}'})
    assert r.json()["data"] == [{"app": "app3", "facility": "user", "host": "h3", "job": "syslog",
                                 "service_name": "app3", "severity": "err"}]


def test_oversized_frame_closes_only_that_connection(syslog_server: tuple[LiveServer, int]) -> None:
    srv, port = syslog_server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"99999999 x")
        assert s.recv(10) == b""  # the server hung up
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"<13>1 - h a - - - still fine\n")
    assert wait_lines(srv.url, '{job="syslog"}', 1) == ["still fine"]
