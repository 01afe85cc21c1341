"""A live pitwall (control plane on, so the Consul API is served) and py-consul clients for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import consul
import pytest

from pitwall.config import load_settings
from tests.conftest import LiveServer

ADMIN = "consul-admin-token-0123456789"
READER = "consul-reader-token-0123456789"


def consul_server(data: Path, **state: Any) -> LiveServer:
    s = load_settings(data_dir=data, listen="127.0.0.1:0", storage={"fsync": False},
                      state=state or {"backend": "sqlite"},
                      auth_tokens=[{"token": ADMIN, "name": "ops", "scopes": ["read", "write"]},
                                   {"token": READER, "name": "viewer", "scopes": ["read"]}])
    srv = LiveServer(s)
    srv.start()
    return srv


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = consul_server(tmp_path_factory.mktemp("consul") / "data")
    yield srv
    srv.stop()


def client_for(srv: LiveServer, token: str = ADMIN) -> consul.Consul:
    c = consul.Consul(host="127.0.0.1", port=srv.port, token=token)
    # py-consul sends its token per call but forgets it on some (txn.put): as CONSUL_HTTP_TOKEN does for
    # the Go client, the session carries it on every request.
    c.http.session.headers["X-Consul-Token"] = token
    return c


@pytest.fixture
def c(server: LiveServer) -> consul.Consul:
    return client_for(server)
