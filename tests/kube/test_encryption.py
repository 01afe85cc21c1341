"""Secrets encrypted at rest (kube.encryption): kube-apiserver's EncryptionConfiguration and value prefixes.

The providers and the configuration are checked directly; the rest through
kubectl against a live `pitwall server` (create_app): the raw values in
SQLite and from the RevStore API, restarts with the same key, rotation by
`kubectl get -o json | kubectl replace -f -`, a wrong key answered with a
500 InternalError, and no plaintext in the audit log, the change events or
any file of the data directory.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pitwall.config import Settings, load_settings
from pitwall.core.errors import ConfigError
from pitwall.kube.encryption import DecryptError, load_encryption, local_encryption, parse_config
from pitwall.kube.wiring import build_encryption
from pitwall.storage.revstore.sqlite import SqliteRevStore
from tests.conftest import LiveServer

pytestmark = pytest.mark.timeout(120)

VALUE = "s3cr3t-plaintext-7f9a"
VALUE_B64 = base64.b64encode(VALUE.encode()).decode()
KEY = "/registry/secrets/default/db"


def _key(n: int) -> str:
    return base64.b64encode(bytes([n]) * 32).decode()


def _config(*providers: dict[str, Any], resources: tuple[str, ...] = ("secrets",)) -> dict[str, Any]:
    return {"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
            "resources": [{"resources": list(resources), "providers": list(providers)}]}


def _aes(kind: str, name: str, n: int) -> dict[str, Any]:
    return {kind: {"keys": [{"name": name, "secret": _key(n)}]}}


# ---- providers and configuration ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["aesgcm", "aescbc", "secretbox"])
def test_each_provider_seals_with_its_prefix_and_opens(kind: str) -> None:
    enc = parse_config(_config(_aes(kind, "k1", 1)))
    sealed = enc.seal("", "secrets", KEY, b'{"data":"x"}')
    assert sealed.startswith(f"k8s:enc:{kind}:v1:k1:".encode()) and b'"data"' not in sealed
    assert enc.unseal("", "secrets", KEY, sealed) == (b'{"data":"x"}', False)
    assert enc.seal("", "secrets", KEY, b"same") != enc.seal("", "secrets", KEY, b"same")  # fresh nonce/IV each time


def test_aesgcm_binds_the_value_to_its_store_key() -> None:
    enc = parse_config(_config(_aes("aesgcm", "k1", 1)))
    sealed = enc.seal("", "secrets", KEY, b"{}")
    with pytest.raises(DecryptError, match="message authentication failed"):
        enc.unseal("", "secrets", "/registry/secrets/default/other", sealed)


def test_first_provider_seals_all_open_and_others_are_stale() -> None:
    old = parse_config(_config(_aes("aesgcm", "k1", 1)))
    sealed = old.seal("", "secrets", KEY, b"{}")
    rotated = parse_config(_config(_aes("aesgcm", "k2", 2), _aes("aesgcm", "k1", 1)))
    assert rotated.unseal("", "secrets", KEY, sealed) == (b"{}", True)
    assert rotated.seal("", "secrets", KEY, b"{}").startswith(b"k8s:enc:aesgcm:v1:k2:")
    wrong = parse_config(_config({"aesgcm": {"keys": [{"name": "k1", "secret": _key(9)}]}}))
    with pytest.raises(DecryptError, match="message authentication failed"):
        wrong.unseal("", "secrets", KEY, sealed)
    other = parse_config(_config(_aes("aescbc", "k1", 1)))
    with pytest.raises(DecryptError, match="no matching prefix found"):
        other.unseal("", "secrets", KEY, sealed)


def test_plain_values_read_only_where_identity_is_listed() -> None:
    with_identity = parse_config(_config(_aes("aesgcm", "k1", 1), {"identity": {}}))
    assert with_identity.unseal("", "secrets", KEY, b'{"a":1}') == (b'{"a":1}', True)  # stale: sealed next write
    without = parse_config(_config(_aes("aesgcm", "k1", 1)))
    with pytest.raises(DecryptError, match="no matching prefix"):
        without.unseal("", "secrets", KEY, b'{"a":1}')
    decrypting = parse_config(_config({"identity": {}}, _aes("aesgcm", "k1", 1)))  # migrating away
    sealed = without.seal("", "secrets", KEY, b"{}")
    assert decrypting.unseal("", "secrets", KEY, sealed) == (b"{}", True)
    assert decrypting.seal("", "secrets", KEY, b"{}") == b"{}"


def test_resource_patterns_choose_what_is_encrypted() -> None:
    enc = parse_config({"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
                        "resources": [{"resources": ["configmaps", "deployments.apps"],
                                       "providers": [_aes("aescbc", "a", 1)]},
                                      {"resources": ["*.batch"], "providers": [_aes("aesgcm", "b", 2)]}]})
    assert enc.encrypts("", "configmaps") and enc.encrypts("apps", "deployments") and enc.encrypts("batch", "jobs")
    assert not enc.encrypts("", "secrets") and not enc.encrypts("apps", "replicasets")
    assert enc.seal("", "secrets", KEY, b"{}") == b"{}"


@pytest.mark.parametrize(("doc", "where"), [
    ({"kind": "EncryptionConfiguration"}, "apiVersion/kind"),
    (_config({"aesgcm": {"keys": [{"name": "k", "secret": "bm90IDMyIGJ5dGVz"}]}}),
     "resources[0].providers[0].aesgcm.keys[0].secret: aesgcm needs a key of 16 or 24 or 32 bytes, got 12"),
    (_config({"aescbc": {"keys": [{"name": "k", "secret": "%%%"}]}}),
     "resources[0].providers[0].aescbc.keys[0].secret: not valid base64"),
    (_config({"aesgcm": {"keys": [{"secret": _key(1)}]}}), "resources[0].providers[0].aesgcm.keys[0].name"),
    (_config({"kms": {"name": "x"}}), "resources[0].providers[0]: provider 'kms' is not supported"),
    (_config(), "resources[0].providers: at least one provider"),
])
def test_config_errors_name_the_setting(doc: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(doc)
    assert str(e.value).startswith("kube.encryption_config") and where in str(e.value)


def test_config_file_errors_name_the_key_and_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kube.encryption_config \(.*missing.yaml\): No such file"):
        load_encryption(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("resources: [")
    with pytest.raises(ConfigError, match=r"kube.encryption_config \(.*bad.yaml\): not YAML"):
        build_encryption(load_settings(data_dir=tmp_path, kube={"encryption_config": str(bad)}).kube, tmp_path)


def test_local_key_is_made_once_with_mode_0600_or_taken_from_the_env(tmp_path: Path) -> None:
    first = local_encryption(tmp_path, env={})
    key_file = tmp_path / "secrets.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key_file.read_bytes()) == 32
    sealed = first.seal("", "secrets", KEY, b"{}")
    assert sealed.startswith(b"k8s:enc:aesgcm:v1:key1:")
    assert local_encryption(tmp_path, env={}).unseal("", "secrets", KEY, sealed)[0] == b"{}"  # same key again
    from_env = local_encryption(tmp_path / "other", env={"PITWALL_SECRETS_KEY": _key(7)})
    assert not (tmp_path / "other" / "secrets.key").exists()
    with pytest.raises(DecryptError):
        from_env.unseal("", "secrets", KEY, sealed)
    with pytest.raises(ConfigError, match="PITWALL_SECRETS_KEY: an aesgcm key is 16, 24 or 32 bytes, got 3"):
        local_encryption(tmp_path, env={"PITWALL_SECRETS_KEY": "YWJj"})


# ---- through kubectl against a live server -----------------------------------------------------------------

def _settings(data: Path, config: dict[str, Any] | None = None) -> Settings:
    kube: dict[str, Any] = {}
    if config is not None:
        path = data.parent / f"enc-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump(config))
        kube["encryption_config"] = str(path)
    return load_settings(data_dir=data, listen="127.0.0.1:0", storage={"fsync": False}, kube=kube)


@pytest.fixture
def live() -> Iterator[list[LiveServer]]:
    """Servers started by a test, stopped at its end (each restart is a new one on the same data_dir)."""
    started: list[LiveServer] = []
    yield started
    for s in started:
        s.stop()


def _start(started: list[LiveServer], settings: Settings) -> LiveServer:
    for s in started:
        s.stop()
    srv = LiveServer(settings)
    srv.start()
    started.append(srv)
    return srv


def _kubectl(srv: LiveServer, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    home = Path(srv.settings.data_dir).parent
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "")}
    p = subprocess.run([kubectl, "--server", srv.url, f"--cache-dir={home / 'kcache'}", *args], input=stdin,
                       capture_output=True, text=True, timeout=60, env=env)
    assert not check or p.returncode == 0, p.stderr
    return p


def _create_secret(srv: LiveServer) -> None:
    _kubectl(srv, "create", "secret", "generic", "db", f"--from-literal=password={VALUE}")


def _password(srv: LiveServer) -> str:
    got = json.loads(_kubectl(srv, "get", "secret", "db", "-o", "json").stdout)
    return base64.b64decode(got["data"]["password"]).decode()


def _raw_sqlite(data: Path, key: str = KEY) -> bytes:
    """The current value of ``key``, straight from the SQLite file (server stopped)."""
    with sqlite3.connect(data / "revstore.db") as db:
        row = db.execute("SELECT value FROM kv_current WHERE key = ?", (key.encode(),)).fetchone()
    assert row is not None
    return bytes(row[0])


async def _raw_store(data: Path, key: str = KEY) -> bytes:
    store = SqliteRevStore(data / "revstore.db", compact_interval_s=None)
    await store.start()
    try:
        kv = await store.get(key)
    finally:
        await store.stop()
    assert kv is not None
    return kv.value


def _assert_no_plaintext(raw: bytes) -> None:
    assert VALUE.encode() not in raw and VALUE_B64.encode() not in raw and b"password" not in raw


@pytest.mark.slow
async def test_secret_is_sealed_in_the_store_and_reads_back_after_restart(
        tmp_path: Path, live: list[LiveServer], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    data = tmp_path / "data"
    settings = _settings(data)
    srv = _start(live, settings)
    _create_secret(srv)
    assert _password(srv) == VALUE
    assert "db" in _kubectl(srv, "get", "secrets").stdout  # the list path (object cache) decrypts too
    _kubectl(srv, "create", "configmap", "plain", "--from-literal=k=visible-config")
    srv.stop()
    for raw in (_raw_sqlite(data), await _raw_store(data)):
        assert raw.startswith(b"k8s:enc:aesgcm:v1:key1:")
        _assert_no_plaintext(raw)
    assert b"visible-config" in _raw_sqlite(data, "/registry/configmaps/default/plain")  # only Secrets by default
    assert stat.S_IMODE((data / "secrets.key").stat().st_mode) == 0o600
    srv = _start(live, settings)  # the same data_dir, so the same key
    assert _password(srv) == VALUE
    # a change of the Secret: recorded as a change event and in the history, neither showing the value
    _kubectl(srv, "apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "default"},
        "stringData": {"password": VALUE + "-2"}}))
    assert _password(srv) == VALUE + "-2"
    events: list[dict[str, Any]] = []
    for _ in range(100):
        r = httpx.get(srv.url + "/pagerduty/change_events", timeout=10)
        assert r.status_code == 200, r.text
        events = [e for e in r.json()["change_events"] if "secret/default/db" in e["summary"]]
        if len(events) >= 2:
            break
        time.sleep(0.1)
    assert len(events) >= 2, "the Secret's changes are change events"
    hist = httpx.get(srv.url + "/api/config/v1/history", params={"key": "secret/default/db", "source": "kubernetes"},
                     timeout=10)
    assert hist.status_code == 200 and "sha256:" in base64.b64decode(hist.json()["changes"][-1]["New"]).decode()
    audit: list[str] = []
    for _ in range(100):
        r = httpx.get(srv.url + "/loki/api/v1/query_range", params={"query": '{job="pitwall-audit"}', "limit": 1000},
                      headers={"X-Scope-OrgID": "pitwall-audit"}, timeout=10)
        assert r.status_code == 200, r.text
        audit = [v[1] for s in r.json()["data"]["result"] for v in s["values"]]
        if any("secrets" in ln for ln in audit):
            break
        time.sleep(0.1)
    assert any("secrets" in ln for ln in audit), "the Secret writes are audited"
    texts = [json.dumps(events), hist.text, "\n".join(audit), caplog.text]
    assert not any(VALUE in t or VALUE_B64 in t for t in texts)
    srv.stop()
    for f in data.rglob("*"):  # no file of the data directory holds the value, in the clear or base64
        if f.is_file():
            _assert_no_plaintext_in_file(f)


def _assert_no_plaintext_in_file(f: Path) -> None:
    raw = f.read_bytes()
    for v in (VALUE, VALUE + "-2"):
        assert v.encode() not in raw and base64.b64encode(v.encode()) not in raw, f


@pytest.mark.slow
async def test_key_rotation_by_replace_and_a_wrong_key_is_a_500(tmp_path: Path, live: list[LiveServer]) -> None:
    data = tmp_path / "data"
    srv = _start(live, _settings(data, _config(_aes("aesgcm", "key1", 1))))
    _create_secret(srv)
    srv.stop()
    assert _raw_sqlite(data).startswith(b"k8s:enc:aesgcm:v1:key1:")
    srv = _start(live, _settings(data, _config(_aes("aesgcm", "key2", 2), _aes("aesgcm", "key1", 1))))
    assert _password(srv) == VALUE  # read with the old key, still second in the list
    listed = _kubectl(srv, "get", "secrets", "-o", "json").stdout
    assert "replaced" in _kubectl(srv, "replace", "-f", "-", stdin=listed).stdout
    srv.stop()
    raw = _raw_sqlite(data)
    assert raw.startswith(b"k8s:enc:aesgcm:v1:key2:")
    _assert_no_plaintext(raw)
    srv = _start(live, _settings(data, _config(_aes("aesgcm", "key2", 2))))  # the old key is gone
    assert _password(srv) == VALUE
    srv = _start(live, _settings(data, _config(_aes("aesgcm", "key1", 1))))  # only the retired key
    p = _kubectl(srv, "get", "secret", "db", "-o", "json", check=False)
    assert p.returncode != 0 and "unable to transform key" in p.stderr and VALUE not in p.stderr + p.stdout
    r = httpx.get(srv.url + "/api/v1/namespaces/default/secrets/db", timeout=10)
    assert r.status_code == 500
    status = r.json()
    assert status["kind"] == "Status" and status["reason"] == "InternalError"
    assert status["message"].startswith(f"Internal error occurred: unable to transform key \"{KEY}\"")
    assert "no matching prefix found" in status["message"]


@pytest.mark.slow
async def test_secrets_stored_before_encryption_read_and_are_sealed_on_next_write(
        tmp_path: Path, live: list[LiveServer]) -> None:
    data = tmp_path / "data"
    srv = _start(live, _settings(data, _config({"identity": {}})))
    _create_secret(srv)
    srv.stop()
    assert VALUE_B64.encode() in _raw_sqlite(data)  # stored in the clear
    srv = _start(live, _settings(data))  # the default: aesgcm first, identity to read the old ones
    assert _password(srv) == VALUE
    listed = _kubectl(srv, "get", "secrets", "-o", "json").stdout
    _kubectl(srv, "replace", "-f", "-", stdin=listed)  # unchanged, yet written: the stored form was stale
    srv.stop()
    raw = _raw_sqlite(data)
    assert raw.startswith(b"k8s:enc:aesgcm:v1:key1:")
    _assert_no_plaintext(raw)
    srv = _start(live, _settings(data))
    assert _password(srv) == VALUE


def test_config_check_loads_the_encryption_config(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pitwall.cli.main import app

    enc = tmp_path / "enc.yaml"
    enc.write_text(yaml.safe_dump(_config({"aesgcm": {"keys": [{"name": "k", "secret": "YWJj"}]}})))
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text(yaml.safe_dump({"kube": {"encryption_config": str(enc)}}))
    bad = CliRunner().invoke(app, ["config", "check", str(cfg)])
    assert bad.exit_code == 1 and "aesgcm.keys[0].secret: aesgcm needs a key of 16 or 24 or 32 bytes, got 3" in bad.output
    enc.write_text(yaml.safe_dump(_config(_aes("aesgcm", "k", 1), {"identity": {}})))
    good = CliRunner().invoke(app, ["config", "check", str(cfg)])
    assert good.exit_code == 0 and "Secrets encrypted" in good.output, good.output


async def test_watch_and_cached_lists_see_decrypted_objects(tmp_path: Path) -> None:
    from pitwall.kube.wiring import build_kube

    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    api = build_kube(store, encryption=local_encryption(tmp_path, env={}))
    await api.start()
    try:
        c = api.client
        watch = c.watch("v1", "Secret", "default", resource_version=str(await store.revision()))
        await c.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "w", "namespace": "default"},
                        "data": {"k": VALUE_B64}})
        ev = await anext(aiter(watch))
        assert ev.type == "ADDED" and ev.object["data"] == {"k": VALUE_B64}
        await watch.aclose()  # type: ignore[attr-defined]
        assert [s["data"] for s in (await c.list("v1", "Secret", "default")).items] == [{"k": VALUE_B64}]
        rt = c.resource_type("v1", "Secret")
        for _ in range(2):  # the API's list path, served from the object cache (decrypted, in memory)
            items, _, _ = await api.resources.list_encoded(rt, "default")
            assert [obj["data"] for obj, _ in items] == [{"k": VALUE_B64}] and VALUE_B64.encode() in items[0][1]
        assert api.resources.cache.hits == 2  # the client's list (through the watch cache) decoded it once
        raw = await store.get("/registry/secrets/default/w")
        assert raw is not None and raw.value.startswith(b"k8s:enc:aesgcm:v1:key1:")
        _assert_no_plaintext(raw.value)
    finally:
        await api.stop()
        await store.stop()


def test_servers_sharing_a_store_are_warned_about_their_own_keys(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PITWALL_SECRETS_KEY", raising=False)
    kube = load_settings(data_dir=tmp_path).kube
    build_encryption(kube, tmp_path, "sqlite")
    assert "PITWALL_SECRETS_KEY" not in caplog.text
    build_encryption(kube, tmp_path, "etcd")
    assert "give every server the same PITWALL_SECRETS_KEY" in caplog.text
    caplog.clear()
    monkeypatch.setenv("PITWALL_SECRETS_KEY", _key(3))
    build_encryption(kube, tmp_path, "etcd")
    assert caplog.text == ""


async def test_config_history_skips_a_secret_no_key_opens_and_keeps_following(tmp_path: Path) -> None:
    from pitwall.kube import KubeError
    from pitwall.registry.kube_history import KubeConfigHistory
    from pitwall.storage.revstore import KeyValue

    def plain(kv: KeyValue) -> bytes:
        if kv.value.startswith(b"k8s:enc:"):
            raise KubeError(f'Internal error occurred: unable to transform key "{kv.key}": no matching prefix found')
        return kv.value

    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    hist = KubeConfigHistory(store, {"secret": "/registry/secrets/"}, None, plain=plain)
    await hist.start()
    try:
        await store.put("/registry/secrets/default/sealed", b"k8s:enc:aesgcm:v1:gone:xxxx")
        await store.put("/registry/secrets/default/ok", json.dumps({"data": {"k": VALUE_B64}}).encode())
        for _ in range(100):
            if await hist.of("secret/default/ok"):
                break
            await asyncio.sleep(0.05)
        recs = await hist.of("secret/default/ok")
        assert len(recs) == 1 and VALUE_B64.encode() not in (recs[0].new or b"")
        assert await hist.of("secret/default/sealed") == []
    finally:
        await hist.stop()
        await store.stop()


@pytest.mark.slow
@pytest.mark.peer
async def test_secret_is_sealed_in_a_real_etcd(tmp_path: Path) -> None:
    from pitwall.storage.revstore.etcd import EtcdRevStore
    from tests.kube.conftest import KubeServer
    from tests.storage.revstore.conftest import start_etcd

    etcd = start_etcd(tmp_path / "etcd")
    try:
        (tmp_path / "kube").mkdir()
        srv = KubeServer(tmp_path / "kube", etcd_url=etcd.url,
                         encryption=parse_config(_config(_aes("secretbox", "box1", 4))))
        srv.start()
        try:
            srv.kubectl("create", "secret", "generic", "db", f"--from-literal=password={VALUE}")
            got = json.loads(srv.kubectl("get", "secret", "db", "-o", "json").stdout)
            assert base64.b64decode(got["data"]["password"]).decode() == VALUE
        finally:
            srv.stop()
        store = EtcdRevStore([etcd.url], compact_interval_s=None)
        await store.start()
        try:
            kv = await store.get(KEY)
        finally:
            await store.stop()
        assert kv is not None and kv.value.startswith(b"k8s:enc:secretbox:v1:box1:")
        _assert_no_plaintext(kv.value)
    finally:
        etcd.stop()
