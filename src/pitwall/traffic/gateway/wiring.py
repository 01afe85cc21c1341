"""The gateway as a ``core.lifecycle.Part``: listener, declarative file, reloads, Kong's admin ``/config``.

Off unless ``gateway.listen`` is set. The declarative file
(``gateway.declarative_config``) is loaded at start (an invalid file stops
the start with its field paths) and again, atomically, on ``POST
/-/reload`` / SIGHUP, when the file changes (checked every second), and
when a configuration is posted to Kong's admin endpoint at
``/kong-admin/config`` on pitwall's API port. A rejected configuration
leaves the one in force untouched. Each applied configuration is recorded
as a ``config`` change event. With the Kubernetes API, Ingresses and
Gateway API HTTPRoutes are routes too (``kubesource``), tried before the
file's routes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from fastapi import APIRouter, Request, Response
from starlette.datastructures import UploadFile

from pitwall.core.body import media_type, read_form
from pitwall.core.errors import BodyTooLarge, ConfigError
from pitwall.core.lifecycle import Component, Mount
from pitwall.core.listen import split_listen
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.core.tasks import Supervisor
from pitwall.incidents import ChangeEvent, ChangeSink
from pitwall.metrics import Appender
from pitwall.traffic.gateway.crds import gateway_api_crds
from pitwall.traffic.gateway.declarative import DeclarativeError, KongState, dump, load_declarative
from pitwall.traffic.gateway.kuberoutes import KubeRoutes
from pitwall.traffic.gateway.kubesource import KubeRouteSource
from pitwall.traffic.gateway.proxy import GatewayServer, Resolver
from pitwall.traffic.gateway.runtime import compile_state
from pitwall.traffic.gateway.stats import GatewayStats

__all__ = ["GatewayPart", "build_gateway_part", "kube_resolver"]

log = logging.getLogger(__name__)
MAX_CONFIG_BYTES = 8 << 20  # a posted declarative configuration
FILE_POLL_S = 1.0


def kube_resolver(client: Any) -> Resolver:
    """ClusterIP of a Service through the in-process Kubernetes client (None when absent or headless)."""
    from pitwall.kube import KubeError

    async def resolve(namespace: str, name: str) -> str | None:
        try:
            svc = await client.get("v1", "Service", name, namespace)
        except KubeError:
            return None
        ip = (svc.get("spec") or {}).get("clusterIP")
        return ip if isinstance(ip, str) and ip and ip != "None" else None

    return resolve


def parse_config_text(text: bytes, where: str) -> Any:
    """A declarative document in YAML or JSON (JSON is YAML)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise DeclarativeError([f"{where}: invalid YAML{at}"]) from None


