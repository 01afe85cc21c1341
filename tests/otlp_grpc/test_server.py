"""``core.otlp_grpc.OtlpGrpcServer`` alone, with export functions passed in: shutdown, error mapping."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest

from pitwall.core.auth import TokenTable
from pitwall.core.body import Body, BodyLimits
from pitwall.core.errors import BadData, NotFound, Unavailable
from pitwall.core.limits import InflightBudget
from pitwall.core.otlp_grpc import SERVICES, OtlpGrpcServer, OtlpGrpcSettings

pytestmark = pytest.mark.timeout(30)

LOGS = f"/{SERVICES['logs']}/Export"


def _server(export: object) -> OtlpGrpcServer:
    return OtlpGrpcServer(OtlpGrpcSettings(listen="127.0.0.1:0"), {"logs": export},  # type: ignore[dict-item]
                          tokens=TokenTable([]), inflight=InflightBudget(1 << 20),
                          body_limits=BodyLimits(1 << 16, 1 << 18))


async def test_in_flight_calls_finish_and_new_ones_are_unavailable_while_stopping() -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    seen: list[tuple[str, bytes, str]] = []

    async def export(tenant: str, body: Body, ctype: str) -> bytes:
        seen.append((tenant, body.decoded(), ctype))
        entered.set()
        await release.wait()
        return b""

    srv = _server(export)
    await srv.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        call = ch.unary_unary(LOGS)
        first = asyncio.ensure_future(call(b"\x0a\x00", metadata=(("x-scope-orgid", "team-a"),), timeout=10))
        await entered.wait()
        stopping = asyncio.ensure_future(srv.stop())
        await asyncio.sleep(0.2)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        release.set()
        assert await first == b""
        await stopping
    assert seen == [("team-a", b"\x0a\x00", "application/x-protobuf")]


@pytest.mark.parametrize(("err", "code"), [
    (BadData("bad"), grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound("gone"), grpc.StatusCode.NOT_FOUND),
    (Unavailable("later"), grpc.StatusCode.UNAVAILABLE),
    (RuntimeError("bug"), grpc.StatusCode.INTERNAL),
])
async def test_errors_become_grpc_status_codes(err: Exception, code: grpc.StatusCode) -> None:
    async def export(tenant: str, body: Body, ctype: str) -> bytes:
        raise err

    srv = _server(export)
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ch.unary_unary(LOGS)(b"", timeout=5)
        assert info.value.code() == code
        if code != grpc.StatusCode.INTERNAL:
            assert info.value.details() == str(err)
        else:
            assert info.value.details() == "internal error"  # no internals leak
    finally:
        await srv.stop()


async def test_a_taken_port_is_a_config_error_naming_the_key() -> None:
    first = _server(None)
    await first.start()
    try:
        second = OtlpGrpcServer(OtlpGrpcSettings(listen=f"127.0.0.1:{first.port}"), {}, tokens=TokenTable([]),
                                inflight=InflightBudget(1), body_limits=BodyLimits(1, 1))
        with pytest.raises(Exception, match=r"otlp_grpc\.listen: cannot listen on"):
            await second.start()
    finally:
        await first.stop()
