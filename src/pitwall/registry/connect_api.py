"""Consul's Connect CA endpoints over pitwall's mesh CA: ``/v1/agent/connect/ca/roots``,
``/v1/connect/ca/roots`` and ``/v1/agent/connect/ca/leaf/<service>``, in Consul's JSON shapes.

The CA is the mesh's (``traffic.meshca``: one root for the cluster, leaves
24 h, re-issued at 2/3 of their life). A Consul service ``web`` gets the
identity Consul on Kubernetes requires of it, its ServiceAccount of the same
name: ``spiffe://cluster.local/ns/<ns>/sa/web`` (``ns`` query parameter,
``default`` without it), which is also what the mesh's AuthorizationPolicy
``principals`` name. ``/v1/agent/connect/ca/roots`` and ``.../leaf/<service>``
block as Consul's do (``?index=`` of the roots or the leaf, ``X-Consul-Index``):
held in ``ParkHeldQueries`` and re-read every ``RECHECK_S`` (the mesh keeps
its CA and re-issues leaves in memory: no store change marks a rotation).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Request, Response

from pitwall.registry.api import json_response
from pitwall.registry.blocking import View, WatchHub
from pitwall.registry.model import ConsulError

__all__ = ["ConnectCA", "connect_routes"]

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # a ServiceAccount (DNS label) name


class ConnectCA(Protocol):
    """What the endpoints need of the mesh CA (``traffic.meshtls.MeshNode`` provides it)."""

    trust_domain: str

    def root_certificate(self) -> x509.Certificate | None: ...

    def leaf_for(self, namespace: str, service_account: str) -> tuple[x509.Certificate, bytes, str]:
        """The workload's current certificate, its private key (PEM) and its SPIFFE ID."""
        ...


def _colon_hex(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def _time(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pem(c: x509.Certificate) -> str:
    return c.public_bytes(serialization.Encoding.PEM).decode()


def _index(c: x509.Certificate) -> int:
    """A stable index for a certificate (Consul's is a Raft index): its start time."""
    return int(c.not_valid_before_utc.timestamp())


def _root(ca: ConnectCA) -> x509.Certificate:
    root = ca.root_certificate()
    if root is None:
        raise ConsulError(500, "Connect CA not initialized yet")
    return root


def roots_json(ca: ConnectCA) -> dict[str, object]:
    """Consul's ``IndexedCARoots``."""
    root = _root(ca)
    rid = _colon_hex(hashlib.sha1(root.public_bytes(serialization.Encoding.DER)).digest())
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    idx = _index(root)
    return {"ActiveRootID": rid, "TrustDomain": ca.trust_domain, "Roots": [{
        "ID": rid, "Name": "pitwall mesh root CA", "SerialNumber": root.serial_number,
        "SigningKeyID": _colon_hex(ski), "ExternalTrustDomain": ca.trust_domain,
        "NotBefore": _time(root.not_valid_before_utc), "NotAfter": _time(root.not_valid_after_utc),
        "RootCert": _pem(root), "IntermediateCerts": [], "Active": True, "PrivateKeyType": "ec",
        "PrivateKeyBits": 256, "CreateIndex": idx, "ModifyIndex": idx}]}


def _leaf_json(c: ConnectCA, service: str, ns: str) -> tuple[dict[str, object], int]:
    try:
        cert, key_pem, uri = c.leaf_for(ns, service)
    except RuntimeError as e:  # the mesh CA has not started
        raise ConsulError(500, str(e)) from None
    idx = _index(cert)
    return {"SerialNumber": _colon_hex(cert.serial_number.to_bytes((cert.serial_number.bit_length() + 7) // 8,
                                                                   "big")),
            "CertPEM": _pem(cert), "PrivateKeyPEM": key_pem.decode(), "Service": service, "ServiceURI": uri,
            "ValidAfter": _time(cert.not_valid_before_utc), "ValidBefore": _time(cert.not_valid_after_utc),
            "Namespace": ns, "CreateIndex": idx, "ModifyIndex": idx}, idx


def connect_routes(r: APIRouter, ca: ConnectCA | None, hub: WatchHub | None = None) -> None:
    """Adds the Connect CA routes to the Consul router ``r`` (errors answer in Consul's plain text); with
    ``hub`` the agent endpoints' blocking reads are held in ``ParkHeldQueries``."""

    def need() -> ConnectCA:
        if ca is None:
            raise ConsulError(500, "Connect must be enabled in order to use this endpoint")
        return ca

    # The endpoints' views (no watched store prefix: re-read every RECHECK_S while held).
    def roots_view(_: str, q: Any) -> View:
        async def read() -> tuple[dict[str, object], int]:
            c = need()
            return roots_json(c), _index(_root(c))
        need()
        return (), read

    def leaf_view(service: str, q: Any) -> View:
        ns = q.get("ns") or "default"
        for what, v in (("service name", service), ("namespace", ns)):
            if not _NAME.match(v):
                raise ConsulError(400, f"Invalid {what} {v!r}: a DNS label (lower-case letters, digits, '-')")
        need()

        async def read() -> tuple[dict[str, object], int]:
            return _leaf_json(need(), service, ns)
        return (), read
    if hub is not None:
        hub.parks.add("/v1/agent/connect/ca/roots", roots_view)
        hub.parks.add("/v1/agent/connect/ca/leaf/", leaf_view)

    @r.get("/v1/agent/connect/ca/roots")
    async def agent_roots(request: Request) -> Response:
        body, idx = await roots_view("", request.query_params)[1]()
        return json_response(body, idx)

    @r.get("/v1/connect/ca/roots")
    async def roots(request: Request) -> Response:
        c = need()
        if request.query_params.get("pem", "").lower() in ("1", "true"):
            return Response(_pem(_root(c)).encode(), media_type="application/pem-certificate-chain")
        return json_response(roots_json(c), _index(_root(c)))

    @r.get("/v1/agent/connect/ca/leaf/{service}")
    async def leaf(service: str, request: Request) -> Response:
        body, idx = await leaf_view(service, request.query_params)[1]()
        return json_response(body, idx)
