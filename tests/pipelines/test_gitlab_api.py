"""python-gitlab against a live pitwall: list pipelines and jobs, read a trace, retry only the failed jobs,
play a manual job, read the test report; and ``pitwall pipelines run/logs`` through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gitlab
import httpx
import pytest

from pitwall.config import load_settings
from tests.conftest import LiveServer
from tests.pipelines.conftest import make_repo

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

TOKEN = "gitlab-api-token-0123456789"
READER = "gitlab-read-token-0123456789"
SECRET = "s3cr3t-value-xyz"

CI = """
stages: [build, test, deploy]
build:
  stage: build
  script:
    - if [ -n "$SLOW" ]; then sleep 60; fi
    - mkdir -p out && echo "built $CI_COMMIT_SHORT_SHA" > out/build.txt
    - echo "secret is $DEPLOY_KEY"
  artifacts:
    paths: [out/]
unit:
  stage: test
  script:
    - cat out/build.txt
    - printf '<testsuite><testcase name="ok" classname="a" time="0.5"/><testcase name="bad" classname="a"><failure>boom</failure></testcase></testsuite>' > report.xml
  artifacts:
    reports:
      junit: report.xml
flaky:
  stage: test
  script:
    - test -f "$FLAG" || { touch "$FLAG"; echo first attempt fails; exit 1; }
    - echo second attempt passes
deploy:
  stage: deploy
  script: [echo deploying]
  environment: {name: production}
approve:
  stage: deploy
  when: manual
  script: [echo approved]