@dataclass
class GatewayPart:
    """The API gateway: one listener, one configuration in force."""

    listen: str | None
    config_file: Path | None
    stats: GatewayStats
    resolve: Resolver | None = None
    kube_client: Any = None  # the Kubernetes API's client: Ingresses become routes (every server, no leader)
    changes: ChangeSink | None = None
    tls: tuple[Path, Path] | None = None  # (cert, key): the server's tls_cert_file/tls_key_file, as every listener
    name: str = "gateway"
    tasks: Supervisor = field(default_factory=lambda: Supervisor("gateway"))
    server: GatewayServer | None = None
    state: KongState = field(default_factory=KongState)
    _mtime: float | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _ssl: ssl.SSLContext | None = None
    kube_source: KubeRouteSource | None = None
    native: bool = True  # gateway.native: plain-HTTP connections in C when the extension is built

    # Part

    def components(self) -> Sequence[Component]:
        return [self] if self.listen else []

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        return [Mount(self._admin_router(), server_wide=True)]

    async def reload(self, settings: Any) -> None:
        g = settings.gateway
        if g.listen != self.listen and self.server is not None:
            raise ConfigError("gateway.listen: changing the gateway's address needs a restart")
        self.config_file = g.declarative_config
        if self._ssl is not None and settings.tls_cert_file and settings.tls_key_file:
            pair = (str(settings.tls_cert_file), str(settings.tls_key_file))
            try:  # on a scratch context first: a pair that fails half-loaded would break every handshake
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(*pair)
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"tls_cert_file, tls_key_file: cannot load {pair[0]} and {pair[1]}: {e}") from e
            self._ssl.load_cert_chain(*pair)  # new handshakes get it; open connections keep theirs
        if self.server is not None:
            await self.load_file(source="reload")

    def register_metrics(self, metrics: SelfMetrics) -> None:
        metrics.add_gauges("pitwall_gateway_requests", "Requests the API gateway has answered.",
                           lambda: float(self.server.requests_total if self.server else 0))

    # Component

    async def start(self) -> None:
        assert self.listen is not None
        initial = await self._read_file() if self.config_file else KongState()
        self.state = initial
        self.server = GatewayServer(compile_state(initial, self.stats), resolve=self.resolve, native=self.native)
        host, port = split_listen(self.listen)
        if self.tls is not None:
            self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ssl.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
        await self.server.start(host, port, ssl=self._ssl)
        self.tasks.spawn(self.stats.run(), name="gateway-metrics-flush")
        self.tasks.spawn(self._watch(), name="gateway-config-watch")
        if self.kube_client is not None:
            self.kube_source = KubeRouteSource(self.kube_client, self._publish_kube, status_address(host),
                                               port=self.server.port, scheme="https" if self._ssl else "http",
                                               record=self._record_kube)
            self.tasks.spawn(self.kube_source.run(), name="gateway-kube-routes")
        log.info("gateway listening", extra={"listen": self.listen, "routes": len(initial.routes)})

    async def stop(self) -> None:
        await self.tasks.stop()
        if self.server is not None:
            await self.server.stop()
            self.server = None

    # configuration

    async def _record_kube(self, summary: str, details: dict[str, Any]) -> None:
        if self.changes is not None:
            await self.changes.record(ChangeEvent(kind="config", summary=summary, source="gateway",
                                                  details={"source": "kubernetes", **details}))

    def _publish_kube(self, routes: KubeRoutes) -> None:
        """Swap in the routes translated from Kubernetes objects (one reference, as ``apply`` does)."""
        if self.server is not None:
            self.server.kube_routes = routes
        log.info("gateway Kubernetes routes applied", extra={"ingresses": routes.ingress.count,
                                                              "httproute_matches": len(routes.http.entries)})

    async def _read_file(self) -> KongState:
        assert self.config_file is not None
        try:
            self._mtime = self.config_file.stat().st_mtime
            text = self.config_file.read_bytes()
        except OSError as e:
            raise ConfigError(f"gateway.declarative_config: cannot read {self.config_file}: {e.strerror}") from None
        return load_declarative(parse_config_text(text, str(self.config_file)))

    async def load_file(self, *, source: str) -> None:
        """Re-read the declarative file and apply it; ``ConfigError`` (nothing changed) when it is invalid."""
        if self.config_file is None:
            await self.apply(KongState(), source=source)
            return
        async with self._lock:
            state = await self._read_file()
        await self.apply(state, source=source)

    async def apply(self, state: KongState, *, source: str, who: str = "") -> None:
        """Swap in ``state``: compiled first, then one reference replaced, so no request sees half of it."""
        async with self._lock:
            compiled = compile_state(state, self.stats)
            if self.server is not None:
                self.server.config = compiled
            self.state = state
        log.info("gateway configuration applied", extra={"source": source, "routes": len(state.routes),
                                                          "services": len(state.services)})
        if self.changes is not None:
            try:
                await self.changes.record(ChangeEvent(
                    kind="config", summary=f"gateway configuration applied ({source}): {len(state.services)} "
                                           f"services, {len(state.routes)} routes, {len(state.plugins)} plugins",
                    source="gateway", who=who, details={"source": source}))
            except Exception:  # the configuration is in force either way; only its record is lost
                log.exception("gateway: recording the configuration change failed")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(FILE_POLL_S)
            if self.config_file is None:
                continue
            try:
                mtime = self.config_file.stat().st_mtime
            except OSError:
                continue
            if mtime != self._mtime:
                try:
                    await self.load_file(source="file change")
                except ConfigError as e:
                    log.error("gateway configuration rejected; the previous one stays in force",
                              extra={"error": e.message})

    # Kong's admin API: POST /config (DB-less), GET /config

    def _admin_router(self) -> APIRouter:
        r = APIRouter(tags=["gateway"])

        @r.post("/kong-admin/config")
        async def post_config(request: Request) -> Response:
            try:
                doc = await _config_document(request)
                if doc is None:
                    return _kong_json(413, {"message": "Payload too large"})
                state = load_declarative(doc)
            except DeclarativeError as e:
                return _kong_json(400, {"code": 14, "name": "invalid declarative configuration",
                                        "message": e.message, "fields": e.problems})
            if self.server is None:
                return _kong_json(503, {"message": "the gateway is not running (gateway.listen is unset)"})
            await self.apply(state, source="kong-admin /config")
            return _kong_json(201, dump(state))

        @r.get("/kong-admin/config")
        async def get_config() -> Response:
            return _kong_json(200, {"config": yaml.safe_dump(dump(self.state), sort_keys=True)})

        return r


async def _config_document(request: Request) -> Any:
    """Kong accepts the document itself, ``{"config": "<yaml or json text>"}``, or a form field (or file)
    ``config``; None when the body is over ``MAX_CONFIG_BYTES``."""
    if media_type(request) in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            form = await read_form(request, MAX_CONFIG_BYTES)
        except BodyTooLarge:
            return None
        field = form.get("config")
        text = await field.read() if isinstance(field, UploadFile) else (field or "").encode()
        return parse_config_text(text, "config")
    body = await _read_limited(request)
    if body is None:
        return None
    doc = parse_config_text(body, "body")
    if isinstance(doc, dict) and isinstance(doc.get("config"), str) and "_format_version" not in doc:
        return parse_config_text(doc["config"].encode(), "config")
    return doc


async def _read_limited(request: Request) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_CONFIG_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _kong_json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json; charset=utf-8")


def build_gateway_part(settings: Any, *, metrics: Appender | None, kube: Any = None,
                       changes: ChangeSink | None = None) -> GatewayPart:
    """The gateway for ``settings.gateway`` (inactive while ``listen`` is unset). With ``kube`` (the
    ``KubeAPI``, not started yet) the Gateway API CRDs are installed and Ingresses/HTTPRoutes become routes."""
    g = settings.gateway
    kube_client = None
    if kube is not None:
        if g.listen is not None:
            kube.add_builtin_crds(gateway_api_crds())
        kube_client = kube.client
    tls = (settings.tls_cert_file, settings.tls_key_file) if settings.tls_cert_file and settings.tls_key_file else None
    return GatewayPart(listen=g.listen, config_file=g.declarative_config, stats=GatewayStats(metrics),
                       resolve=kube_resolver(kube_client) if kube_client is not None else None, changes=changes,
                       tls=tls, kube_client=kube_client, native=g.native)


def status_address(host: str) -> str:
    """The address an Ingress's status shows: the listen host (loopback when it listens on every address)."""
    return "127.0.0.1" if host in ("", "0.0.0.0") else ("::1" if host == "::" else host)


