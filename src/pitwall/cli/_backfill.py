"""The engine of ``pitwall import metrics``: stream a timestamped exposition file into remote-write batches.

Imported only when the command runs (it needs numpy through the exposition
parser). The file is read in blocks of whole lines, parsed in chunks by the
scraper's own parser (``metrics.ingest.exposition``), samples are grouped per
series into batches of ``batch`` samples and each batch is sent as one
Prometheus remote-write 1.0 request. Memory holds one block of lines, one
batch, the label cache and a hash per series seen (for the count), never the
file.
"""

from __future__ import annotations

import gzip
import io
import itertools
import re
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import cramjam
import httpx

from pitwall.metrics.ingest import prompb
from pitwall.metrics.ingest.exposition import (
    Exposition,
    ExpositionError,
    parse_openmetrics,
    parse_series,
    parse_text,
)

__all__ = ["BackfillError", "Importer", "Reader", "Stats", "detect_format", "parse_labels"]

Format = Literal["openmetrics", "text"]
Labels = tuple[tuple[str, str], ...]

MAX_LINE = 1 << 20  # bytes; a longer line is refused, not buffered
CHUNK_LINES = 4096  # lines handed to the parser at once
BLOCK = 1 << 20  # bytes read at once
NL = b"\n"
LABEL_CACHE = 200_000  # raw series texts remembered (cleared when full)
RETRIES = 5
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_OOO = ("out of order sample", "duplicate sample for timestamp")
_TYPE_CODES = {v: k for k, v in prompb.METRIC_TYPES.items()}


class BackfillError(Exception):
    """The import cannot go on; ``str()`` is the message for the user."""


class ReadError(BackfillError):
    """The input itself cannot be read (I/O, gzip, UTF-8, an overlong line)."""


def parse_labels(pairs: list[str]) -> Labels:
    """``--label k=v`` options -> sorted pairs; ``__name__`` and invalid names are refused."""
    out: dict[str, str] = {}
    for p in pairs:
        name, sep, value = p.partition("=")
        if not sep:
            raise BackfillError(f"--label {p!r}: expected NAME=VALUE")
        if name == "__name__":
            raise BackfillError("--label cannot set __name__ (it would rename every metric)")
        if _LABEL_NAME.fullmatch(name) is None:
            raise BackfillError(f"--label {p!r}: invalid label name {name!r}")
        out[name] = value
    return tuple(sorted(out.items()))


