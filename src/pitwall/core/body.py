"""Request bodies read within limits: the one reader behind every endpoint that takes a body.

``read_body(request, limits, budget)`` is an async context manager that

- refuses a declared ``Content-Length`` over ``limits.max_bytes`` (413) before
  reading a byte;
- reserves in-flight bytes (``core.limits.InflightBudget``) before reading:
  the declared length, or step by step while a chunked body streams in; when
  other requests hold the budget, 429 with Retry-After;
- stops reading at ``limits.max_bytes`` (413), so no body is held past its limit;
- releases the reservation when the block exits, once the request is handled.

``Body.decoded()`` undoes ``Content-Encoding`` (gzip, deflate, snappy) within
``limits.max_decoded_bytes`` (413), growing the reservation by the decoded
size. It is thread-safe and meant to run in ``offload``, with the rest of the
CPU-heavy parsing, so the event loop keeps answering (health probes included)
while a large body is decoded.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import zlib
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import parse_qsl

import anyio.to_thread
import cramjam
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from pitwall.core.errors import BadData, BodyTooLarge, UnsupportedMediaType
from pitwall.core.limits import InflightBudget, LimitsSettings, Reservation

__all__ = ["ENCODINGS", "FORM_MAX_BYTES", "Body", "BodyLimits", "decode", "media_type", "offload", "read_body",
           "read_capped", "read_form", "require_media", "snappy_block"]

ENCODINGS = frozenset({"gzip", "x-gzip", "deflate", "snappy"})
_STEP = 1 << 20  # bytes reserved (and inflated) at a time
_INLINE_BYTES = 64 << 10  # a plain body this small decodes faster than a thread hop
_GZIP_WBITS = 16 + zlib.MAX_WBITS

T = TypeVar("T")


@dataclass(frozen=True)
class BodyLimits:
    """Bytes a body may have as sent (``max_bytes``) and once decoded (``max_decoded_bytes``)."""

    max_bytes: int
    max_decoded_bytes: int

    @classmethod
    def of(cls, limits: LimitsSettings) -> BodyLimits:
        return cls(limits.max_request_bytes, limits.max_decompressed_bytes)


class Body:
    """A request body held in memory, with its share of the in-flight budget."""

    def __init__(self, data: bytes, content_encoding: str, limits: BodyLimits, reservation: Reservation) -> None:
        self.data = data
        self.content_encoding = content_encoding
        self.limits = limits
        self.reservation = reservation

    def decoded(self, encodings: Collection[str] = ENCODINGS) -> bytes:
        """The body with its ``Content-Encoding`` undone; an encoding outside ``encodings`` is a 400."""
        enc = self.content_encoding.strip().lower()
        if enc not in ("", "identity") and enc not in encodings:
            raise BadData(f"unsupported Content-Encoding {self.content_encoding!r}")
        return decode(self.data, enc, self.limits.max_decoded_bytes, self.reservation)

    def snappy(self, data: bytes) -> bytes:
        """A snappy block (remote write, Loki's protobuf push) decoded within the limits."""
        return snappy_block(data, self.limits.max_decoded_bytes, self.reservation)

    async def in_thread(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` (decoding this body) in a worker thread; inline when the body is small and plain."""
        if len(self.data) < _INLINE_BYTES and self.content_encoding.strip().lower() in ("", "identity"):
            return fn(*args)
        return await offload(fn, *args)


@contextlib.asynccontextmanager
async def read_body(request: Request, limits: BodyLimits, budget: InflightBudget) -> AsyncIterator[Body]:
    """The request body, read within ``limits`` while holding its bytes in ``budget``."""
    limit = limits.max_bytes
    declared = request.headers.get("content-length")
    length = int(declared) if declared is not None and declared.isascii() and declared.isdigit() else None
    if length is not None and length > limit:
        raise BodyTooLarge(f"request body of {length} bytes exceeds the limit of {limit} bytes")
    reservation = budget.reservation()
    try:
        if length is not None:
            reservation.grow(length)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
            if size > reservation.held:
                reservation.grow(max(size - reservation.held, min(_STEP, limit - reservation.held)))
            chunks.append(chunk)
        data = b"".join(chunks)
        del chunks
        yield Body(data, request.headers.get("content-encoding", ""), limits, reservation)
    finally:
        reservation.release()


async def read_capped(request: Request, max_bytes: int, what: str = "body") -> bytes:
    """A small body (a form, a JSON document) whole, refused (413) once past ``max_bytes``, declared or not."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge(f"{what} of {declared} bytes exceeds the limit of {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(f"{what} exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


FORM_MAX_BYTES = 8 << 20  # query forms and UI forms (a pasted dashboard is the largest)


async def read_form(request: Request, max_bytes: int = FORM_MAX_BYTES) -> FormData:
    """An HTML form body (url-encoded or multipart), refused past ``max_bytes`` (413).

    Starlette's ``request.form()`` reads a url-encoded body whole, however long;
    this reads it within the limit first. A multipart body must declare its
    length, and each part is bounded by the same limit.
    """
    media = media_type(request)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge(f"form body of {declared} bytes exceeds the limit of {max_bytes} bytes")
    if media == "multipart/form-data":
        if declared is None:
            raise BodyTooLarge("a multipart form body must declare its Content-Length")
        return await request.form(max_files=16, max_fields=1000, max_part_size=max_bytes)
    text = (await read_capped(request, max_bytes, "form body")).decode("latin-1")
    fields: list[tuple[str, str | UploadFile]] = []
    fields.extend(parse_qsl(text, keep_blank_values=True, max_num_fields=10_000, encoding="utf-8"))
    return FormData(fields)


def decode(data: bytes, encoding: str, max_bytes: int, reservation: Reservation | None = None) -> bytes:
    """``data`` with content coding ``encoding`` undone, refused (413) past ``max_bytes``."""
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return data
    if enc in ("gzip", "x-gzip"):
        return _inflate(data, _GZIP_WBITS, "gzip", max_bytes, reservation)
    if enc == "deflate":
        return _inflate(data, zlib.MAX_WBITS, "deflate", max_bytes, reservation)
    if enc == "snappy":
        return snappy_block(data, max_bytes, reservation)
    raise BadData(f"unsupported Content-Encoding {encoding!r}")


def _inflate(data: bytes, wbits: int, name: str, max_bytes: int, reservation: Reservation | None) -> bytes:
    parts: list[bytes] = []
    size = 0
    buf = data
    while True:  # gzip members one after another, as Go's gzip reader reads them
        d = zlib.decompressobj(wbits)
        while not d.eof:
            try:
                piece = d.decompress(buf, _STEP)
            except zlib.error as e:
                raise BadData(f"invalid {name} body: {e}") from e
            buf = d.unconsumed_tail
            if not piece:
                if not buf:
                    raise BadData(f"invalid {name} body: unexpected end of data")
                continue
            size += len(piece)
            if size > max_bytes:
                raise BodyTooLarge(f"decompressed body exceeds the limit of {max_bytes} bytes")
            if reservation is not None:
                reservation.grow(len(piece))
            parts.append(piece)
        buf = d.unused_data
        if not buf or wbits != _GZIP_WBITS:
            return b"".join(parts)


def snappy_block(data: bytes, max_bytes: int, reservation: Reservation | None = None) -> bytes:
    """A snappy block decoded, refused (413) when its declared length is over ``max_bytes``.

    Zero bytes are not a snappy block (Go's ``snappy.Decode`` says
    ``snappy: corrupt input``, and Prometheus answers 400); ``\\x00`` is the
    block of an empty message.
    """
    if not data:
        raise BadData("snappy: corrupt input")
    try:
        n = cramjam.snappy.decompress_raw_len(data)
    except Exception as e:
        raise BadData(f"snappy: {str(e).removeprefix('snappy: ')}") from e
    if n > max_bytes:
        raise BodyTooLarge(f"decompressed body of {n} bytes exceeds the limit of {max_bytes} bytes")
    if reservation is not None:
        reservation.grow(n)
    try:
        return bytes(cramjam.snappy.decompress_raw(data))
    except Exception as e:
        raise BadData(f"snappy: {str(e).removeprefix('snappy: ')}") from e


def media_type(request: Request) -> str:
    """The request's media type without parameters, lower case (``""`` when none is given)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def require_media(request: Request, allowed: Collection[str], message: Callable[[str], str]) -> str:
    """The media type, or ``UnsupportedMediaType`` (415) worded by ``message(content_type)``."""
    media = media_type(request)
    if media not in allowed:
        raise UnsupportedMediaType(message(request.headers.get("content-type", "")))
    return media


async def offload(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a worker thread: CPU-heavy decoding off the event loop."""
    return await anyio.to_thread.run_sync(_gc_relaxed, fn, *args)


class _GcRelax:
    """A higher gen-0 threshold for the collector while large bodies are decoded.

    Decoders allocate millions of short-lived containers (a list per Loki
    entry, a dict per span); at CPython's default threshold of 700 the
    collector walks them again and again, 40% of a large push's CPU, each
    full pass holding the GIL. Collection still runs, only less often; the
    thresholds come back when the last decode ends. Process-wide, as the
    collector is.
    """

    THRESHOLDS = (50_000, 20, 100)

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.saved: tuple[int, int, int] = gc.get_threshold()

    def __enter__(self) -> None:
        with self.lock:
            if not self.active:
                self.saved = gc.get_threshold()
                gc.set_threshold(*self.THRESHOLDS)
            self.active += 1

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.active -= 1
            if not self.active:
                gc.set_threshold(*self.saved)


_GC_RELAX = _GcRelax()


def _gc_relaxed(fn: Callable[..., T], *args: object) -> T:
    with _GC_RELAX:
        return fn(*args)
