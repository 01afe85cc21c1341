"""python-gitlab reads environments and deployments from a live pitwall and stops an environment (its
``on_stop`` job runs); ``/api/pipelines/v1/dora`` and ``pitwall pipelines dora`` report the deployments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import gitlab
import httpx
import pytest

from pitwall.config import load_settings
from tests.conftest import LiveServer
from tests.pipelines.conftest import make_repo

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

TOKEN = "gitlab-env-token-0123456789"
ROUTING_KEY = "SH0PKEY0000000000000000000000001"
# a PagerDuty-style service named after the project: DORA joins its incidents with the project's deployments
INCIDENTS = {"users": [{"id": "POPS001", "name": "Ops", "email": "ops@example.com"}],
             "escalation_policies": [{"id": "PEPOL01", "name": "ops", "escalation_rules": [
                 {"escalation_delay_in_minutes": 10, "targets": [{"type": "user_reference", "id": "POPS001"}]}]}],
             "services": [{"id": "PSHOP01", "name": "shop", "escalation_policy": "PEPOL01",
                           "integration_keys": [ROUTING_KEY]}]}

CI = """
stages: [deploy, cleanup]
deploy:
  stage: deploy
  script: [test -z "$FAIL_DEPLOY", echo deployed]
  environment:
    name: production
    url: https://shop.example.com
    on_stop: teardown
teardown:
  stage: cleanup
  when: manual
  script: [echo teardown]
  environment: {name: production, action: stop}