class Reader:
    """Blocks of lines of a file, ``-`` (stdin) or a ``.gz`` file, and how many bytes of it were read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.size: int | None = None
        if path == "-":
            self._raw: BinaryIO = sys.stdin.buffer
        else:
            self._raw = open(path, "rb")  # noqa: SIM115 - closed in close()
            self.size = Path(path).stat().st_size
        self._stream: BinaryIO | gzip.GzipFile = gzip.GzipFile(fileobj=self._raw) if path.endswith(".gz") else self._raw
        self._consumed = 0  # for stdin: bytes read (no size, no fraction)

    @property
    def bytes_read(self) -> int:
        """Bytes of the input consumed (compressed bytes for a ``.gz`` file)."""
        if self.size is not None:
            try:
                return min(self._raw.tell(), self.size)
            except (OSError, ValueError):
                return self._consumed
        return self._consumed

    def blocks(self) -> Iterator[tuple[int, list[str]]]:
        """(number of the first line, whole lines without newlines), about ``BLOCK`` bytes at a time.

        A line over ``MAX_LINE`` bytes, invalid UTF-8 or a corrupt ``.gz`` is a ``ReadError`` naming the line.
        """
        n = 1
        rest = b""
        while True:
            try:
                data = self._stream.read(BLOCK)
            except (OSError, EOFError, zlib.error) as e:  # a corrupt or truncated .gz
                raise ReadError(f"line {n}: cannot read {self.path}: {e}") from None
            if not data:
                if rest:
                    yield n, [_decode(rest, n)]
                return
            self._consumed += len(data)
            data = rest + data
            cut = data.rfind(b"\n")
            rest = data[cut + 1:]
            if len(rest) > MAX_LINE:
                raise ReadError(f"line {n + data.count(NL)}: longer than {MAX_LINE} bytes")
            if cut < 0:
                continue
            whole = data[:cut]
            raw_lines = whole.split(b"\n")
            if max(map(len, raw_lines)) > MAX_LINE:
                i = next(i for i, ln in enumerate(raw_lines) if len(ln) > MAX_LINE)
                raise ReadError(f"line {n + i}: longer than {MAX_LINE} bytes")
            lines = _decode(whole, n).split("\n")
            yield n, lines
            n += len(lines)

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._raw is not sys.stdin.buffer:
            self._stream.close()
            self._raw.close()


def detect_format(path: str) -> Format:
    """OpenMetrics when the input's last line is ``# EOF`` (promtool's format), else Prometheus text.

    stdin cannot be looked at twice: it is read as OpenMetrics, as promtool
    reads every input (``--format text`` says otherwise). A ``.gz`` file is
    decompressed once to its end to see its last line.
    """
    if path == "-":
        return "openmetrics"
    if path.endswith(".gz"):
        tail = b""
        try:
            with gzip.open(path, "rb") as f:
                while block := f.read(1 << 20):
                    tail = (tail + block)[-64:]
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise BackfillError(f"cannot read {path}: {e}") from None
    else:
        with open(path, "rb") as f:
            f.seek(0, io.SEEK_END)
            f.seek(max(f.tell() - 64, 0))
            tail = f.read()
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1] if tail.strip() else b""
    return "openmetrics" if last == b"# EOF" else "text"


@dataclass
class Stats:
    """What was read, sent and refused; the summary line is made of it."""

    samples_read: int = 0
    samples_sent: int = 0
    refused: int = 0
    first_refusal: str = ""
    requests: int = 0
    min_ts: int | None = None
    max_ts: int | None = None
    series: set[int] = field(default_factory=set)  # hashes of the label sets seen

    def saw(self, ts_min: int, ts_max: int) -> None:
        self.min_ts = ts_min if self.min_ts is None else min(self.min_ts, ts_min)
        self.max_ts = ts_max if self.max_ts is None else max(self.max_ts, ts_max)


@dataclass
class _Series:
    """One series' part of a batch: samples (ms, value) and OpenMetrics exemplars (labels, value, ms)."""

    ts: list[int] = field(default_factory=list)
    vals: list[float] = field(default_factory=list)
    exemplars: list[tuple[Labels, float, int]] = field(default_factory=list)

    def in_time_order(self) -> _Series:
        if all(a <= b for a, b in itertools.pairwise(self.ts)):
            return self
        order = sorted(range(len(self.ts)), key=self.ts.__getitem__)
        return _Series([self.ts[i] for i in order], [self.vals[i] for i in order], self.exemplars)


Items = list[tuple[Labels, _Series]]