"""


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PITWALL_URL": url, "PITWALL_TOKEN": TOKEN}
    return subprocess.run([sys.executable, "-m", "pitwall.cli.main", "pipelines", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    s = load_settings(data_dir=tmp_path_factory.mktemp("gl") / "data", listen="127.0.0.1:0",
                      storage={"fsync": False},
                      auth_tokens=[{"token": TOKEN, "name": "ci", "scopes": ["read", "write"]},
                                   {"token": READER, "name": "viewer", "scopes": ["read"]}])
    srv = LiveServer(s)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def first_run(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("repo")
    repo = make_repo(root / "shop", {".gitlab-ci.yml": CI, "README": "shop\n"})
    flag = root / "flag"
    r = _cli(server.url, "run", "--repo", str(repo), "--var", f"FLAG={flag}", "--masked-var",
             f"DEPLOY_KEY={SECRET}", "--wait", "--output", "json")
    assert r.returncode == 1, r.stderr  # flaky fails on its first attempt
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def _wait(pipeline: Any, want: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while pipeline.status not in want:
        assert time.monotonic() < deadline, pipeline.status
        time.sleep(0.2)
        pipeline.refresh()


def test_cli_run_json(first_run: dict[str, Any]) -> None:
    p = first_run
    assert p["status"] == "failed" and p["ref"] == "main" and len(p["sha"]) == 40
    jobs = {j["name"]: j for j in p["jobs"]}
    assert {n: j["status"] for n, j in jobs.items()} == {
        "build": "success", "unit": "success", "flaky": "failed", "deploy": "skipped", "approve": "skipped"}
    assert set(jobs["build"]) == {"id", "name", "stage", "status", "allow_failure", "started_at", "finished_at"}
    assert jobs["build"]["started_at"].endswith("Z") and jobs["deploy"]["started_at"] is None


def test_list_pipelines_jobs_and_trace(server: LiveServer, first_run: dict[str, Any]) -> None:
    gl = gitlab.Gitlab(server.url + "/gitlab", private_token=READER)
    project = gl.projects.get(first_run["project_id"])
    assert project.name == "shop"
    ids = [p.id for p in project.pipelines.list(get_all=True)]
    assert first_run["id"] in ids
    pipeline = project.pipelines.get(first_run["id"])
    assert pipeline.status == "failed" and pipeline.sha == first_run["sha"]
    assert pipeline.detailed_status["text"] == "failed"
    jobs = {j.name: j for j in pipeline.jobs.list(get_all=True)}
    assert jobs["flaky"].status == "failed" and jobs["flaky"].failure_reason == "script_failure"
    assert jobs["build"].artifacts_file["size"] > 0
    failed = pipeline.jobs.list(get_all=True, scope=["failed"])
    assert [j.name for j in failed] == ["flaky"]
    trace = project.jobs.get(jobs["build"].id).trace().decode()
    assert "$ mkdir -p out" in trace and "Job succeeded" in trace
    assert SECRET not in trace and "secret is [MASKED]" in trace
    trace = project.jobs.get(jobs["flaky"].id).trace().decode()
    assert "first attempt fails" in trace and "ERROR: Job failed: exit status 1" in trace


def test_test_report(server: LiveServer, first_run: dict[str, Any]) -> None:
    gl = gitlab.Gitlab(server.url + "/gitlab", private_token=READER)
    report = gl.projects.get(first_run["project_id"], lazy=True).pipelines.get(first_run["id"]).test_report.get()
    assert (report.total_count, report.success_count, report.failed_count) == (2, 1, 1)
    suite = report.test_suites[0]
    assert suite["name"] == "unit"
    assert {c["name"]: c["status"] for c in suite["test_cases"]} == {"ok": "success", "bad": "failed"}


def test_retry_only_failed_then_play_manual(server: LiveServer, first_run: dict[str, Any]) -> None:
    gl = gitlab.Gitlab(server.url + "/gitlab", private_token=TOKEN)
    project = gl.projects.get(first_run["project_id"], lazy=True)
    pipeline = project.pipelines.get(first_run["id"])
    before = {j.name: j.id for j in pipeline.jobs.list(get_all=True)}
    assert pipeline.retry()["status"] == "running"
    pipeline.refresh()
    _wait(pipeline, {"success", "failed"})
    assert pipeline.status == "success"
    after = {j.name: j for j in pipeline.jobs.list(get_all=True)}
    # build and unit kept their jobs; flaky ran again; deploy, skipped before, ran now; approve waits
    assert after["build"].id == before["build"] and after["unit"].id == before["unit"]
    assert after["flaky"].id != before["flaky"] and after["flaky"].status == "success"
    assert after["deploy"].status == "success" and after["approve"].status == "manual"
    retried = [j for j in pipeline.jobs.list(get_all=True, include_retried=True) if j.name == "flaky"]
    assert sorted(j.status for j in retried) == ["failed", "success"]
    project.jobs.get(after["approve"].id, lazy=True).play()
    deadline = time.monotonic() + 60
    while project.jobs.get(after["approve"].id).status != "success":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert "approved" in project.jobs.get(after["approve"].id).trace().decode()


def test_create_cancel_and_job_retry(server: LiveServer, first_run: dict[str, Any]) -> None:
    gl = gitlab.Gitlab(server.url + "/gitlab", private_token=TOKEN)
    project = gl.projects.get(first_run["project_id"], lazy=True)
    created = project.pipelines.create({"ref": "main", "variables": [{"key": "SLOW", "value": "1"}]})
    assert created.source == "api" and created.ref == "main"
    assert [v.key for v in created.variables.list()] == ["SLOW"]
    deadline = time.monotonic() + 60
    while [j.status for j in created.jobs.list(get_all=True) if j.name == "build"] != ["running"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    created.cancel()
    created.refresh()
    _wait(created, {"canceled"})
    jobs = {j.name: j for j in created.jobs.list(get_all=True)}
    assert jobs["build"].status == "canceled" and jobs["unit"].status == "canceled"
    # retry one job of the first pipeline: a new job with the same name runs
    first = {j.name: j for j in project.pipelines.get(first_run["id"]).jobs.list(get_all=True)}
    new = project.jobs.get(first["build"].id, lazy=True).retry()
    assert new["id"] != first["build"].id and new["name"] == "build"
    deadline = time.monotonic() + 60
    while project.jobs.get(new["id"]).status != "success":
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_job_logs_in_the_log_store(server: LiveServer, first_run: dict[str, Any]) -> None:
    q = f'{{job="pitwall-pipelines", job_name="build", pipeline="{first_run["id"]}"}}'
    resp = httpx.get(server.url + "/loki/api/v1/query_range", params={"query": q, "limit": 100},
                     headers={"Authorization": f"Bearer {READER}"})
    assert resp.status_code == 200, resp.text
    streams = resp.json()["data"]["result"]
    assert streams and streams[0]["stream"]["project"] == "shop" and streams[0]["stream"]["ref"] == "main"
    lines = [v[1] for s in streams for v in s["values"]]
    assert any("$ mkdir -p out" in x for x in lines) and not any(SECRET in x for x in lines)


def test_cli_logs(server: LiveServer, first_run: dict[str, Any]) -> None:
    r = _cli(server.url, "logs", "-f", str(first_run["id"]), "build")
    assert r.returncode == 0, r.stderr
    assert "$ mkdir -p out" in r.stdout and SECRET not in r.stdout


def test_errors_in_gitlab_shape(server: LiveServer, first_run: dict[str, Any]) -> None:
    gl = gitlab.Gitlab(server.url + "/gitlab", private_token="wrong-token-0123456789")
    with pytest.raises(gitlab.exceptions.GitlabAuthenticationError):
        gl.projects.get(first_run["project_id"])
    reader = gitlab.Gitlab(server.url + "/gitlab", private_token=READER)
    with pytest.raises(gitlab.exceptions.GitlabRetryError):  # a read token cannot retry
        reader.projects.get(first_run["project_id"], lazy=True).pipelines.get(first_run["id"]).retry()
    resp = httpx.get(f"{server.url}/gitlab/api/v4/projects/{first_run['project_id']}/pipelines/999999",
                     headers={"PRIVATE-TOKEN": READER})
    assert resp.status_code == 404 and resp.json() == {"message": "404 Pipeline Not Found"}
    resp = httpx.get(f"{server.url}/api/pipelines/v1/pipelines/{first_run['id']}", headers={"PRIVATE-TOKEN": READER})
    assert resp.status_code == 401  # GitLab's header counts on GitLab's paths only
    resp = httpx.post(f"{server.url}/gitlab/api/v4/projects/{first_run['project_id']}/pipeline",
                      headers={"PRIVATE-TOKEN": TOKEN}, content=b"[1]")
    assert resp.status_code == 400 and "JSON object" in resp.json()["message"]


def test_bad_definition_rejected_before_running(server: LiveServer, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "bad", {".gitlab-ci.yml": "job:\n  script: [echo hi]\n  imag: alpine\n"})
    r = _cli(server.url, "run", "--repo", str(repo))
    assert r.returncode == 1
    assert ".gitlab-ci.yml:3: jobs:job config contains unknown keys: imag" in r.stderr


def test_kill_9_mid_job_then_restart(tmp_path: Path) -> None:
    """A real ``pitwall server`` killed with SIGKILL while a job runs: after the restart the job is failed
    (runner restarted) and its leftover process tree (in a session of its own, so it outlived the server)
    is killed."""
    from tests.conftest import free_port, start_pitwall_process, wait_ready

    data = tmp_path / "data"
    data.mkdir()
    pidfile = tmp_path / "sleep.pid"
    repo = make_repo(tmp_path / "svc", {".gitlab-ci.yml": f"slow:\n  script: ['sleep 120 & echo $! > {pidfile}; wait']\n"
                                                          "after:\n  stage: deploy\n  script: [echo after]\n"})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_pitwall_process(data, port)
    try:
        wait_ready(url, 60, proc)
        r = _cli(url, "run", "--repo", str(repo), "--output", "json")
        assert r.returncode == 0, r.stderr
        pid = json.loads(r.stdout)["id"]
        deadline = time.monotonic() + 60
        while not pidfile.exists() or not pidfile.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        child = int(pidfile.read_text())
        proc.kill()
        proc.wait(30)
        proc = start_pitwall_process(data, port)
        wait_ready(url, 60, proc)
        gl = gitlab.Gitlab(url + "/gitlab")
        pipeline = gl.projects.get(1, lazy=True).pipelines.get(pid)
        _wait(pipeline, {"failed"})
        jobs = {j.name: j for j in pipeline.jobs.list(get_all=True)}
        assert jobs["slow"].status == "failed" and jobs["slow"].failure_reason == "runner_system_failure"
        assert jobs["after"].status == "skipped"
        assert "runner restarted" in gl.projects.get(1, lazy=True).jobs.get(jobs["slow"].id).trace().decode()
        assert not Path(f"/proc/{child}").exists() or \
            Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    finally:
        proc.kill()
        proc.wait(30)
