"""Syslog intake: RFC 5424 and RFC 3164 over TCP (octet-counted or newline framing) and UDP.

A ``Component``: ``start`` opens the listeners, ``stop`` closes them and
stores what is still batched. Messages are batched (``batch_size`` or
``batch_wait_ms``) and pushed through the ``LogIngester``, so they pass the
same limits and reach the WAL like any push. TCP readers wait when the batch
queue is full (backpressure); UDP datagrams beyond it are dropped and counted.

Streams: the configured static labels plus ``host``, ``app``, ``facility``
and ``severity``; the line is the message text; ``pid``, ``msgid`` and
RFC 5424 structured data (``sd_<id>_<param>``) are structured metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from pitwall.core.listen import split_listen
from pitwall.logs.errors import InvalidLabels
from pitwall.logs.ingest.distributor import LogIngester
from pitwall.logs.labels import canonical, sanitize_name
from pitwall.logs.model import EntryColumns, Labels, Metadata
from pitwall.logs.settings import SyslogSettings

log = logging.getLogger(__name__)

FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
              "ftp", "ntp", "security", "console", "solaris-cron", "local0", "local1", "local2", "local3",
              "local4", "local5", "local6", "local7")
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
_MONTHS = {m: i + 1 for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"))}
_RFC3164 = re.compile(r"([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d{2}):(\d{2}):(\d{2}) ")
_TAG = re.compile(r"([^\s:\[]{1,48})(?:\[([^\]]{1,128})\])?:? ?")
_SD_PARAM = re.compile(r'\s*([^\s=\]"]+)="((?:[^"\\]|\\.)*)"')


@dataclass
class SyslogMessage:
    ts_ns: int
    facility: str
    severity: str
    host: str
    app: str
    line: str
    metadata: Metadata


def _nil(v: str) -> str:
    return "" if v == "-" else v


def _pri(text: str) -> tuple[int, str]:
    if text.startswith("<"):
        end = text.find(">", 1, 5)
        if end > 1 and text[1:end].isascii() and text[1:end].isdigit():  # isdigit alone passes "²"
            pri = int(text[1:end])
            if pri <= 191:
                return pri, text[end + 1 :]
    return 13, text  # user.notice, as RFC 3164 section 4.3.3 says for a missing PRI


def parse_syslog(text: str, now_ns: int, peer: str = "") -> SyslogMessage:
    """Parse one RFC 5424 or RFC 3164 message; anything unparsable becomes the whole line."""
    text = text.rstrip("\r\n\x00")
    pri, rest = _pri(text)
    fac, sev = FACILITIES[min(pri >> 3, 23)], SEVERITIES[pri & 7]
    if rest.startswith("1 "):
        msg = _parse_5424(rest[2:], now_ns)
        if msg is not None:
            ts, host, app, md, line = msg
            return SyslogMessage(ts, fac, sev, host or peer, app, line, md)
    ts, host, app, md, line = _parse_3164(rest, now_ns, peer)
    return SyslogMessage(ts, fac, sev, host, app, line, md)


def _parse_5424(rest: str, now_ns: int) -> tuple[int, str, str, Metadata, str] | None:
    parts = rest.split(" ", 5)
    if len(parts) < 6:
        if len(parts) == 5:
            parts.append("-")
        else:
            return None
    stamp, host, app, procid, msgid, tail = parts
    ts = now_ns
    if stamp != "-":
        try:
            dt = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return None
        ts = int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000
        if not -(1 << 63) <= ts < 1 << 63:  # beyond int64 nanoseconds (before 1677, after 2262): receive time
            ts = now_ns
    md: dict[str, str] = {}
    if _nil(procid):
        md["pid"] = procid
    if _nil(msgid):
        md["msgid"] = msgid
    line = _parse_sd(tail, md)
    if line.startswith("\ufeff"):
        line = line[1:]
    return ts, _nil(host), _nil(app), tuple(sorted(md.items())), line


def _parse_sd(tail: str, md: dict[str, str]) -> str:
    """Structured data into ``md``; returns the MSG part."""
    if tail.startswith("-"):
        return tail[2:] if tail.startswith("- ") else tail[1:]
    pos = 0
    while pos < len(tail) and tail[pos] == "[":
        end_id = pos + 1
        while end_id < len(tail) and tail[end_id] not in " ]":
            end_id += 1
        sd_id = tail[pos + 1 : end_id]
        p = end_id
        while True:
            m = _SD_PARAM.match(tail, p)
            if m is None:
                break
            value = re.sub(r"\\([\"\\\]])", r"\1", m.group(2))
            md[f"sd_{sanitize_name(sd_id)}_{sanitize_name(m.group(1))}"] = value
            p = m.end()
        close = tail.find("]", p)
        if close < 0:
            return tail
        pos = close + 1
    return tail[pos + 1 :] if tail[pos : pos + 1] == " " else tail[pos:]


def _parse_3164(rest: str, now_ns: int, peer: str) -> tuple[int, str, str, Metadata, str]:
    ts = now_ns
    host = peer
    m = _RFC3164.match(rest)
    if m is not None:
        ts = _bsd_time(m, now_ns)
        rest = rest[m.end() :]
        head, sep, tail = rest.partition(" ")
        # A hostname has no colon or bracket; otherwise the sender left it out and this is the tag.
        if sep and head and not head.endswith(":") and "[" not in head:
            host, rest = head, tail
    md: dict[str, str] = {}
    app = ""
    t = _TAG.match(rest)
    if t is not None and ":" in rest[t.start(): t.end()]:
        app = t.group(1)
        if t.group(2):
            md["pid"] = t.group(2)
        rest = rest[t.end() :]
    return ts, host, app, tuple(sorted(md.items())), rest


def _bsd_time(m: re.Match[str], now_ns: int) -> int:
    """An RFC 3164 timestamp (no year, local time): the current year, or last year if that is in the future."""
    now = datetime.fromtimestamp(now_ns / 1e9)
    mon, day, hh, mm, ss = _MONTHS.get(m.group(1), 0), int(m.group(2)), int(m.group(3)), int(m.group(4)), \
        int(m.group(5))
    if not mon:
        return now_ns
    try:
        dt = datetime(now.year, mon, day, hh, mm, ss)
        if (dt - now).total_seconds() > 86400:
            dt = dt.replace(year=now.year - 1)
    except ValueError:
        return now_ns
    return int(dt.timestamp()) * 1_000_000_000


class _Batcher:
    """Collects parsed messages; pushes them through the ingester in batches."""

    def __init__(self, ingester: LogIngester, settings: SyslogSettings) -> None:
        self.ingester = ingester
        self.settings = settings
        self.static = dict(settings.labels)
        self.pending: list[SyslogMessage] = []
        self.capacity = settings.batch_size * 10
        self.space = asyncio.Event()
        self.space.set()
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self.dropped = 0
        self.received = 0

    def add(self, msg: SyslogMessage) -> bool:
        if len(self.pending) >= self.capacity:
            self.dropped += 1
            return False
        self.pending.append(msg)
        self.received += 1
        if len(self.pending) >= self.capacity:
            self.space.clear()
        if len(self.pending) >= self.settings.batch_size:
            self.flush_soon(0)
        elif self._timer is None:
            self.flush_soon(self.settings.batch_wait_ms / 1000)
        return True

    def flush_soon(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(delay, self._spawn_flush)

    def _spawn_flush(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self.flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def flush(self) -> None:
        batch, self.pending = self.pending, []
        self.space.set()
        if not batch:
            return
        try:
            await self.ingester.push(self.settings.tenant, self._columns(batch), raise_on_reject=False)
        except Exception:
            log.exception("syslog batch refused", extra={"messages": len(batch)})

    def _columns(self, batch: list[SyslogMessage]) -> EntryColumns:
        streams: dict[Labels, int] = {}
        idx = []
        for m in batch:
            lbl = dict(self.static)
            lbl.update(host=m.host[:256], app=m.app[:256], facility=m.facility, severity=m.severity)
            try:
                key = canonical(lbl)
            except InvalidLabels:
                key = canonical(self.static)
            idx.append(streams.setdefault(key, len(streams)))
        mds: list[Metadata] = [m.metadata for m in batch]
        return EntryColumns(
            streams=list(streams),
            stream_idx=np.array(idx, dtype=np.int64),
            ts=np.array([m.ts_ns for m in batch], dtype=np.int64),
            lines=[m.line for m in batch],
            metadata=mds if any(mds) else None,
        )

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.flush()
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: SyslogServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        s = self.server
        if len(data) > s.settings.max_message_bytes:
            data = data[: s.settings.max_message_bytes]
        s.batcher.add(parse_syslog(data.decode("utf-8", "replace"), time.time_ns(), addr[0]))


class SyslogServer:
    """TCP and UDP syslog listeners on ``settings.listen``."""

    name = "syslog"

    def __init__(self, ingester: LogIngester, settings: SyslogSettings) -> None:
        self.ingester = ingester
        self.settings = settings
        self.host, self.port = split_listen(settings.listen)
        self._tcp: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._batcher: _Batcher | None = None

    @property
    def batcher(self) -> _Batcher:
        assert self._batcher is not None, "start() not called"
        return self._batcher

    async def start(self) -> None:
        self._batcher = _Batcher(self.ingester, self.settings)
        loop = asyncio.get_running_loop()
        if self.settings.tcp:
            self._tcp = await asyncio.start_server(self._serve, self.host, self.port,
                                                   limit=self.settings.max_message_bytes + 64)
            if self.port == 0:
                self.port = self._tcp.sockets[0].getsockname()[1]
        if self.settings.udp:
            transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self),
                                                               local_addr=(self.host, self.port))
            self._udp = transport
        log.info("syslog listening", extra={"host": self.host, "port": self.port})

    async def stop(self) -> None:
        if self._tcp is not None:
            self._tcp.close()
        if self._udp is not None:
            self._udp.close()
        for t in list(self._conns):
            t.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        if self._tcp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 5)
        if self._batcher is not None:
            await self._batcher.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._conns) >= self.settings.max_connections or task is None:
            writer.close()
            return
        self._conns.add(task)
        peer = writer.get_extra_info("peername")
        peer_host = peer[0] if isinstance(peer, tuple) else ""
        try:
            while True:
                raw = await self._read_frame(reader)
                if raw is None:
                    break
                if not raw.strip():
                    continue
                await self.batcher.space.wait()
                self.batcher.add(parse_syslog(raw.decode("utf-8", "replace"), time.time_ns(), peer_host))
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as e:
            log.warning("syslog connection closed", extra={"peer": peer_host, "error": str(e)})
        finally:
            self._conns.discard(task)
            writer.close()

    async def _read_frame(self, reader: asyncio.StreamReader) -> bytes | None:
        """One message: RFC 6587 octet counting (``LEN SP MSG``) or newline-terminated."""
        first = await reader.read(1)
        if not first:
            return None
        if first.isdigit():
            try:
                digits = first + await reader.readuntil(b" ")
            except asyncio.LimitOverrunError as e:
                raise ValueError("syslog frame length not followed by a space within max_message_bytes") from e
            n = int(digits[:-1])
            if n > self.settings.max_message_bytes:
                raise ValueError(f"syslog frame of {n} bytes exceeds max_message_bytes")
            return await reader.readexactly(n)
        try:
            rest = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            rest = e.partial
        except asyncio.LimitOverrunError as e:
            raise ValueError("syslog line exceeds max_message_bytes") from e
        return first + rest
