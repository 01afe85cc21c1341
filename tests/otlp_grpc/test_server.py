"""``core.otlp_grpc.OtlpGrpcServer`` alone, with export functions passed in: shutdown, error mapping."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import grpc
import grpc.aio
import pytest

from pitwall.core.auth import TokenTable
from pitwall.core.body import Body, BodyLimits
from pitwall.core.errors import BadData, NotFound, Unavailable
from pitwall.core.limits import InflightBudget
from pitwall.core.otlp_grpc import SERVICES, OtlpGrpcServer, OtlpGrpcSettings, TlsFiles

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


def _cert(dir_: Path, name: str) -> tuple[bytes, bytes]:
    cert, key = dir_ / f"{name}.crt", dir_ / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True, timeout=60)
    return cert.read_bytes(), key.read_bytes()


async def _handshake(port: int, ca: bytes) -> bool:
    """Whether a call verifying against ``ca`` gets through TLS (the export itself then fails: NOT_FOUND)."""
    creds = grpc.ssl_channel_credentials(ca)
    async with grpc.aio.secure_channel(f"localhost:{port}", creds) as ch:
        try:
            await ch.unary_unary(LOGS)(b"", timeout=5)
        except grpc.aio.AioRpcError as e:
            return e.code() != grpc.StatusCode.UNAVAILABLE
    return True


async def test_reload_serves_the_new_certificate_to_new_connections(tmp_path: Path) -> None:
    old, new = _cert(tmp_path, "old"), _cert(tmp_path, "new")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(old[0])
    key.write_bytes(old[1])

    async def export(tenant: str, body: Body, ctype: str) -> bytes:
        raise NotFound("nothing here")

    srv = OtlpGrpcServer(OtlpGrpcSettings(listen="127.0.0.1:0"), {"logs": export}, tokens=TokenTable([]),
                         inflight=InflightBudget(1 << 20), body_limits=BodyLimits(1 << 16, 1 << 18),
                         tls=TlsFiles(cert, key))
    await srv.start()
    try:
        assert srv.port is not None
        assert await _handshake(srv.port, old[0])
        assert not await _handshake(srv.port, new[0])
        cert.write_bytes(new[0])
        key.write_bytes(new[1])
        await srv.reload(None)
        assert await _handshake(srv.port, new[0])
        assert not await _handshake(srv.port, old[0])
    finally:
        await srv.stop()


async def test_requests_are_counted_by_method_and_code() -> None:
    from pitwall.core.selfmetrics import SelfMetrics

    async def export(tenant: str, body: Body, ctype: str) -> bytes:
        if body.decoded() == b"bad":
            raise BadData("bad")
        return b""

    srv = _server(export)
    metrics = SelfMetrics()
    srv.register_metrics(metrics)
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            await ch.unary_unary(LOGS)(b"", timeout=5)
            with pytest.raises(grpc.aio.AioRpcError):
                await ch.unary_unary(LOGS)(b"bad", timeout=5)
            srv._stopping = True  # as stop() sets it before the server drains
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ch.unary_unary(LOGS)(b"", timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert info.value.details() == "the server is shutting down"
    finally:
        await srv.stop()

    def count(code: str) -> float | None:
        return metrics.registry.get_sample_value("pitwall_grpc_requests_total", {"method": LOGS, "code": code})

    assert (count("OK"), count("INVALID_ARGUMENT"), count("UNAVAILABLE")) == (1.0, 1.0, 1.0)


async def test_every_export_is_in_the_audit_log_with_who_and_tenant() -> None:
    from pitwall.core.audit import AuditEntry
    from pitwall.core.tenancy import Principal

    async def export(tenant: str, body: Body, ctype: str) -> bytes:
        if body.decoded() == b"bad":
            raise BadData("bad")
        return b""

    class Audit:
        def __init__(self) -> None:
            self.entries: list[AuditEntry] = []

        def offer(self, entry: AuditEntry) -> None:
            self.entries.append(entry)

    audit = Audit()
    srv = OtlpGrpcServer(OtlpGrpcSettings(listen="127.0.0.1:0"), {"logs": export},
                         tokens=TokenTable([("secret-token-0123456789", Principal("ingest", frozenset({"write"}),
                                                                                   frozenset({"team-a"})))]),
                         inflight=InflightBudget(1 << 20), body_limits=BodyLimits(1 << 16, 1 << 18),
                         audit=audit)  # type: ignore[arg-type]
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            auth = (("authorization", "Bearer secret-token-0123456789"),)
            await ch.unary_unary(LOGS)(b"", metadata=auth, timeout=5)
            with pytest.raises(grpc.aio.AioRpcError):
                await ch.unary_unary(LOGS)(b"bad", metadata=auth, timeout=5)
            with pytest.raises(grpc.aio.AioRpcError):
                await ch.unary_unary(LOGS)(b"", metadata=(("authorization", "Bearer wrong"),), timeout=5)
    finally:
        await srv.stop()
    got = [(e.who, e.tenant, e.method, e.path, e.status) for e in audit.entries]
    assert got == [("ingest", "team-a", "POST", LOGS, 200), ("ingest", "team-a", "POST", LOGS, 400),
                   ("", "", "POST", LOGS, 401)]
    assert audit.entries[0].user_agent.startswith("grpc-") and audit.entries[0].remote  # the client's own
