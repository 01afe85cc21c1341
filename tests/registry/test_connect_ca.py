"""Consul's Connect CA endpoints on a live pitwall: roots and leaf certificates in Consul's JSON shapes,
read with py-consul (roots) and httpx (the agent endpoints py-consul does not wrap)."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor

import consul
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.conftest import LiveServer
from tests.registry.conftest import ADMIN

pytestmark = pytest.mark.timeout(60)


def get(server: LiveServer, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.port}{path}", headers={"X-Consul-Token": ADMIN}, timeout=10)


def test_roots_in_consuls_shape(c: consul.Consul, server: LiveServer) -> None:
    roots = c.connect.ca.roots()
    assert roots["TrustDomain"] == "cluster.local"
    (root,) = roots["Roots"]
    assert root["Active"] is True and roots["ActiveRootID"] == root["ID"]
    cert = x509.load_pem_x509_certificate(root["RootCert"].encode())
    der = cert.public_bytes(serialization.Encoding.DER)
    assert root["ID"] == ":".join(f"{b:02x}" for b in hashlib.sha1(der).digest())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert root["SerialNumber"] == cert.serial_number and 0 < root["SerialNumber"] < 2**64
    assert root["NotAfter"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert root["IntermediateCerts"] == [] and root["PrivateKeyType"] == "ec"
    agent = get(server, "/v1/agent/connect/ca/roots")
    assert agent.status_code == 200 and agent.json() == roots
    assert agent.headers["X-Consul-Index"] == str(root["ModifyIndex"])
    pem = get(server, "/v1/connect/ca/roots?pem=true")
    assert pem.headers["content-type"] == "application/pem-certificate-chain"
    assert x509.load_pem_x509_certificate(pem.content) == cert


def test_leaf_is_a_spiffe_certificate_under_the_root(c: consul.Consul, server: LiveServer) -> None:
    root = x509.load_pem_x509_certificate(c.connect.ca.roots()["Roots"][0]["RootCert"].encode())
    r = get(server, "/v1/agent/connect/ca/leaf/web")
    assert r.status_code == 200, r.text
    leaf = r.json()
    assert leaf["Service"] == "web" and leaf["ServiceURI"] == "spiffe://cluster.local/ns/default/sa/web"
    cert = x509.load_pem_x509_certificate(leaf["CertPEM"].encode())
    cert.verify_directly_issued_by(root)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [leaf["ServiceURI"]]
    key = serialization.load_pem_private_key(leaf["PrivateKeyPEM"].encode(), password=None)
    assert key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
        == cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(hours=24) <= life <= dt.timedelta(hours=24, minutes=2)  # 24 h, started a minute early
    assert leaf["ValidBefore"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert leaf["SerialNumber"] == ":".join(f"{b:02x}" for b in cert.serial_number.to_bytes(
        (cert.serial_number.bit_length() + 7) // 8, "big"))
    # Cached until 2/3 of its life: the same leaf again; another namespace is another identity.
    assert get(server, "/v1/agent/connect/ca/leaf/web").json()["SerialNumber"] == leaf["SerialNumber"]
    other = get(server, "/v1/agent/connect/ca/leaf/web?ns=prod").json()
    assert other["ServiceURI"] == "spiffe://cluster.local/ns/prod/sa/web"


def test_bad_service_name_is_refused_in_consuls_text(server: LiveServer) -> None:
    r = get(server, "/v1/agent/connect/ca/leaf/Not_A_Name")
    assert r.status_code == 400 and "Invalid service name" in r.text
    assert r.headers["content-type"].startswith("text/plain")


def _held(server: LiveServer) -> float:
    m = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text
    return next(float(x.split()[-1]) for x in m.splitlines() if x.startswith("pitwall_consul_blocking_queries "))


@pytest.mark.parametrize("path", ["/v1/agent/connect/ca/roots", "/v1/agent/connect/ca/leaf/web"])
def test_connect_reads_block_on_their_index(server: LiveServer, path: str) -> None:
    """``?index=`` of the current roots or leaf is held (not answered at once) and answered at ``wait``
    with the same index and the same certificate; an older index answers at once."""
    first = get(server, path)
    idx = first.headers["X-Consul-Index"]
    base = _held(server)
    with ThreadPoolExecutor(1) as pool:
        t0 = time.monotonic()
        held = pool.submit(get, server, f"{path}?index={idx}&wait=2s")
        deadline = time.monotonic() + 10
        while _held(server) < base + 1 and not held.done():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert not held.done()  # held, not answered at once
        r = held.result(20)
    assert r.status_code == 200 and time.monotonic() - t0 >= 2.0
    assert r.headers["X-Consul-Index"] == idx and r.json() == first.json()
    assert get(server, f"{path}?index={int(idx) - 1}&wait=30s").headers["X-Consul-Index"] == idx