"""


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PITWALL_URL": url, "PITWALL_TOKEN": TOKEN}
    return subprocess.run([sys.executable, "-m", "pitwall.cli.main", "pipelines", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    s = load_settings(data_dir=tmp_path_factory.mktemp("env") / "data", listen="127.0.0.1:0",
                      storage={"fsync": False}, incidents=INCIDENTS,
                      auth_tokens=[{"token": TOKEN, "name": "ci", "scopes": ["read", "write"]}])
    srv = LiveServer(s)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def runs(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """A failed deployment, then a successful one, of the same repository."""
    repo = make_repo(tmp_path_factory.mktemp("repo") / "shop", {".gitlab-ci.yml": CI})
    out = []
    for extra in (["--var", "FAIL_DEPLOY=1"], []):
        r = _cli(server.url, "run", "--repo", str(repo), *extra, "--wait", "--output", "json")
        out.append(json.loads(r.stdout))
    assert [p["status"] for p in out] == ["failed", "success"], out  # a manual job may be left unplayed
    return out


def test_environments_and_deployments(server: LiveServer, runs: list[dict[str, Any]]) -> None:
    gl = gitlab.Gitlab(server.url + "/gitlab", private_token=TOKEN)
    project = gl.projects.get(runs[0]["project_id"], lazy=True)
    [env] = project.environments.list(get_all=True)
    assert (env.name, env.slug, env.state, env.external_url) == (
        "production", "production", "available", "https://shop.example.com")
    assert [e.name for e in project.environments.list(states="stopped")] == []
    deps = project.deployments.list(get_all=True)
    assert [(d.status, d.sha) for d in deps] == [("failed", runs[0]["sha"]), ("success", runs[1]["sha"])]
    assert deps[1].environment["name"] == "production" and deps[1].deployable["name"] == "deploy"
    assert deps[1].deployable["pipeline"]["id"] == runs[1]["id"]
    assert [d.iid for d in project.deployments.list(get_all=True, order_by="id", sort="desc")] == [2, 1]
    assert [d.id for d in project.deployments.list(status="failed")] == [deps[0].id]
    assert project.deployments.get(deps[1].id).status == "success"
    full = project.environments.get(env.id)
    assert full.last_deployment["id"] == deps[1].id and full.last_deployment["status"] == "success"
    with pytest.raises(gitlab.GitlabGetError) as e:
        project.deployments.get(9999)
    assert e.value.response_code == 404
    with pytest.raises(gitlab.GitlabListError) as e2:
        project.deployments.list(status="exploded")
    assert e2.value.response_code == 400


def test_stop_plays_on_stop(server: LiveServer, runs: list[dict[str, Any]]) -> None:
    gl = gitlab.Gitlab(server.url + "/gitlab", private_token=TOKEN)
    project = gl.projects.get(runs[0]["project_id"], lazy=True)
    [env] = project.environments.list(get_all=True)
    env.stop()
    deadline = time.monotonic() + 60
    while project.environments.get(env.id).state != "stopped":
        assert time.monotonic() < deadline, project.environments.get(env.id).state
        time.sleep(0.2)
    jobs = {j.name: j for j in project.pipelines.get(runs[1]["id"]).jobs.list(get_all=True)}
    assert jobs["teardown"].status == "success"
    assert [e.name for e in project.environments.list(states="stopped")] == ["production"]


def test_dora_endpoint_and_cli(server: LiveServer, runs: list[dict[str, Any]]) -> None:
    resp = httpx.get(server.url + "/api/pipelines/v1/dora", params={"environment": "production", "window": "1d"},
                     headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 200, resp.text
    f = resp.json()
    assert (f["deployments"], f["changes"], f["failed_changes"]) == (1, 2, 1)
    assert f["change_failure_rate"] == 0.5 and f["deployment_frequency_per_day"] == 1.0
    assert f["lead_time_seconds"] is not None and f["lead_time_seconds"] >= 0
    assert f["time_to_restore_seconds"] is not None and f["time_to_restore_seconds"] > 0
    bad = httpx.get(server.url + "/api/pipelines/v1/dora", params={"window": "2 years"},
                    headers={"Authorization": f"Bearer {TOKEN}"})
    assert bad.status_code == 400 and "window" in bad.text
    r = _cli(server.url, "dora", "--environment", "production", "--window", "1d")
    assert r.returncode == 0, r.stderr
    assert "1 deployments, 2 changes, 1 failed" in r.stdout and "change failure rate    50.0%" in r.stdout
    r = _cli(server.url, "dora", "-o", "json", "--project", str(runs[0]["project_id"]))
    assert json.loads(r.stdout)["deployments"] == 1
    # the figures are series in the metric store too
    q = httpx.get(server.url + "/api/v1/query", params={"query": 'pitwall_dora_change_failure_rate{environment="production"}'},
                  headers={"Authorization": f"Bearer {TOKEN}"})
    assert q.status_code == 200, q.text
    [sample] = q.json()["data"]["result"]
    assert float(sample["value"][1]) == 0.5 and sample["metric"]["project"] == "shop"


def test_dora_joins_incidents(server: LiveServer, runs: list[dict[str, Any]]) -> None:
    """An incident on the project's service after the successful deployment makes it a failed change too;
    its resolution restores service."""
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def figures() -> dict[str, Any]:
        r = httpx.get(server.url + "/api/pipelines/v1/dora", params={"environment": "production", "window": "1d"},
                      headers=auth)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    event = {"routing_key": ROUTING_KEY, "dedup_key": "shop-down",
             "payload": {"summary": "shop down", "source": "shop-1", "severity": "critical"}}
    r = httpx.post(server.url + "/v2/enqueue", headers=auth, json={**event, "event_action": "trigger"})
    assert r.status_code == 202, r.text
    f = figures()
    assert (f["changes"], f["failed_changes"], f["change_failure_rate"], f["restored"]) == (2, 2, 1.0, 1)
    time.sleep(1.1)  # a restore time of whole seconds at least
    r = httpx.post(server.url + "/v2/enqueue", headers=auth, json={**event, "event_action": "resolve"})
    assert r.status_code == 202, r.text
    f = figures()
    assert (f["failed_changes"], f["restored"]) == (2, 2)


def test_releases_wait_errors(server: LiveServer) -> None:
    env = {**os.environ, "PITWALL_URL": server.url, "PITWALL_TOKEN": TOKEN}

    def wait(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pitwall.cli.main", "releases", "wait", *args], env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    r = wait("no-namespace")
    assert r.returncode == 2 and "expected NAMESPACE/NAME" in r.stderr
    r = wait("default/nope", "--timeout", "5s")
    assert r.returncode == 1 and "canary default/nope not found" in r.stderr
    r = wait("default/nope", "--timeout", "soon")
    assert r.returncode == 2 and "--timeout" in r.stderr
