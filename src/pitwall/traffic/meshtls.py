"""Mutual TLS between pitwall nodes: each node's inbound mesh listener and the dialer to other nodes'.

Every server runs one ``MeshNode``. It loads (or creates) the cluster's CA
(``traffic.meshca``), opens two inbound listeners and advertises them on its
Node object (annotation ``mesh.pitwall.dev/inbound``:
``host:tlsPort,plainPort``): a TLS one, where the caller must present a leaf
of the CA (mutual TLS), and a plaintext one, for callers without a mesh
identity (Istio's sidecar takes both on one port and sniffs; two ports keep
the data path free of peeking).

A connection starts with one line naming the endpoint, as Istio's HBONE
tunnel does with CONNECT: ``CONNECT <pod ip>:<port> HTTP/1.1`` and an
``x-pitwall-protocol: http|tcp`` header, then the bytes for the endpoint.
No answer is sent to it; a refusal is a reset. The inbound side:

- serves only endpoints of pods on its own node (it is no open relay);
- applies the workload's PeerAuthentication mode: ``STRICT`` resets a
  plaintext connection, ``DISABLE`` resets a TLS one, ``PERMISSIVE`` takes
  both;
- takes the caller's identity from its verified certificate's URI SAN
  (``spiffe://<td>/ns/<ns>/sa/<sa>``), never from the source address, and
  evaluates the workload's AuthorizationPolicies with it: per request on
  HTTP ports (``traffic.http.serve_inbound``), once per connection on TCP
  ports (rules naming HTTP fields then match nothing).

The outbound side (``connect``) follows Istio's auto-mTLS: TLS with the
calling workload's leaf unless the destination workload's mode is
``DISABLE`` (or a DestinationRule says ``tls.mode: DISABLE``); a caller
that is no mesh pod has no leaf and goes in plaintext. The server's
certificate must carry the destination pod's ServiceAccount identity (SNI
names the pod, so the inbound side presents that workload's leaf).
Traffic between pods of one node does not leave the node's proxy, which
plays both sidecars: it stays plaintext, the caller known by its pod IP (its
metrics still say ``mutual_tls`` unless the mode is DISABLE:
``ServiceProxy.hop_security``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509

from pitwall.core.tasks import Supervisor
from pitwall.kube import Gone, KubeClient, KubeError, NotFoundError
from pitwall.traffic.authz import AuthzRequest
from pitwall.traffic.balancer import Backend
from pitwall.traffic.http import HttpLimits, serve_inbound
from pitwall.traffic.mesh import MeshConfig
from pitwall.traffic.meshca import (
    CA_NAMESPACE,
    CA_SECRET,
    DEFAULT_LEAF_TTL_S,
    LeafCache,
    MeshCA,
    load_or_create_ca,
    peer_spiffe_id,
)
from pitwall.traffic.pods import PodInfo
from pitwall.traffic.relay import CHUNK, close_writer, splice

__all__ = ["INBOUND_ANNOTATION", "InboundAddr", "MeshNode", "MeshNodeStats", "parse_spiffe"]

log = logging.getLogger(__name__)

Obj = dict[str, Any]
INBOUND_ANNOTATION = "mesh.pitwall.dev/inbound"
PREAMBLE_MAX = 1024  # bytes of the CONNECT line and its headers
_PREAMBLE_TIMEOUT_S = 10.0
_ADVERTISE_RETRY_S = 1.0
_CA_RETRY_S = 30.0


@dataclass(frozen=True)
class InboundAddr:
    """Where a node takes mesh traffic."""

    host: str
    tls_port: int
    plain_port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.tls_port},{self.plain_port}"

    @staticmethod
    def parse(s: str) -> InboundAddr | None:
        try:
            hostport, plain = s.rsplit(",", 1)
            host, tls = hostport.rsplit(":", 1)
            return InboundAddr(host, int(tls), int(plain))
        except ValueError:
            return None


@dataclass
class MeshNodeStats:
    """Counters of the inbound and outbound mesh hops, for the server's metrics."""

    inbound_tls: int = 0
    inbound_plaintext: int = 0
    rejected_plaintext: int = 0  # STRICT: a plaintext connection reset
    rejected_tls: int = 0  # DISABLE: a TLS connection reset
    rejected_preamble: int = 0  # a malformed first line, or an endpoint that is not on this node
    denied: int = 0  # refused by an AuthorizationPolicy (connections on TCP ports, requests on HTTP)
    outbound_tls: int = 0
    outbound_plaintext: int = 0
    handshake_failures: int = 0  # outbound: the peer's certificate did not verify or named someone else


