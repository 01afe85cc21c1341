"""A live Kubernetes API (uvicorn, SQLite RevStore, bearer auth) and a kubectl pointed at it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from pitwall.core.auth import BearerAuth, Principal
from pitwall.kube import KubeAPI
from pitwall.kube.encryption import Encryption
from pitwall.kube.wiring import build_kube
from pitwall.storage.revstore import RevStore
from pitwall.storage.revstore.sqlite import SqliteRevStore
from tests.conftest import free_port
from tests.kube_fixture import started_kube

TOKEN = "kube-test-token-0123456789"
KUBECTL = "/usr/bin/kubectl"


def make_app(data: Path, etcd_url: str = "", encryption: Encryption | None = None) -> tuple[FastAPI, dict[str, Any]]:
    holder: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store: RevStore
        if etcd_url:
            from pitwall.storage.revstore.etcd import EtcdRevStore

            store = EtcdRevStore([etcd_url], compact_interval_s=None)
        else:
            store = SqliteRevStore(data / "state.db", compact_interval_s=None)
        await store.start()
        kube: KubeAPI = holder["kube"]
        kube.store = store
        kube.resources.store = store
        if kube.watch_cache is not None:
            kube.watch_cache.store = store
        await kube.start()
        try:
            yield
        finally:
            await kube.stop()
            await store.stop()

    # the store object is replaced at start, inside the server's loop
    kube = build_kube(SqliteRevStore(data / "unused.db"), encryption=encryption)
    holder["kube"] = kube
    app = FastAPI(lifespan=lifespan)
    kube.install(app)
    app.add_middleware(BearerAuth, tokens=[(TOKEN, Principal("test", frozenset({"read", "write", "admin"}), None))])
    return app, holder


class KubeServer:
    def __init__(self, data: Path, etcd_url: str = "", encryption: Encryption | None = None) -> None:
        self.port = free_port()
        # kubectl sends bearer tokens only over TLS: a self-signed certificate, skipped by the kubeconfig
        self.url = f"https://127.0.0.1:{self.port}"
        cert, key = data / "tls.crt", data / "tls.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        self.app, self.holder = make_app(data, etcd_url, encryption)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=None,
                                                    lifespan="on", ssl_certfile=str(cert), ssl_keyfile=str(key),
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.kubeconfig = data / "kubeconfig"
        self.cache = data / "kcache"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "pitwall",
            "clusters": [{"name": "pitwall", "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}],
            "users": [{"name": "pitwall", "user": {"token": TOKEN}}],
            "contexts": [{"name": "pitwall", "context": {"cluster": "pitwall", "user": "pitwall",
                                                          "namespace": "default"}}],
        }))

    @property
    def kube(self) -> KubeAPI:
        k: KubeAPI = self.holder["kube"]
        return k

    def start(self) -> None:
        self.thread.start()
        for _ in range(200):
            try:
                if httpx.get(self.url + "/readyz", headers=self.headers(), timeout=1, verify=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("kube server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)

    def __enter__(self) -> Self:
        """Started; stopped on exit."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 30) -> subprocess.CompletedProcess[str]:
        if not os.path.exists(KUBECTL):
            pytest.skip(f"kubectl is not installed at {KUBECTL}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["HOME"] = str(self.kubeconfig.parent)
        cmd = [KUBECTL, f"--cache-dir={self.cache}", *args]
        p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, env=env)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p


@pytest.fixture(scope="module")
def kube_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeServer]:
    with KubeServer(tmp_path_factory.mktemp("kube")) as s:
        yield s


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    """A started KubeAPI over a fresh SQLite store, in the test's loop (no HTTP)."""
    async with started_kube(tmp_path) as api:
        yield api
