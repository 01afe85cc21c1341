"""Persisted per-block series index: what start-up needs of a block without reading its rows.

Contract: a block's summary is its ``RowRanges`` entries (series, first row,
last row of each stretch, sorted by series) plus, per entry, the time of its
first and last row and the value of its last row: enough to rebuild the row
index and fold the series' time bounds and newest samples into the registry.
The maintenance pass writes one file per sealed block,
``<table>.<generation>.idx``, before the block counts as indexed: it is
written to a temporary name, fsynced and renamed, and ends with a CRC-32 of
everything before it. The generation is bumped (in ``metrics_meta``) each
time a compaction rewrites the table, so a file is trusted only for the
generation it names and for at most the rows the table now has (tables are
otherwise append-only: rows past the file's are a later run, read at open).
Anything else (missing, short, bad checksum, wrong generation) is rebuilt
from the table, with a log line.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pitwall.storage.row_ranges import RowRanges, stretches

__all__ = ["Summary", "load", "path_for", "remove_all", "summarize", "write"]

_MAGIC = b"PWMIDX01"
_HEADER = struct.Struct("<8sqqq")  # magic, generation, rows covered, entries
_CRC = struct.Struct("<I")
# Per entry, in this order: series, first row, last row, first ts, last ts (int64), last value (float64).
_COLUMNS = 6


@dataclass
class Summary:
    """A block's (or a run's) index entries with the time bounds and newest value of each."""

    keys: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    ts_lo: np.ndarray
    ts_hi: np.ndarray
    val_hi: np.ndarray
    rows: int

    def ranges(self) -> RowRanges:
        """The row index these entries make (they are sorted by series, row order within one)."""
        return RowRanges.of_entries(self.keys, self.lo, self.hi, self.rows)


def summarize(sid: np.ndarray, ts: np.ndarray, val: np.ndarray, base: int = 0) -> Summary:
    """The summary of rows ``base``, ``base + 1``... of a table, given in row order."""
    k, lo, hi = stretches(sid, base)
    order = np.argsort(k, kind="stable")
    k, lo, hi = k[order], lo[order], hi[order]
    return Summary(k, lo, hi, ts[lo - base], ts[hi - base], val[hi - base], base + len(sid))


def concat(a: Summary, b: Summary) -> Summary:
    """``a`` followed by the run ``b`` appended after it (entries merged by series, row order kept)."""
    order = np.argsort(np.concatenate([a.keys, b.keys]), kind="stable")

    def cat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.concatenate([x, y])[order]

    return Summary(cat(a.keys, b.keys), cat(a.lo, b.lo), cat(a.hi, b.hi), cat(a.ts_lo, b.ts_lo),
                   cat(a.ts_hi, b.ts_hi), cat(a.val_hi, b.val_hi), b.rows)


def path_for(index_dir: Path, table: str, generation: int) -> Path:
    return index_dir / f"{table}.{generation}.idx"


def write(index_dir: Path, table: str, generation: int, s: Summary) -> Path:
    """Write the summary durably (temporary file, fsync, rename, fsync of the directory)."""
    index_dir.mkdir(parents=True, exist_ok=True)
    n = len(s.keys)
    cols = [np.ascontiguousarray(c, dtype=np.int64) for c in (s.keys, s.lo, s.hi, s.ts_lo, s.ts_hi)]
    body = _HEADER.pack(_MAGIC, generation, s.rows, n) + b"".join(c.tobytes() for c in cols)
    body += np.ascontiguousarray(s.val_hi, dtype=np.float64).tobytes()
    body += _CRC.pack(zlib.crc32(body))
    path = path_for(index_dir, table, generation)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(index_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def load(index_dir: Path, table: str, generation: int, table_rows: int) -> tuple[Summary | None, str]:
    """The stored summary of ``table`` at ``generation``, or None and why it cannot be used."""
    path = path_for(index_dir, table, generation)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, "no index file"
    except OSError as e:
        return None, f"unreadable index file: {e}"
    if len(raw) < _HEADER.size + _CRC.size:
        return None, "index file truncated"
    body, (crc,) = raw[: -_CRC.size], _CRC.unpack(raw[-_CRC.size :])
    if zlib.crc32(body) != crc:
        return None, "index file checksum mismatch"
    magic, gen, rows, n = _HEADER.unpack_from(body)
    if magic != _MAGIC or gen != generation or len(body) != _HEADER.size + n * 8 * _COLUMNS:
        return None, "index file of another format or generation"
    if rows > table_rows:
        return None, f"index file covers {rows} rows, the table has {table_rows}"
    ints = np.frombuffer(body, dtype=np.int64, count=5 * n, offset=_HEADER.size).reshape(5, n)
    val = np.frombuffer(body, dtype=np.float64, count=n, offset=_HEADER.size + 5 * n * 8)
    # Copies: the arrays outlive the bytes object and RowRanges may grow them.
    return Summary(ints[0].copy(), ints[1].copy(), ints[2].copy(), ints[3].copy(), ints[4].copy(),
                   val.copy(), int(rows)), ""


def remove_all(index_dir: Path | None, table: str, keep: int | None = None) -> None:
    """Delete ``table``'s index files (all generations but ``keep``)."""
    if index_dir is None or not index_dir.is_dir():
        return
    for p in index_dir.glob(f"{table}.*"):
        if keep is None or p.name != path_for(index_dir, table, keep).name:
            p.unlink(missing_ok=True)
