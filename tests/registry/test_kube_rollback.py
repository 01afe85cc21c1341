"""ConfigMap and Secret diff and rollback: kubectl changes them, `pitwall config diff|rollback` act, kubectl reads
back the restored data (a Secret's real old value, never shown on the way)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from pitwall.cli.main import app
from pitwall.config import load_settings
from pitwall.kube import KubeAPI
from pitwall.kube.wiring import build_kube
from pitwall.registry.kube_history import KubeConfigHistory
from pitwall.storage.revstore import Compacted
from pitwall.storage.revstore.sqlite import SqliteRevStore
from tests.conftest import LiveServer
from tests.controllers.conftest import eventually
from tests.registry.test_kube_history import _history, _kubectl

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    s = load_settings(data_dir=tmp_path_factory.mktemp("kube-rollback") / "data", listen="127.0.0.1:0",
                      storage={"fsync": False})
    srv = LiveServer(s)
    srv.start()
    yield srv
    srv.stop()


def kubectl_get(srv: LiveServer, kind: str, name: str, tmp: Path) -> dict[str, Any]:
    exe = shutil.which("kubectl")
    if exe is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run([exe, "--server", srv.url, f"--cache-dir={tmp / 'kcache'}", "get", kind, name, "-o", "json"],
                         capture_output=True, text=True, timeout=30,
                         env={"HOME": str(tmp), "PATH": os.environ.get("PATH", "")})
    assert out.returncode == 0, out.stderr
    obj: dict[str, Any] = json.loads(out.stdout)
    return obj


def cli(*args: str) -> Any:
    out = CliRunner().invoke(app, ["config", *args])
    assert out.exit_code == 0, out.output
    return out


def test_configmap_diff_and_rollback(server: LiveServer, tmp_path: Path) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web", "namespace": "default"},
          "data": {"timeout": "5s", "mode": "fast"}}
    _kubectl(server, cm, tmp_path)
    _kubectl(server, {**cm, "data": {"timeout": "10s", "retries": "3"}}, tmp_path)
    r1, r2 = (c["Revision"] for c in _history(server, "configmap/default/web", 2))
    out = cli("diff", "configmap/default/web", str(r1), str(r2), "--server", server.url, "-o", "json")
    changes = {c["Key"]: [None if v is None else base64.b64decode(v).decode() for v in (c["Old"], c["New"])]
               for c in json.loads(out.stdout)}
    assert changes == {"mode": ["fast", None], "retries": [None, "3"], "timeout": ["5s", "10s"]}

    out = cli("rollback", "configmap/default/web", "--to", str(r1), "--server", server.url)
    assert f"restored to its value at revision {r1}" in out.stdout
    assert kubectl_get(server, "configmap", "web", tmp_path)["data"] == {"timeout": "5s", "mode": "fast"}
    last = _history(server, "configmap/default/web", 3)[-1]  # the rollback is itself a recorded change
    assert last["Who"].startswith("pitwall-config-rollback")


def test_secret_rollback_restores_the_real_value_and_diff_shows_digests(server: LiveServer, tmp_path: Path) -> None:
    s = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "default"},
         "stringData": {"password": "hunter2-very-secret"}}
    _kubectl(server, s, tmp_path)
    _kubectl(server, {**s, "stringData": {"password": "correct-horse-battery"}}, tmp_path)
    r1, r2 = (c["Revision"] for c in _history(server, "secret/default/db", 2))
    for fmt in ("json", "table"):
        out = cli("diff", "secret/default/db", str(r1), str(r2), "--server", server.url, "-o", fmt)
        shown = out.stdout if fmt == "table" else json.dumps(
            [base64.b64decode(c["Old"]).decode() + base64.b64decode(c["New"]).decode()
             for c in json.loads(out.stdout)])
        assert "sha256:" in shown and "hunter2" not in shown and "correct-horse" not in shown

    cli("rollback", "secret/default/db", "--to", str(r1), "--server", server.url)
    data = kubectl_get(server, "secret", "db", tmp_path)["data"]
    assert base64.b64decode(data["password"]) == b"hunter2-very-secret"
    # the rollback's own history record shows digests only
    assert "hunter2" not in json.dumps(_history(server, "secret/default/db", 3))


def test_rollback_to_before_it_existed_deletes_and_bad_requests_harm_nothing(server: LiveServer,
                                                                             tmp_path: Path) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tmp", "namespace": "default"},
          "data": {"a": "1"}}
    _kubectl(server, cm, tmp_path)
    _kubectl(server, {**cm, "data": {"a": "2"}}, tmp_path)
    r1 = _history(server, "configmap/default/tmp", 2)[0]["Revision"]
    base = server.url + "/api/config/v1/rollback"
    r = httpx.post(base, params={"key": "configmap/default/tmp", "to": r1 - 1}, timeout=10)
    assert r.status_code == 404 and "no recorded change" in r.text
    r = httpx.post(base, params={"key": "configmap/default/tmp", "to": "x"}, timeout=10)
    assert r.status_code == 400
    r = httpx.post(base, params={"key": "configmap/tmp", "to": r1}, timeout=10)
    assert r.status_code == 400 and "configmap/NAMESPACE/NAME" in r.text
    r = httpx.post(base, params={"key": "configmap/default/tmp", "to": 10**9}, timeout=10)
    assert r.status_code == 400 and "newer" in r.text
    assert kubectl_get(server, "configmap", "tmp", tmp_path)["data"] == {"a": "2"}  # nothing changed

    r = httpx.get(server.url + "/api/config/v1/diff", params={"key": "configmap/x", "from": 1, "to": 2}, timeout=10)
    assert r.status_code == 400


@pytest.fixture
async def history(tmp_path: Path) -> AsyncIterator[tuple[KubeAPI, KubeConfigHistory, SqliteRevStore]]:
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    api = build_kube(store)
    await api.start()
    h = KubeConfigHistory(store, {k.lower(): api.client.resource_type("v1", k).prefix for k in ("ConfigMap", "Secret")},
                          None, kube=api.client)
    await h.start()
    try:
        yield api, h, store
    finally:
        await h.stop()
        await api.stop()
        await store.stop()


async def test_after_compaction_a_configmap_comes_back_from_its_record_a_secret_does_not(
        history: tuple[KubeAPI, KubeConfigHistory, SqliteRevStore]) -> None:
    api, h, store = history
    c = api.client
    await c.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "default"},
                    "data": {"k": "old"}})
    await c.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
                    "data": {"k": base64.b64encode(b"old").decode()}})
    for kind, name, value in (("ConfigMap", "cm", "new"), ("Secret", "s", base64.b64encode(b"new").decode())):
        cur = await c.get("v1", kind, name, "default")
        cur["data"] = {"k": value}
        await c.update(cur)

    async def recorded() -> bool:
        return len(await h.of("configmap/default/cm")) == 2 and len(await h.of("secret/default/s")) == 2
    await eventually(recorded)
    r_cm, r_s = (await h.of("configmap/default/cm"))[0].revision, (await h.of("secret/default/s"))[0].revision
    await store.compact((await store.range("", limit=1)).revision)
    with pytest.raises(Compacted):
        await h.rollback("secret/default/s", r_s, who="test")
    assert (await c.get("v1", "Secret", "s", "default"))["data"]["k"] == base64.b64encode(b"new").decode()
    done = await h.rollback("configmap/default/cm", r_cm, who="test")
    assert not done.deleted and (await c.get("v1", "ConfigMap", "cm", "default"))["data"] == {"k": "old"}
