"""Environments as KV prefixes (config/<env>/<service>/...): py-consul writes them, `pitwall config diff-env`
lists keys only in one environment and keys whose values differ."""

from __future__ import annotations

import base64
import json
from typing import Any

import consul
import httpx
import pytest
from typer.testing import CliRunner

from pitwall.cli.main import app
from tests.conftest import LiveServer
from tests.registry.conftest import ADMIN, READER

pytestmark = pytest.mark.timeout(60)

STAGING = {"web/timeout": "5s", "web/replicas": "2", "web/debug": "true", "db/pool": "10", "db/host": "db-staging"}
PROD = {"web/timeout": "5s", "web/replicas": "6", "web/cdn": "on", "db/pool": "50", "db/host": "db-prod"}


@pytest.fixture(scope="module", autouse=True)
def envs(server: LiveServer) -> None:
    c = consul.Consul(host="127.0.0.1", port=server.port, token=ADMIN)
    for env, keys in (("staging", STAGING), ("prod", PROD)):
        for k, v in keys.items():
            assert c.kv.put(f"config/{env}/{k}", v)
    assert c.kv.put("config/prodx/web/timeout", "1s")  # a neighbouring prefix must not leak in


def diff_env(server: LiveServer, *args: str) -> dict[str, Any]:
    out = CliRunner().invoke(app, ["config", "diff-env", *args, "--server", server.url, "--token", READER,
                                   "-o", "json"])
    assert out.exit_code == 0, out.output
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_diff_env_lists_keys_only_in_each_and_different_values(server: LiveServer) -> None:
    d = diff_env(server, "staging", "prod")
    assert d["only_in_a"] == ["web/debug"] and d["only_in_b"] == ["web/cdn"]
    different = {x["Key"]: (base64.b64decode(x["A"]).decode(), base64.b64decode(x["B"]).decode())
                 for x in d["different"]}
    assert different == {"db/host": ("db-staging", "db-prod"), "db/pool": ("10", "50"), "web/replicas": ("2", "6")}


def test_diff_env_of_one_service_and_the_table(server: LiveServer) -> None:
    d = diff_env(server, "staging", "prod", "--service", "db")
    assert d["only_in_a"] == [] and d["only_in_b"] == []
    assert [x["Key"] for x in d["different"]] == ["db/host", "db/pool"]
    out = CliRunner().invoke(app, ["config", "diff-env", "prod", "staging", "--service", "web", "--server", server.url,
                                   "--token", READER])
    assert out.exit_code == 0, out.output
    assert "only in prod" in out.stdout and "web/cdn" in out.stdout and "differs" in out.stdout
    assert "db/" not in out.stdout


def test_diff_env_bad_names_and_auth(server: LiveServer) -> None:
    url = server.url + "/api/config/v1/diff-env"
    h = {"Authorization": f"Bearer {READER}"}
    r = httpx.get(url, params={"a": "staging/web", "b": "prod"}, headers=h, timeout=10)
    assert r.status_code == 400 and "without '/'" in r.text
    r = httpx.get(url, params={"a": "", "b": "prod"}, headers=h, timeout=10)
    assert r.status_code == 400
    r = httpx.get(url, params={"a": "staging", "b": "prod"}, timeout=10)
    assert r.status_code == 401
    r = httpx.get(url, params={"a": "staging", "b": "nowhere"}, headers=h, timeout=10)
    assert r.status_code == 200 and r.json()["only_in_b"] == [] and len(r.json()["only_in_a"]) == len(STAGING)
