"""Container output: a bounded in-memory buffer per container run (for ``kubectl logs``) and a shipper
that writes every line to pitwall's log store in batches.

Stream labels as Loki's Kubernetes discovery names them: ``namespace``,
``pod``, ``container``, ``app`` (the pod's ``app`` or
``app.kubernetes.io/name`` label), ``job`` = ``<namespace>/<app>``, plus
``stream`` (stdout/stderr) and ``node``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from pitwall.core.labels import Labels, labels_from_dict
from pitwall.logs import LogAppender, LogEntry, PushStream

__all__ = ["LogBuffer", "LogShipper", "stream_labels"]

log = logging.getLogger(__name__)


class LogBuffer:
    """The lines of one container run, newest kept (``max_lines``, ``max_bytes``); followers wake on append."""

    def __init__(self, max_lines: int = 10_000, max_bytes: int = 4 << 20) -> None:
        self.lines: deque[tuple[int, int, str]] = deque()  # (seq, ts_ns, line)
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self.bytes = 0
        self.seq = 0
        self.closed = False
        self._changed = asyncio.Event()

    def append(self, ts_ns: int, line: str) -> None:
        self.seq += 1
        self.lines.append((self.seq, ts_ns, line))
        self.bytes += len(line) + 1
        while self.lines and (len(self.lines) > self.max_lines or self.bytes > self.max_bytes):
            self.bytes -= len(self.lines.popleft()[2]) + 1
        self._wake()

    def close(self) -> None:
        """The run ended: followers stop after the last line."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        ev, self._changed = self._changed, asyncio.Event()
        ev.set()

    def after(self, seq: int) -> list[tuple[int, int, str]]:
        return [e for e in self.lines if e[0] > seq]

    async def wait(self, timeout: float) -> None:
        ev = self._changed
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ev.wait(), timeout)


def stream_labels(pod: dict[str, Any], container: str, stream: str, node: str) -> Labels:
    m = pod.get("metadata") or {}
    lbl = m.get("labels") or {}
    app = str(lbl.get("app") or lbl.get("app.kubernetes.io/name") or m.get("name", ""))
    ns = str(m.get("namespace", ""))
    return labels_from_dict({"namespace": ns, "pod": str(m.get("name", "")), "container": container, "app": app,
                             "job": f"{ns}/{app}", "stream": stream, "node": node})


class LogShipper:
    """Collects lines and pushes them to a ``LogAppender`` every ``flush_s`` or ``max_batch`` lines."""

    def __init__(self, appender: LogAppender | None, *, tenant: str = "default", flush_s: float = 1.0,
                 max_batch: int = 5000, max_pending: int = 100_000) -> None:
        self.appender = appender
        self.tenant = tenant
        self.flush_s = flush_s
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._pending: dict[Labels, list[LogEntry]] = {}
        self._last_ts: dict[Labels, int] = {}
        self._count = 0
        self.dropped = 0
        self.pushed = 0
        self._full = asyncio.Event()

    def add(self, labels: Labels, ts_ns: int, line: str) -> None:
        if self.appender is None:
            return
        if self._count >= self.max_pending:
            self.dropped += 1
            return
        ts_ns = max(ts_ns, self._last_ts.get(labels, 0) + 1)  # one stream's entries in order
        self._last_ts[labels] = ts_ns
        self._pending.setdefault(labels, []).append(LogEntry(ts_ns, line))
        self._count += 1
        if self._count >= self.max_batch:
            self._full.set()

    async def flush(self) -> None:
        if not self._pending or self.appender is None:
            return
        batch, self._pending, n = self._pending, {}, self._count
        self._count = 0
        streams = [PushStream(lbl, ents) for lbl, ents in batch.items()]
        try:
            await self.appender.push(self.tenant, streams)
            self.pushed += n
        except Exception as e:  # the store refused or is overloaded: the lines stay in kubectl logs
            self.dropped += n
            log.warning("node: pushing %d log lines failed: %s", n, e)

    async def run(self) -> None:
        """Flush loop (a supervised task); flushes what is left when cancelled."""
        try:
            while True:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.flush_s)
                self._full.clear()
                await self.flush()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush())


def now_ns() -> int:
    return time.time_ns()
