"""What ``pitwall server`` runs: settings, the listening socket, uvicorn (imported only by that command)."""

from __future__ import annotations

import contextlib
import gc
import logging
import resource
import socket
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import typer
import uvicorn

from pitwall.config import Settings, load_settings
from pitwall.core.errors import ConfigError
from pitwall.core.logs import setup_logging


def settings_from(config: Path | None, data_dir: Path | None, listen: str | None, insecure: bool,
              retention: str | None) -> Settings:
    storage = {"retention": retention} if retention else None
    try:
        return load_settings(config, data_dir=data_dir, listen=listen, insecure=insecure or None,
                             storage=storage)
    except ConfigError as e:
        typer.echo(f"pitwall: invalid configuration:\n{e.message}", err=True)
        raise typer.Exit(2) from None


log = logging.getLogger(__name__)
OTHER_REQUESTS = 1000  # connections beyond the held blocking queries (uvicorn's limit_concurrency)
FILES_HEADROOM = 1024  # descriptors for the stores, pods' pipes, watches


def tls_reloader(config: uvicorn.Config) -> Callable[[Settings], None]:
    """On reload, load ``tls_cert_file``/``tls_key_file`` again into the SSL context uvicorn serves with
    (``config.ssl``): handshakes from then on present the new certificate; open connections keep theirs.
    A pair that does not load (missing, unreadable, key not matching) fails the reload and the old
    certificate stays. Turning TLS on or off takes a restart."""

    def reload(settings: Settings) -> None:
        ctx = config.ssl
        if ctx is None or settings.tls_cert_file is None or settings.tls_key_file is None:
            return
        cert, key = str(settings.tls_cert_file), str(settings.tls_key_file)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, config.ssl_keyfile_password)
            ctx.load_cert_chain(cert, key, config.ssl_keyfile_password)  # only once the pair loads
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"tls_cert_file, tls_key_file: cannot load {cert} and {key}: "
                              f"{getattr(e, 'strerror', None) or e}") from None
        log.info("TLS certificate reloaded", extra={"tls_cert_file": cert})

    return reload


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after draining; pitwall exits 0 instead, as Prometheus does."""

    def __init__(self, config: uvicorn.Config, gc_threshold: tuple[int, int, int] | None = None) -> None:
        super().__init__(config)
        self.gc_threshold = gc_threshold  # the collector's thresholds once started (``cli.server`` raised them)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)  # the app's lifespan (every part started), then the listeners
        # What is alive now lives as long as the process: out of the collector's generations, or each full
        # collection walks the whole heap (130-160 ms with the event loop stopped, against 3.5 ms frozen; the
        # API gateway's p99 under steady allocating load). No collection first: it would delay readiness by
        # as long, and finds next to nothing to free after start-up (0 objects; 10 with the thresholds
        # `cli.server` raises for the start, measured).
        if self.gc_threshold is not None:
            gc.set_threshold(*self.gc_threshold)
        gc.freeze()


def _listen_socket(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound now; a port in use exits at once, naming it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        typer.echo(f"pitwall: cannot listen on {host}:{port}: {e.strerror or e} "
                   "(is another pitwall running? choose another address with --listen)", err=True)
        raise typer.Exit(1) from None
    return sock


def _raise_open_files(wanted: int) -> None:
    """Lift the soft limit on open files towards ``wanted`` (each held connection is a descriptor; the
    common soft default of 1024 would refuse connections long before the concurrency limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run(settings: Settings, gc_threshold: tuple[int, int, int] | None = None) -> None:
    """Serve until SIGTERM/SIGINT; uvicorn drains in-flight requests first. ``gc_threshold``: the collector's
    thresholds to set once started (the caller raised them for the start)."""
    from pitwall.core.httpproto import http_protocol
    from pitwall.server import create_app

    setup_logging(settings.log_level, settings.log_format)
    _raise_open_files(settings.consul.max_blocking_queries + OTHER_REQUESTS + FILES_HEADROOM)
    sock = _listen_socket(settings.host, settings.port)  # first: a taken port fails before anything starts
    try:
        app = create_app(settings)
    except ConfigError as e:
        sock.close()
        typer.echo(f"pitwall: {e.message}", err=True)
        raise typer.Exit(2) from None
    config = uvicorn.Config(
        # the app's edge layer (which hands lifespan and requests to the framework) itself: a held Consul
        # blocking query pins one coroutine frame fewer than through the app's ``__call__``
        getattr(app, "edge", None) or app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=30,
        ssl_certfile=str(settings.tls_cert_file) if settings.tls_cert_file else None,
        ssl_keyfile=str(settings.tls_key_file) if settings.tls_key_file else None,
        # Held Consul blocking queries are connections too: uvicorn counts them against this limit.
        limit_concurrency=settings.consul.max_blocking_queries + OTHER_REQUESTS,
        server_header=False,
        # uvicorn's httptools protocol with lighter per-connection state, and a held query's departure seen
        # without a task (core.httpproto): ~6 KiB less per held Consul blocking query.
        http=http_protocol(),
        # uvicorn formats each access-log line's arguments before the logger drops it (core.logs keeps
        # uvicorn.access at WARNING: no line is ever written); off, a request skips that work.
        access_log=False,
    )
    app.state.reloaders.append(tls_reloader(config))
    server = _Server(config, gc_threshold)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(1)
