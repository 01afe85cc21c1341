"""core.body and the in-flight budget: limits while streaming, decoding within limits, 429 when the budget is taken."""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterable
from typing import Any

import cramjam
import pytest
from starlette.requests import Request

from pitwall.core.body import Body, BodyLimits, decode, read_body, snappy_block
from pitwall.core.errors import BadData, BodyTooLarge, Overloaded
from pitwall.core.limits import InflightBudget

LIMITS = BodyLimits(max_bytes=1000, max_decoded_bytes=5000)


class _Stream:
    """An ASGI receive() that hands out ``chunks`` and counts the bytes it handed out."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = iter(chunks)
        self.sent = 0

    async def __call__(self) -> dict[str, Any]:
        c = next(self.chunks, None)
        if c is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        self.sent += len(c)
        return {"type": "http.request", "body": c, "more_body": True}


def _request(stream: _Stream, **headers: str) -> Request:
    raw = [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/", "query_string": b"", "headers": raw}, stream)


async def test_reads_within_the_limit_and_releases_the_budget() -> None:
    budget = InflightBudget(10_000)
    stream = _Stream([b"a" * 300, b"b" * 300])
    async with read_body(_request(stream), LIMITS, budget) as body:
        assert body.data == b"a" * 300 + b"b" * 300
        assert budget.used >= 600
    assert budget.used == 0


async def test_declared_length_over_the_limit_reads_nothing() -> None:
    budget = InflightBudget(10_000)
    stream = _Stream([b"x" * 2000])
    with pytest.raises(BodyTooLarge, match="request body of 2000 bytes exceeds the limit of 1000 bytes"):
        async with read_body(_request(stream, content_length="2000"), LIMITS, budget):
            pass
    assert stream.sent == 0 and budget.used == 0


async def test_a_chunked_body_stops_at_the_limit() -> None:
    budget = InflightBudget(10_000)
    stream = _Stream(b"x" * 100 for _ in range(1_000_000))  # 100 MB, were it all read
    with pytest.raises(BodyTooLarge, match="exceeds the limit of 1000 bytes"):
        async with read_body(_request(stream), LIMITS, budget):
            pass
    assert stream.sent <= 1100 and budget.used == 0


async def test_the_budget_is_reserved_before_reading() -> None:
    budget = InflightBudget(1500)
    with budget.reserve(1000):  # another request holds most of it
        stream = _Stream([b"x" * 800])
        with pytest.raises(Overloaded) as e:
            async with read_body(_request(stream, content_length="800"), LIMITS, budget):
                pass
        assert stream.sent == 0 and e.value.retry_after == 1.0
        # a chunked body is refused once it grows past what is left
        stream = _Stream([b"x" * 100] * 8)
        with pytest.raises(Overloaded):
            async with read_body(_request(stream), BodyLimits(1000, 1000), budget):
                pass
        assert stream.sent < 800
    assert budget.used == 0


def test_a_request_alone_may_exceed_the_budget_never_beside_others() -> None:
    budget = InflightBudget(100)
    # alone: admitted, so any body within max_request_bytes can go through; beside it, nothing
    with budget.reserve(500), pytest.raises(Overloaded, match="too many bytes in flight"), budget.reserve(1):
        pass
    assert budget.used == 0


def test_decoding_within_limits() -> None:
    raw = b"hello " * 100
    assert decode(gzip.compress(raw), "gzip", 5000) == raw
    assert decode(gzip.compress(raw[:300]) + gzip.compress(raw[300:]), "x-gzip", 5000) == raw  # members
    assert decode(zlib.compress(raw), "Deflate", 5000) == raw
    assert decode(bytes(cramjam.snappy.compress_raw(raw)), "snappy", 5000) == raw
    assert decode(raw, "identity", 10) == raw
    with pytest.raises(BadData, match="unexpected end of data"):
        decode(gzip.compress(raw)[:-12], "gzip", 5000)
    with pytest.raises(BadData, match="invalid gzip body"):
        decode(b"not gzip", "gzip", 5000)
    with pytest.raises(BadData, match="unsupported Content-Encoding 'br'"):
        decode(raw, "br", 5000)


def test_a_gzip_bomb_is_refused_without_inflating_it() -> None:
    budget = InflightBudget(1 << 40)
    bomb = gzip.compress(b"\0" * (64 << 20))
    r = budget.reservation()
    with pytest.raises(BodyTooLarge, match="decompressed body exceeds the limit of 5000 bytes"):
        decode(bomb, "gzip", 5000, r)
    assert r.held <= 2 << 20  # at most one inflate step was reserved


def test_snappy_as_go_decodes_it() -> None:
    with pytest.raises(BadData, match=r"^snappy: corrupt input$"):
        snappy_block(b"", 100)  # zero bytes: Go's snappy.Decode says ErrCorrupt
    assert snappy_block(b"\x00", 100) == b""  # the block of an empty message
    with pytest.raises(BodyTooLarge, match="decompressed body of 500 bytes exceeds the limit of 100 bytes"):
        snappy_block(bytes(cramjam.snappy.compress_raw(b"x" * 500)), 100)
    with pytest.raises(BadData, match=r"^snappy: "):
        snappy_block(b"\x05abc", 100)


async def test_decoding_runs_in_a_thread_unless_the_body_is_small_and_plain() -> None:
    budget = InflightBudget(1 << 30)
    here = threading.get_ident()
    small = Body(b"{}", "", LIMITS, budget.reservation())
    assert await small.in_thread(threading.get_ident) == here
    zipped = Body(gzip.compress(b"{}"), "gzip", LIMITS, budget.reservation())
    assert await zipped.in_thread(threading.get_ident) != here
    large = Body(b" " * (1 << 20), "", LIMITS, budget.reservation())
    assert await large.in_thread(threading.get_ident) != here


def test_decoded_grows_the_reservation() -> None:
    budget = InflightBudget(1 << 30)
    r = budget.reservation()
    body = Body(gzip.compress(b"x" * 4000), "gzip", LIMITS, r)
    assert body.decoded() == b"x" * 4000
    assert r.held == 4000 == budget.used
    with pytest.raises(BadData, match="unsupported Content-Encoding 'gzip'"):
        body.decoded(encodings=("snappy",))
    r.release()
    assert budget.used == 0