class Importer:
    """Parses chunks of lines into per-series batches and sends each batch (unless ``dry_run``)."""

    def __init__(self, fmt: Format, *, url: str, headers: dict[str, str], batch: int, extra: Labels,
                 dry_run: bool, on_progress: Callable[[Stats], None] = lambda s: None,
                 sleep: Callable[[float], None] = time.sleep, client: httpx.Client | None = None) -> None:
        self.fmt = fmt
        self.url = url.rstrip("/") + "/api/v1/write"
        self.headers = {**headers, "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                        "X-Prometheus-Remote-Write-Version": "0.1.0", "User-Agent": "pitwall-import"}
        self.batch_size = batch
        self.extra = extra
        self.dry_run = dry_run
        self.stats = Stats()
        self.on_progress = on_progress
        self.sleep = sleep
        self._labels: dict[str, Labels] = {}
        self._batch: dict[Labels, _Series] = {}
        self._pending = 0
        self._metadata: dict[str, tuple[str, str, str]] = {}
        self._client = client or httpx.Client(timeout=120)

    # -- reading ---------------------------------------------------------------------------------------

    def run(self, reader: Reader) -> None:
        """Read everything, sending full batches as they fill, then the last one."""
        try:
            self._read(reader)
        except ReadError as e:
            raise BackfillError(self._aborted(str(e))) from None
        finally:
            self._client.close()

    def _read(self, reader: Reader) -> None:
        """Blocks of lines -> chunks -> batches; ``# EOF`` must end an OpenMetrics input."""
        eof_line = 0
        for start, lines in reader.blocks():
            if eof_line:
                raise BackfillError(self._aborted(f"line {start}: unexpected data after # EOF (line {eof_line})"))
            if self.fmt == "openmetrics" and "# EOF" in lines:
                k = lines.index("# EOF")
                if k != len(lines) - 1:
                    raise BackfillError(self._aborted(
                        f"line {start + k + 1}: unexpected data after # EOF (line {start + k})"))
                eof_line = start + k
                lines = lines[:k]
            for i in range(0, len(lines), CHUNK_LINES):
                self._take(start + i, lines[i:i + CHUNK_LINES])
                self.on_progress(self.stats)
        if self.fmt == "openmetrics" and not eof_line:
            raise BackfillError(self._aborted("data does not end with # EOF"))
        self._flush()
        self.on_progress(self.stats)

    def _aborted(self, why: str) -> str:
        sent = "would have been sent" if self.dry_run else "were already sent"
        return f"{why}; import aborted: {self.stats.samples_sent} samples {sent}"

    def _parse(self, text: str) -> Exposition:
        if self.fmt == "openmetrics":
            return parse_openmetrics(text + "# EOF\n")
        return parse_text(text)

    def _take(self, start: int, chunk: list[str]) -> None:
        """Parse one chunk (its first line is number ``start``) into the batch; a parse error names its line."""
        try:
            exp = self._parse("\n".join(chunk) + "\n")
            labels = [self._labels_of(raw) for raw in exp.series]  # every label set decodes before any is sent
        except ExpositionError:
            raise BackfillError(self._aborted(self._locate(start, chunk))) from None
        if len(exp) and not exp.has_ts.all():
            raise BackfillError(self._aborted(self._missing_ts(start, chunk)))
        for md in exp.metadata:
            self._metadata[md.metric] = (md.type, md.help, md.unit)
        self._add(exp, labels)

    def _locate(self, start: int, chunk: list[str]) -> str:
        """The first line of ``chunk`` the parser refuses on its own, and why."""
        for n, line in enumerate(chunk, start):
            try:
                for raw in self._parse(line + "\n").series:
                    parse_series(raw)
            except ExpositionError as e:
                return f"line {n}: {_clip(str(e))}: {line[:200]}"
        return f"lines {start}-{start + len(chunk) - 1}: cannot be parsed together"

    def _missing_ts(self, start: int, chunk: list[str]) -> str:
        for n, line in enumerate(chunk, start):
            exp = self._parse(line + "\n")
            if len(exp) and not exp.has_ts[0]:
                labels = self._labels_of(exp.series[0])
                name = dict(labels).get("__name__", "")
                inner = ", ".join(f'{k}="{v}"' for k, v in labels if k != "__name__")
                series = f"{name}{{{inner}}}" if inner else name
                return f"line {n}: expected timestamp for series {series}, got none: {line[:200]}"
        return "a sample has no timestamp"

    def _labels_of(self, raw: str) -> Labels:
        """Sorted labels of a raw series text with ``--label`` applied (empty values dropped, as Prometheus)."""
        got = self._labels.get(raw)
        if got is None:
            pairs = dict(parse_series(raw))
            pairs.update(self.extra)
            got = tuple(sorted((k, v) for k, v in pairs.items() if v != ""))
            if len(self._labels) >= LABEL_CACHE:
                self._labels.clear()
            self._labels[raw] = got
        return got

    def _add(self, exp: Exposition, labels_of: list[Labels]) -> None:
        ts_list = exp.timestamps.tolist()
        val_list = exp.values.tolist()
        if ts_list:
            self.stats.saw(min(ts_list), max(ts_list))
        series_seen = self.stats.series
        exemplars = {e.index: e for e in exp.exemplars}
        for i, (labels, t, v) in enumerate(zip(labels_of, ts_list, val_list, strict=True)):
            cols = self._batch.get(labels)
            if cols is None:
                cols = self._batch[labels] = _Series()
                series_seen.add(hash(labels))
            cols.ts.append(t)
            cols.vals.append(v)
            if i in exemplars:  # an exemplar without a timestamp takes its sample's
                ex = exemplars[i]
                cols.exemplars.append((ex.labels, ex.value, t if ex.ts is None else ex.ts))
            self._pending += 1
            if self._pending >= self.batch_size:
                self._flush()
        self.stats.samples_read += len(exp)

    # -- sending ---------------------------------------------------------------------------------------

    def _flush(self) -> None:
        if not self._batch:
            return
        batch, self._batch, self._pending = self._batch, {}, 0
        items = [(labels, part.in_time_order()) for labels, part in batch.items()]
        if self.dry_run:
            self.stats.samples_sent += sum(len(part.ts) for _, part in items)
        else:
            self._send(items, first=True)
            self._metadata.clear()  # sent with this batch

    def _body(self, items: Items, with_metadata: bool) -> bytes:
        w = prompb.WriteRequest()
        for labels, part in items:
            series = w.timeseries.add()
            for k, v in labels:
                lb = series.labels.add()
                lb.name, lb.value = k, v
            for t, val in zip(part.ts, part.vals, strict=True):
                smp = series.samples.add()
                smp.timestamp, smp.value = t, val
            for ex_labels, ex_val, ex_ts in part.exemplars:
                ex = series.exemplars.add(value=ex_val, timestamp=ex_ts)
                for k, v in ex_labels:
                    lb = ex.labels.add()
                    lb.name, lb.value = k, v
        if with_metadata:
            for name, (typ, help_, unit) in self._metadata.items():
                w.metadata.add(type=_TYPE_CODES.get(typ, 0), metric_family_name=name, help=help_, unit=unit)
        return bytes(cramjam.snappy.compress_raw(w.SerializeToString()))

    def _send(self, items: Items, first: bool) -> None:
        """One request; a refused (out-of-order) or too large batch is halved until the refusal is one series."""
        n = sum(len(part.ts) for _, part in items)
        resp = self._post(self._body(items, with_metadata=first))
        if resp.status_code // 100 == 2:
            self.stats.samples_sent += n
            return
        msg = resp.text.strip()[:500]
        splittable = resp.status_code == 413 or (resp.status_code == 400 and msg.startswith(_OOO))
        if splittable and len(items) > 1:
            half = len(items) // 2
            self._send(items[:half], first)
            self._send(items[half:], False)
            return
        if resp.status_code == 400 and msg.startswith(_OOO):
            self.stats.refused += n
            self.stats.first_refusal = self.stats.first_refusal or msg
            return
        raise BackfillError(self._aborted(f"the server refused a batch of {n} samples: "
                                         f"HTTP {resp.status_code}: {msg}"))

    def _post(self, body: bytes) -> httpx.Response:
        """POST with retries on 429/5xx and on connection errors (bounded; backoff, Retry-After honoured)."""
        delay = 0.5
        for attempt in range(1, RETRIES + 1):
            try:
                resp = self._client.post(self.url, content=body, headers=self.headers)
            except httpx.HTTPError as e:
                if attempt == RETRIES:
                    raise BackfillError(self._aborted(f"cannot reach {self.url}: {e}")) from None
            else:
                self.stats.requests += 1
                if resp.status_code != 429 and resp.status_code < 500:
                    return resp
                if attempt == RETRIES:
                    return resp
                delay = max(delay, _retry_after(resp))
            self.sleep(min(delay, 30.0))
            delay *= 2
        raise AssertionError("unreachable")


def _decode(data: bytes, first: int) -> str:
    """UTF-8 text of whole lines; an error names the line (``first`` is the number of the first)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first + data.count(NL, 0, e.start)
        column = e.start - data.rfind(NL, 0, e.start)
        raise ReadError(f"line {line}: invalid UTF-8 ({e.reason}) at byte {column}") from None


def _clip(text: str, n: int = 200) -> str:
    """The parser quotes whole lines in its errors: keep the message short."""
    return text if len(text) <= n else text[:n] + "..."


def _retry_after(resp: httpx.Response) -> float:
    try:
        return float(resp.headers.get("retry-after", "0"))
    except ValueError:
        return 0.0
