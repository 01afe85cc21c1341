"""TLS certificate reload on the real server: after SIGHUP or ``POST /-/reload`` new connections
present the new certificate; a pair that does not load fails the reload and the old one stays."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import free_port, start_pitwall_process, stop_pitwall_process, wait_ready


def _make_cert(dir_: Path, name: str) -> tuple[Path, Path]:
    cert, key = dir_ / f"{name}.crt", dir_ / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    return cert, key


def _file_fingerprint(cert: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()


def _served_fingerprint(port: int) -> str:
    """The certificate a new TLS connection is shown."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def _install(src: tuple[Path, Path], dst: tuple[Path, Path]) -> None:
    for s, d in zip(src, dst, strict=True):
        tmp = d.with_suffix(".tmp")
        tmp.write_bytes(s.read_bytes())
        os.replace(tmp, d)


@pytest.mark.timeout(180)
def test_certificate_reload_on_sighup_and_reload_endpoint(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    one, two, three = (_make_cert(certs, n) for n in ("one", "two", "three"))
    served = (tmp_path / "tls.crt", tmp_path / "tls.key")
    _install(one, served)
    cfg = tmp_path / "pitwall.yaml"
    gateway_port = free_port()  # the gateway's listener takes the same pair (issue 23: TLS on every listener)
    cfg.write_text(yaml.safe_dump({"tls_cert_file": str(served[0]), "tls_key_file": str(served[1]),
                                   "storage": {"fsync": False}, "gateway": {"listen": f"127.0.0.1:{gateway_port}"}}))
    port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    proc = start_pitwall_process(data, port, config=cfg)
    url = f"https://127.0.0.1:{port}"
    try:
        wait_ready(url, proc=proc, verify=False)
        assert _served_fingerprint(port) == _file_fingerprint(one[0])
        assert _served_fingerprint(gateway_port) == _file_fingerprint(one[0])
        no_route = httpx.get(f"https://127.0.0.1:{gateway_port}/x", verify=ssl.create_default_context(cafile=one[0]),
                             timeout=10)
        assert no_route.status_code == 404 and no_route.json() == {"message": "no Route matched with those values"}

        # SIGHUP: the reload runs in the background; new handshakes show the new certificate once it has.
        _install(two, served)
        os.kill(proc.pid, signal.SIGHUP)
        seen = ""
        for _ in range(200):
            seen = _served_fingerprint(port)
            if seen == _file_fingerprint(two[0]):
                break
            time.sleep(0.05)
        assert seen == _file_fingerprint(two[0])

        # POST /-/reload: applied by the time it answers.
        _install(three, served)
        with httpx.Client(base_url=url, verify=False, timeout=30) as c:
            assert c.post("/-/reload").status_code == 200
            assert _served_fingerprint(port) == _file_fingerprint(three[0])
            assert _served_fingerprint(gateway_port) == _file_fingerprint(three[0])

            # A key that does not match its certificate: the reload fails, the old pair stays.
            _install((one[0], two[1]), served)
            r = c.post("/-/reload")
            assert r.status_code == 500 and "tls_cert_file" in r.text, r.text
            assert _served_fingerprint(port) == _file_fingerprint(three[0])
            assert _served_fingerprint(gateway_port) == _file_fingerprint(three[0])
            assert c.get("/-/healthy").status_code == 200
    finally:
        stop_pitwall_process(proc)
