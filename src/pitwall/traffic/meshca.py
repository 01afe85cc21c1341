"""pitwall's mesh CA: one self-signed root shared through the Kubernetes API, short-lived SPIFFE leaves.

The root (ECDSA P-256, ten years) is kept as Istio keeps its self-signed
root: the Secret ``istio-system/istio-ca-secret`` (``ca-cert.pem``,
``ca-key.pem``). Secrets are sealed at rest by ``kube.encryption``, and every
server on one etcd reads the same Secret, so they all trust and issue under
one root. The first server to start creates it; a server that loses the
create race reads the winner's.

Leaves are issued locally by each server (every server holds the root key,
as every istiod replica does) for a workload identity
``spiffe://<trust domain>/ns/<ns>/sa/<sa>`` (the only SAN, a URI),
valid 24 h by default and re-issued once half their life has passed (Istio's
agent: ``SECRET_GRACE_PERIOD_RATIO`` 0.5, pilot-agent's options.go).
A ``Leaf`` carries its two ``ssl.SSLContext``s (client and server side),
built once when the leaf is issued, so a connection costs a handshake and
no context building.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import secrets
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pitwall.kube import AlreadyExists, KubeClient, NotFoundError

__all__ = ["CA_NAMESPACE", "CA_SECRET", "DEFAULT_LEAF_TTL_S", "Leaf", "LeafCache", "MeshCA", "load_or_create_ca",
           "peer_spiffe_id"]

CA_NAMESPACE = "istio-system"
CA_SECRET = "istio-ca-secret"
DEFAULT_LEAF_TTL_S = 24 * 3600.0
ROTATE_AT = 0.5  # of a leaf's life, Istio's default grace period ratio
ROOT_TTL = dt.timedelta(days=3650)
_SKEW = dt.timedelta(minutes=1)  # leaves start a minute early, for peers whose clock is behind


def _pem_cert(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.PEM)


def _pem_key(k: ec.EllipticCurvePrivateKey) -> bytes:
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


@dataclass(frozen=True)
class MeshCA:
    """The root certificate and key; ``issue`` signs leaves."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    trust_domain: str = "cluster.local"

    @property
    def cert_pem(self) -> bytes:
        return _pem_cert(self.cert)

    @staticmethod
    def generate(trust_domain: str = "cluster.local") -> MeshCA:
        """A new self-signed root (what the first server of a cluster makes)."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
                          x509.NameAttribute(NameOID.COMMON_NAME, "pitwall mesh root CA")])
        now = dt.datetime.now(dt.UTC)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        # A 63-bit serial: Consul's roots API reports it as an integer its clients read into a uint64.
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(secrets.randbits(62) | 1 << 62).not_valid_before(now - _SKEW)
                .not_valid_after(now + ROOT_TTL)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=True, crl_sign=True, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(ski, critical=False)
                .sign(key, hashes.SHA256()))
        return MeshCA(cert, key, trust_domain)

    @staticmethod
    def from_pem(cert_pem: bytes, key_pem: bytes, trust_domain: str = "cluster.local") -> MeshCA:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the mesh CA key is not an EC key")
        return MeshCA(x509.load_pem_x509_certificate(cert_pem), key, trust_domain)

    def spiffe_id(self, namespace: str, service_account: str) -> str:
        return f"spiffe://{self.trust_domain}/ns/{namespace}/sa/{service_account}"

    def issue(self, uri: str, ttl_s: float = DEFAULT_LEAF_TTL_S, now: float | None = None,
              ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A leaf for the SPIFFE ID ``uri`` valid ``ttl_s`` from ``now`` (Unix seconds)."""
        key = ec.generate_private_key(ec.SECP256R1())
        start = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(x509.Name([]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(start - _SKEW)
                .not_valid_after(start + dt.timedelta(seconds=ttl_s))
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=True, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=False, crl_sign=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        return cert, key


def _load_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """``load_cert_chain`` from memory (it only reads files): a private temporary file, removed at once."""
    fd, path = tempfile.mkstemp(prefix="pitwall-leaf-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(cert_pem + key_pem)
        ctx.load_cert_chain(path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _contexts(root_pem: bytes, cert_pem: bytes, key_pem: bytes) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """The client and server contexts of one leaf: both present it and require a peer under the root.
    Host names are not checked: the peer's identity is its URI SAN, which the caller checks."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for ctx in (client, server):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=root_pem.decode())
        _load_chain(ctx, cert_pem, key_pem)
    return client, server


@dataclass(eq=False)
class Leaf:
    """One workload's certificate, its key and its TLS contexts (built once, shared by connections)."""

    uri: str
    cert: x509.Certificate
    key_pem: bytes
    client_ctx: ssl.SSLContext
    server_ctx: ssl.SSLContext
    issued_at: float
    expires_at: float

    @property
    def cert_pem(self) -> bytes:
        return _pem_cert(self.cert)

    @property
    def rotate_at(self) -> float:
        return self.issued_at + (self.expires_at - self.issued_at) * ROTATE_AT

    @property
    def serial(self) -> int:
        return self.cert.serial_number


@dataclass
class LeafCache:
    """Leaves per SPIFFE ID, re-issued on the first use after half their life (``clock`` is injectable
    so rotation is testable without waiting)."""

    ca: MeshCA
    ttl_s: float = DEFAULT_LEAF_TTL_S
    clock: Callable[[], float] = time.time
    max_entries: int = 10_000
    _leaves: dict[str, Leaf] = field(default_factory=dict)
    issued_total: int = 0

    def for_workload(self, namespace: str, service_account: str) -> Leaf:
        return self.get(self.ca.spiffe_id(namespace, service_account))

    def get(self, uri: str) -> Leaf:
        now = self.clock()
        leaf = self._leaves.get(uri)
        if leaf is None or now >= leaf.rotate_at:
            leaf = self._issue(uri, now)
        return leaf

    def _issue(self, uri: str, now: float) -> Leaf:
        cert, key = self.ca.issue(uri, self.ttl_s, now)
        key_pem = _pem_key(key)
        client, server = _contexts(self.ca.cert_pem, _pem_cert(cert), key_pem)
        leaf = Leaf(uri, cert, key_pem, client, server, now, now + self.ttl_s)
        if len(self._leaves) >= self.max_entries and uri not in self._leaves:
            self._leaves.pop(next(iter(self._leaves)))  # oldest identity out: bounded memory
        self._leaves[uri] = leaf
        self.issued_total += 1
        return leaf


def peer_spiffe_id(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The URI SAN of a verified peer certificate (its SPIFFE ID), or None."""
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    for entry in cert.get("subjectAltName", ()):
        typ, value = entry[0], entry[1]
        if typ == "URI" and isinstance(value, str) and value.startswith("spiffe://"):
            return value
    return None


async def load_or_create_ca(client: KubeClient, trust_domain: str = "cluster.local") -> MeshCA:
    """The cluster's root from ``istio-system/istio-ca-secret``, created (with the namespace) by the
    first server; a server that loses the race reads the winner's."""
    with contextlib.suppress(NotFoundError):
        return _from_secret(await client.get("v1", "Secret", CA_SECRET, CA_NAMESPACE), trust_domain)
    with contextlib.suppress(AlreadyExists):
        await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CA_NAMESPACE}})
    ca = MeshCA.generate(trust_domain)
    data = {"ca-cert.pem": base64.b64encode(ca.cert_pem).decode(),
            "ca-key.pem": base64.b64encode(_pem_key(ca.key)).decode()}
    try:
        await client.create({"apiVersion": "v1", "kind": "Secret", "type": "istio.io/ca-root",
                             "metadata": {"name": CA_SECRET, "namespace": CA_NAMESPACE}, "data": data})
    except AlreadyExists:
        return _from_secret(await client.get("v1", "Secret", CA_SECRET, CA_NAMESPACE), trust_domain)
    return ca


def _from_secret(secret: dict[str, object], trust_domain: str) -> MeshCA:
    data = secret.get("data") or {}
    assert isinstance(data, dict)
    try:
        return MeshCA.from_pem(base64.b64decode(data["ca-cert.pem"]), base64.b64decode(data["ca-key.pem"]),
                               trust_domain)
    except (KeyError, ValueError) as e:
        raise ValueError(f"Secret {CA_NAMESPACE}/{CA_SECRET} holds no usable CA: {e}") from e