class InboundView(Protocol):
    """What the inbound side reads of the service proxy: who is behind a pod IP, the policies in force."""

    pods: dict[str, PodInfo]
    mesh: MeshConfig


def parse_spiffe(uri: str | None) -> tuple[str, str, str] | None:
    """``(trust domain, namespace, service account)`` of ``spiffe://<td>/ns/<ns>/sa/<sa>``."""
    if not uri or not uri.startswith("spiffe://"):
        return None
    parts = uri[len("spiffe://"):].split("/")
    if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa" or not all(parts):
        return None
    return parts[0], parts[2], parts[4]


def _sni(dest: PodInfo, ip: str) -> str:
    return f"{ip.replace('.', '-')}.{dest.namespace}.pod"


def _sni_ip(name: str | None) -> str:
    return name.split(".", 1)[0].replace("-", ".") if name else ""


class MeshNode:
    """One node's end of the mesh: CA, leaves, inbound listeners, and the dialer to other nodes (a
    Component; its loops run under ``.tasks``)."""

    name = "mesh-node"

    def __init__(self, client: KubeClient, node_name: str, *, host: str = "127.0.0.1", tls_port: int = 0,
                 plain_port: int = 0, leaf_ttl_s: float = DEFAULT_LEAF_TTL_S, trust_domain: str = "cluster.local",
                 clock: Callable[[], float] = time.time, handshake_timeout_s: float = 5.0,
                 limits: HttpLimits | None = None) -> None:
        self.client = client
        self.node_name = node_name
        self.host, self.tls_port, self.plain_port = host, tls_port, plain_port
        self.leaf_ttl_s = leaf_ttl_s
        self.trust_domain = trust_domain
        self.clock = clock
        self.handshake_timeout_s = handshake_timeout_s
        self.limits = limits or HttpLimits()
        self.view: InboundView | None = None  # the service proxy, set when it is built
        self.ca: MeshCA | None = None
        self.leaves: LeafCache | None = None
        self.address: InboundAddr | None = None  # what this node advertises, once listening
        self.peers: dict[str, InboundAddr] = {}  # node name -> its inbound listeners
        self.stats = MeshNodeStats()
        self.tasks = Supervisor("mesh-node")
        self._servers: list[asyncio.Server] = []

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the CA and open the listeners; when the CA cannot be read (servers sealing Secrets with
        different keys), log why and keep trying in the background: until then this node advertises
        nothing, so other nodes' hops to its pods stay direct and plaintext, and its own do too."""
        try:
            await self._setup()
        except (KubeError, ValueError) as e:
            log.error("mesh: the CA Secret %s/%s cannot be used (%s); mutual TLS between nodes is off until it "
                      "can (servers sharing a store need the same PITWALL_SECRETS_KEY or kube.encryption_config)",
                      CA_NAMESPACE, CA_SECRET, e)
            self.tasks.spawn(self._setup_later(), name="mesh-ca-retry", loop=False)

    async def _setup_later(self) -> None:
        while True:
            await asyncio.sleep(_CA_RETRY_S)
            try:
                await self._setup()
                log.info("mesh: the CA is loaded; mutual TLS between nodes is on")
                return
            except (KubeError, ValueError):
                continue

    async def _setup(self) -> None:
        ca = await load_or_create_ca(self.client, self.trust_domain)
        self.ca = ca
        self.leaves = LeafCache(ca, self.leaf_ttl_s, self.clock)
        base = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        base.minimum_version = ssl.TLSVersion.TLSv1_2
        # Set on the base context too: OpenSSL keeps the first context's verify mode after the SNI switch.
        base.verify_mode = ssl.CERT_REQUIRED
        base.load_verify_locations(cadata=ca.cert_pem.decode())
        base.sni_callback = self._pick_leaf
        tls = await asyncio.start_server(lambda r, w: self._accepted(r, w, True), self.host, self.tls_port,
                                         ssl=base, ssl_handshake_timeout=self.handshake_timeout_s, limit=CHUNK,
                                         reuse_address=True, backlog=1024)
        plain = await asyncio.start_server(lambda r, w: self._accepted(r, w, False), self.host, self.plain_port,
                                           limit=CHUNK, reuse_address=True, backlog=1024)
        self._servers = [tls, plain]
        self.address = InboundAddr(self.host, tls.sockets[0].getsockname()[1], plain.sockets[0].getsockname()[1])
        self.tasks.spawn(self._advertise(), name="advertise-inbound", loop=False)
        self.tasks.spawn(self._follow_nodes(), name="watch-nodes")

    async def stop(self) -> None:
        for s in self._servers:
            s.close()
        await self.tasks.stop()
        for s in self._servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(s.wait_closed(), 1.0)
        self._servers = []

    @property
    def healthy(self) -> bool:
        return self.tasks.healthy

    async def _advertise(self) -> None:
        """Put this node's inbound address on its Node (retried until the node has registered)."""
        patch = {"metadata": {"annotations": {INBOUND_ANNOTATION: str(self.address)}}}
        while True:
            try:
                await self.client.patch("v1", "Node", self.node_name, patch)
                return
            except NotFoundError:
                await asyncio.sleep(_ADVERTISE_RETRY_S)

    async def _follow_nodes(self) -> None:
        """Keep ``peers`` (the other nodes' inbound addresses) from the Nodes' annotations."""
        while True:
            try:
                lr = await self.client.list("v1", "Node")
                self.peers = {n: a for o in lr.items if (p := _peer(o)) is not None for n, a in [p]}
                async for ev in self.client.watch("v1", "Node", resource_version=lr.resource_version):
                    if ev.type == "BOOKMARK":
                        continue
                    name = str((ev.object.get("metadata") or {}).get("name") or "")
                    p = _peer(ev.object) if ev.type != "DELETED" else None
                    if p is None:
                        self.peers.pop(name, None)
                    else:
                        self.peers[p[0]] = p[1]
            except Gone:
                continue

    # -- the CA for Consul's Connect endpoints (registry.connect_api) ---------------------------

    def root_certificate(self) -> x509.Certificate | None:
        return self.ca.cert if self.ca is not None else None

    def leaf_for(self, namespace: str, service_account: str) -> tuple[x509.Certificate, bytes, str]:
        if self.leaves is None:
            raise RuntimeError("the mesh CA has not started")
        leaf = self.leaves.for_workload(namespace, service_account)
        return leaf.cert, leaf.key_pem, leaf.uri

    # -- outbound -----------------------------------------------------------------------------

    def remote(self, dest: PodInfo | None) -> bool:
        """Whether ``dest`` is served by another node's inbound listener."""
        return dest is not None and bool(dest.node) and dest.node != self.node_name and dest.node in self.peers

    async def connect(self, host: Backend, src: PodInfo | None, dest: PodInfo, *, http: bool,
                      mode: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open the hop to ``host`` (a pod of ``dest.node``) through that node's inbound listener: mutual
        TLS with ``src``'s leaf unless ``src`` is no mesh pod or ``mode`` (the server side's mode, or the
        DestinationRule's) is ``DISABLE``. Raises ``OSError`` as a direct connect would."""
        addr = self.peers.get(dest.node)
        if addr is None:
            return await asyncio.open_connection(host.ip, host.port, limit=CHUNK)
        if src is None or mode == "DISABLE" or self.leaves is None:
            r, w = await asyncio.open_connection(addr.host, addr.plain_port, limit=CHUNK)
            self.stats.outbound_plaintext += 1
        else:
            r, w = await self._open_tls(addr, host, src, dest)
            self.stats.outbound_tls += 1
        proto = "http" if http else "tcp"
        w.write(f"CONNECT {host.ip}:{host.port} HTTP/1.1\r\nhost: {host.ip}:{host.port}\r\n"
                f"x-pitwall-protocol: {proto}\r\n\r\n".encode())
        return r, w

    async def _open_tls(self, addr: InboundAddr, host: Backend, src: PodInfo,
                        dest: PodInfo) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        assert self.leaves is not None and self.ca is not None
        leaf = self.leaves.for_workload(src.namespace, src.service_account)
        try:
            r, w = await asyncio.open_connection(addr.host, addr.tls_port, ssl=leaf.client_ctx,
                                                 server_hostname=_sni(dest, host.ip), limit=CHUNK,
                                                 ssl_handshake_timeout=self.handshake_timeout_s)
        except ssl.SSLError:
            self.stats.handshake_failures += 1
            raise
        want = self.ca.spiffe_id(dest.namespace, dest.service_account)
        got = peer_spiffe_id(w.get_extra_info("ssl_object"))
        if got != want:  # Istio checks the server's SAN against the destination's service account
            self.stats.handshake_failures += 1
            w.transport.abort()
            raise ssl.SSLError(f"the server presented {got!r}, not {want!r}")
        return r, w

    # -- inbound ------------------------------------------------------------------------------

    def _pick_leaf(self, sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        """SNI names the destination pod: present its workload's leaf."""
        view = self.view
        dest = view.pods.get(_sni_ip(server_name)) if view is not None else None
        if dest is None or dest.node != self.node_name or self.leaves is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sslobj.context = self.leaves.for_workload(dest.namespace, dest.service_account).server_ctx
        return None

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: bool) -> None:
        try:
            self.tasks.spawn(self._inbound(reader, writer, tls), name="mesh-inbound", loop=False)
        except RuntimeError:  # stopping
            writer.transport.abort()

    async def _inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: bool) -> None:
        try:
            await self._inbound_checked(reader, writer, tls)
        finally:
            if not writer.is_closing():
                await close_writer(writer)

    async def _inbound_checked(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               tls: bool) -> None:
        if tls:
            self.stats.inbound_tls += 1
        else:
            self.stats.inbound_plaintext += 1
        target = await self._preamble(reader)
        view = self.view
        dest = view.pods.get(target[0].ip) if target is not None and view is not None else None
        if target is None or view is None or dest is None or dest.node != self.node_name:
            self.stats.rejected_preamble += 1
            writer.transport.abort()
            return
        host, http = target
        pa = view.mesh.peer_auth
        mode = pa.mode(dest, host.port) if pa is not None else "PERMISSIVE"
        if not tls and mode == "STRICT":
            self.stats.rejected_plaintext += 1
            writer.transport.abort()  # Envoy resets plaintext under STRICT
            return
        if tls and mode == "DISABLE":
            self.stats.rejected_tls += 1
            writer.transport.abort()
            return
        src = _caller(peer_spiffe_id(writer.get_extra_info("ssl_object")) if tls else None)
        peer = writer.get_extra_info("peername")
        src_ip = str(peer[0]) if peer else ""

        def allowed(method: str, target: str, authority: str, headers: dict[str, str]) -> bool:
            authz = view.mesh.authz
            if authz is None or not authz.policies:
                return True
            ok = authz.allowed(dest, AuthzRequest(src, src_ip, method, target, authority.split(":")[0], host.port,
                                                  headers, host.ip))
            if not ok:
                self.stats.denied += 1
            return ok

        if http:
            await serve_inbound(reader, writer, host, allowed, self.limits)
            return
        if not allowed("", "", "", {}):
            writer.transport.abort()
            return
        try:
            ur, uw = await asyncio.open_connection(host.ip, host.port, limit=CHUNK)
        except OSError:
            writer.transport.abort()
            return
        await splice((reader, writer), (ur, uw), sent=_ignore, received=_ignore)

    async def _preamble(self, reader: asyncio.StreamReader) -> tuple[Backend, bool] | None:
        """The endpoint and protocol the caller names, or None for anything malformed or too long."""
        try:
            async with asyncio.timeout(_PREAMBLE_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError):
            return None
        if len(head) > PREAMBLE_MAX:
            return None
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[0] != "CONNECT" or parts[2] != "HTTP/1.1":
            return None
        ip, _, port = parts[1].rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536 or not ip:
            return None
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        return Backend(ip, int(port)), headers.get("x-pitwall-protocol", "tcp") == "http"


def _ignore(_n: int) -> None:
    return None


def _caller(uri: str | None) -> PodInfo | None:
    """The caller as AuthorizationPolicy sees it: its namespace and ServiceAccount from its certificate."""
    parsed = parse_spiffe(uri)
    if parsed is None:
        return None
    _td, ns, sa = parsed
    return PodInfo(name="unknown", namespace=ns, workload="unknown", service_account=sa)


def _peer(node: Obj) -> tuple[str, InboundAddr] | None:
    meta = node.get("metadata") or {}
    raw = (meta.get("annotations") or {}).get(INBOUND_ANNOTATION)
    addr = InboundAddr.parse(str(raw)) if raw else None
    return (str(meta.get("name") or ""), addr) if addr is not None else None
