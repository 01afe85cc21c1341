"""Write-ahead log with group commit.

Every ingest path appends one record per request and awaits ``append``: it
returns only after the record is written and fsynced. Appends that arrive
while an fsync is running are written together by the next one (group
commit), so many concurrent requests share one fsync.

On disk: numbered segment files ``00000001.wal``...; a record is
``<u32 length><u32 crc32><u8 type><payload>`` with the CRC over type and
payload. Replay stops at the first torn or corrupt record of the last
segment (a crash mid-write), which is then truncated: an unacknowledged
request is either wholly present or wholly absent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<IIB")
MAX_RECORD_BYTES = 1 << 30


class WalCorruption(Exception):
    """A record in a non-final segment failed its checksum."""


@dataclass(frozen=True)
class WalRecord:
    segment: int
    type: int
    payload: bytes


def _segment_name(n: int) -> str:
    return f"{n:08d}.wal"


def encode_record(rtype: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(bytes([rtype])))
    return _HEADER.pack(len(payload), crc, rtype) + payload


class Wal:
    """An append-only, fsynced log in ``directory``; one writer per directory."""

    def __init__(self, directory: Path, *, segment_bytes: int = 128 << 20, fsync: bool = True) -> None:
        self.dir = directory
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.dir.mkdir(parents=True, exist_ok=True)
        self._pending: list[bytes] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._rotate_waiters: list[asyncio.Future[int]] = []
        self._file: int | None = None
        self._segment = 0
        self._size = 0
        self.bytes_written = 0
        self.fsyncs = 0

    # -- reading -----------------------------------------------------------

    def segments(self) -> list[int]:
        out = []
        for p in self.dir.glob("*.wal"):
            try:
                out.append(int(p.stem))
            except ValueError:
                continue
        return sorted(out)

    def replay(self, from_segment: int = 0) -> Iterator[WalRecord]:
        """Yield every intact record of segments >= ``from_segment`` in order.

        A torn tail on the last segment is truncated away; corruption in an
        earlier segment raises ``WalCorruption`` rather than silently
        skipping acknowledged data.
        """
        segs = [s for s in self.segments() if s >= from_segment]
        for i, seg in enumerate(segs):
            last = i == len(segs) - 1
            yield from self._replay_segment(seg, last)

    def _replay_segment(self, seg: int, last: bool) -> Iterator[WalRecord]:
        path = self.dir / _segment_name(seg)
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            bad = pos + _HEADER.size > len(data)
            if not bad:
                length, crc, rtype = _HEADER.unpack_from(data, pos)
                end = pos + _HEADER.size + length
                payload = data[pos + _HEADER.size : end]
                bad = end > len(data) or zlib.crc32(payload, zlib.crc32(bytes([rtype]))) != crc
            if bad:
                if not last:
                    raise WalCorruption(f"corrupt record in WAL segment {path} at offset {pos}")
                log.warning("truncating torn WAL tail", extra={"segment": str(path), "offset": pos})
                with open(path, "r+b") as f:
                    f.truncate(pos)
                return
            yield WalRecord(seg, rtype, payload)
            pos = end

    def read_from(self, segment: int, offset: int, max_bytes: int) -> Iterator[tuple[int, WalRecord]]:
        """Intact records of ``segment`` from ``offset`` within ``max_bytes`` (at least the first
        record), each with the offset after it.

        For a reader following the log while it is written (a forwarding
        queue): it stops at an incomplete or torn record and never truncates.
        """
        path = self.dir / _segment_name(segment)
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(max(max_bytes, _HEADER.size))
                if len(data) >= _HEADER.size:  # the first record whole, however large
                    first = _HEADER.size + _HEADER.unpack_from(data, 0)[0]
                    if len(data) < first <= _HEADER.size + MAX_RECORD_BYTES:  # larger: a torn header
                        data += f.read(first - len(data))
        except FileNotFoundError:
            return
        pos = 0
        while pos + _HEADER.size <= len(data):
            length, crc, rtype = _HEADER.unpack_from(data, pos)
            end = pos + _HEADER.size + length
            payload = data[pos + _HEADER.size : end]
            if end > len(data) or zlib.crc32(payload, zlib.crc32(bytes([rtype]))) != crc:
                return
            pos = end
            yield offset + pos, WalRecord(segment, rtype, payload)

    # -- writing -----------------------------------------------------------

    def open_for_append(self) -> None:
        """Start a fresh segment after the existing ones (call after replay)."""
        segs = self.segments()
        self._open_segment((segs[-1] + 1) if segs else 1)

    def _open_segment(self, n: int) -> None:
        if self._file is not None:
            os.close(self._file)
        path = self.dir / _segment_name(n)
        self._file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._segment = n
        self._size = 0
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        if not self.fsync:
            return
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @property
    def segment(self) -> int:
        return self._segment

    def enqueue(self, rtype: int, payload: bytes) -> asyncio.Future[None]:
        """Queue a record now (keeping call order) and return a future for its fsync.

        Callers apply the record to their in-memory state right after this,
        without awaiting in between, so memory and log agree on order.
        """
        if len(payload) > MAX_RECORD_BYTES:
            raise ValueError("WAL record too large")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(encode_record(rtype, payload))
        self._waiters.append(fut)
        self._kick()
        return fut

    async def append(self, rtype: int, payload: bytes) -> None:
        await self.enqueue(rtype, payload)

    def rotate(self) -> asyncio.Future[int]:
        """Close the current segment after everything queued so far.

        Resolves to the number of the new segment: every record queued before
        this call lies in an earlier segment.
        """
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append(b"")  # marker: rotate here
        self._waiters.append(asyncio.get_running_loop().create_future())
        self._rotate_waiters.append(fut)
        self._kick()
        return fut

    def _kick(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while self._pending:
            batch, waiters = self._pending, self._waiters
            self._pending, self._waiters = [], []
            try:
                rotated = await asyncio.to_thread(self._write_batch, batch)
            except BaseException as e:  # fail every waiter: nothing in this batch is acknowledged
                for w in waiters:
                    if not w.done():
                        w.set_exception(e if isinstance(e, Exception) else RuntimeError(str(e)))
                for rw in self._take_rotate_waiters(batch.count(b"")):
                    rw.set_exception(RuntimeError("WAL write failed"))
                raise
            for w in waiters:
                if not w.done():
                    w.set_result(None)
            for rw, seg in zip(self._take_rotate_waiters(len(rotated)), rotated, strict=True):
                rw.set_result(seg)

    def _take_rotate_waiters(self, n: int) -> list[asyncio.Future[int]]:
        taken, self._rotate_waiters = self._rotate_waiters[:n], self._rotate_waiters[n:]
        return taken

    def _write_batch(self, batch: list[bytes]) -> list[int]:
        """Write records, honouring rotate markers; fsync once. Runs in a thread."""
        rotated: list[int] = []
        buf: list[bytes] = []
        for rec in batch:
            if rec == b"":
                self._write_sync(buf)
                buf = []
                self._open_segment(self._segment + 1)
                rotated.append(self._segment)
                continue
            pending = sum(map(len, buf))
            if self._size + pending > 0 and self._size + pending + len(rec) > self.segment_bytes:
                self._write_sync(buf)
                buf = []
                self._open_segment(self._segment + 1)
            buf.append(rec)
        self._write_sync(buf)
        return rotated

    def _write_sync(self, recs: list[bytes]) -> None:
        if not recs:
            return
        assert self._file is not None, "open_for_append() not called"
        data = b"".join(recs)
        view = memoryview(data)
        while view:
            n = os.write(self._file, view)
            view = view[n:]
        if self.fsync:
            os.fsync(self._file)
            self.fsyncs += 1
        self._size += len(data)
        self.bytes_written += len(data)

    def remove_before(self, segment: int) -> int:
        """Delete segments numbered below ``segment`` (their data is checkpointed)."""
        removed = 0
        for s in self.segments():
            if s < segment and s != self._segment:
                (self.dir / _segment_name(s)).unlink(missing_ok=True)
                removed += 1
        return removed

    async def close(self) -> None:
        if self._flusher is not None:
            await self._flusher
        if self._file is not None:
            os.close(self._file)
            self._file = None
