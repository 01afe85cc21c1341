"""Environments and deployments recorded by the runner: a deploy job's deployment takes its verdict,
``CI_ENVIRONMENT_*`` are set, ``on_stop`` is played by a stop, ``auto_stop_in`` stops by the sweep."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pitwall.pipelines.runner import PipelineRunner
from tests.pipelines.conftest import Sink, make_repo, wait_done

pytestmark = pytest.mark.timeout(120)

Env = tuple[PipelineRunner, Sink, Callable[..., PipelineRunner]]

CI = """
stages: [deploy, cleanup]
deploy_review:
  stage: deploy
  script:
    - echo "name=$CI_ENVIRONMENT_NAME slug=$CI_ENVIRONMENT_SLUG url=$CI_ENVIRONMENT_URL action=$CI_ENVIRONMENT_ACTION"
    - test -z "$FAIL_DEPLOY"
  environment:
    name: review/$CI_COMMIT_REF_NAME
    url: https://$CI_ENVIRONMENT_SLUG.example.com
    on_stop: stop_review
    auto_stop_in: 1 day
stop_review:
  stage: cleanup
  when: manual
  script: [echo stopping $CI_ENVIRONMENT_NAME]
  environment:
    name: review/$CI_COMMIT_REF_NAME
    action: stop
"""


async def _env(runner: PipelineRunner, project_id: int) -> dict[str, Any]:
    envs = await runner.deployments.environments(project_id)
    assert len(envs) == 1, envs
    return envs[0]


async def test_deploy_records_environment_and_deployment(runner_env: Env, tmp_path: Path) -> None:
    runner, sink, _ = runner_env
    repo = make_repo(tmp_path / "shop", {".gitlab-ci.yml": CI}, branch="Feature_1")
    p = await runner.create(str(repo), None, [])
    p, jobs = await wait_done(runner, p["id"])
    assert jobs["deploy_review"]["status"] == "success" and jobs["stop_review"]["status"] == "manual"
    trace = runner.trace(jobs["deploy_review"]["id"]).decode()
    m = re.search(r"name=review/Feature_1 slug=(review-feature-1-[0-9a-z]{6}) url=https://(\S+)\.example\.com "
                  r"action=start", trace)
    assert m is not None and m.group(1) == m.group(2), trace  # GitLab's slug: changed, so a hash suffix
    env = await _env(runner, p["project_id"])
    assert env["name"] == "review/Feature_1" and env["slug"] == m.group(1)
    assert env["state"] == "available" and env["external_url"] == f"https://{m.group(1)}.example.com"
    assert env["auto_stop_at"] == pytest.approx(jobs["deploy_review"]["started_at"] + 86400, abs=1)
    [d] = await runner.deployments.deployments()
    assert (d["status"], d["sha"], d["ref"], d["job_id"], d["environment_id"]) == (
        "success", p["sha"], "Feature_1", jobs["deploy_review"]["id"], env["id"])
    assert d["finished_at"] == jobs["deploy_review"]["finished_at"]
    assert len(d["commit_times"]) == 1  # the first deployment brings its own commit
    deploys = [c for c in sink.changes if c.kind == "deploy"]
    assert len(deploys) == 1 and deploys[0].service == "review/Feature_1"
    # the DORA series are appended when a deployment ends
    names = {n for n, lbl, _ in sink.samples if lbl.get("environment") == "review/Feature_1"}
    assert {"pitwall_dora_deployment_frequency_per_day", "pitwall_dora_lead_time_seconds",
            "pitwall_dora_change_failure_rate"} <= names

    # stopping plays on_stop; the environment is stopping until that job succeeds, then stopped
    out = await runner.stop_environment(p["project_id"], env["id"])
    assert out["state"] == "stopping"
    p, jobs = await wait_done(runner, p["id"])
    assert jobs["stop_review"]["status"] == "success"
    assert "stopping review/Feature_1" in runner.trace(jobs["stop_review"]["id"]).decode()
    env = await _env(runner, p["project_id"])
    assert env["state"] == "stopped" and env["auto_stop_at"] is None
    assert len(await runner.deployments.deployments()) == 1  # a stop job deploys nothing


async def test_failed_deploy_and_second_deployment(runner_env: Env, tmp_path: Path) -> None:
    runner, _, _ = runner_env
    repo = make_repo(tmp_path / "shop", {".gitlab-ci.yml": CI})
    p1 = await runner.create(str(repo), None, [{"key": "FAIL_DEPLOY", "value": "1"}])
    p1, _ = await wait_done(runner, p1["id"])
    assert p1["status"] == "failed"
    [d] = await runner.deployments.deployments()
    assert d["status"] == "failed" and "commit_times" not in d
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for msg in ("two", "three"):
        (repo / "app.txt").write_text(msg)
        subprocess.run([*git, "add", "app.txt"], check=True)
        subprocess.run([*git, "commit", "-qm", msg], check=True)
    p2 = await runner.create(str(repo), None, [])
    p2, _ = await wait_done(runner, p2["id"])
    d1, d2 = await runner.deployments.deployments()
    assert (d1["status"], d2["status"]) == ("failed", "success") and d2["iid"] == 2
    # no earlier success: only the head commit counts (GitLab has nothing to compare with either)
    assert len(d2["commit_times"]) == 1
    p3 = await runner.create(str(repo), None, [])
    await wait_done(runner, p3["id"])  # before the next one (a newer pipeline auto-cancels an idle one)
    for msg in ("four", "five"):
        (repo / "app.txt").write_text(msg)
        subprocess.run([*git, "commit", "-qam", msg], check=True)
    p4 = await runner.create(str(repo), None, [])
    await wait_done(runner, p4["id"])
    deps = await runner.deployments.deployments()
    assert [len(d.get("commit_times") or []) for d in deps] == [0, 1, 0, 2]  # p3 redeploys d2's commit


async def test_auto_stop_in_by_the_sweep(runner_env: Env, tmp_path: Path) -> None:
    runner, _, _ = runner_env
    repo = make_repo(tmp_path / "shop", {".gitlab-ci.yml": CI})
    p = await runner.create(str(repo), None, [])
    p, _ = await wait_done(runner, p["id"])
    assert await runner.stop_expired_environments(time.time() + 3600) == 0
    assert (await _env(runner, p["project_id"]))["state"] == "available"
    assert await runner.stop_expired_environments(time.time() + 86400 + 60) == 1
    p, jobs = await wait_done(runner, p["id"])
    assert jobs["stop_review"]["status"] == "success"
    assert (await _env(runner, p["project_id"]))["state"] == "stopped"


async def test_stop_without_on_stop_job(runner_env: Env, tmp_path: Path) -> None:
    runner, _, _ = runner_env
    ci = "deploy:\n  script: [echo hi]\n  environment: production\n"
    repo = make_repo(tmp_path / "svc", {".gitlab-ci.yml": ci})
    p = await runner.create(str(repo), None, [])
    p, _ = await wait_done(runner, p["id"])
    env = await _env(runner, p["project_id"])
    assert env["slug"] == "production" and env["external_url"] is None
    assert (await runner.stop_environment(p["project_id"], env["id"]))["state"] == "stopped"
    # a new deployment makes it available again
    p = await runner.create(str(repo), None, [])
    await wait_done(runner, p["id"])
    assert (await _env(runner, p["project_id"]))["state"] == "available"


async def test_canary_wait_without_a_kubernetes_api_fails_the_job(runner_env: Env, tmp_path: Path) -> None:
    runner, _, _ = runner_env
    assert runner.canary_waiter is None
    ci = ("deploy:\n  script: [echo applied]\n  environment: production\n"
          "  variables: {PITWALL_CANARY: default/podinfo}\n"
          "plain:\n  script: [echo fine]\n  variables: {PITWALL_CANARY: default/podinfo}\n")
    repo = make_repo(tmp_path / "svc", {".gitlab-ci.yml": ci})
    p = await runner.create(str(repo), None, [])
    p, jobs = await wait_done(runner, p["id"])
    assert jobs["plain"]["status"] == "success"  # only deploy jobs wait
    assert jobs["deploy"]["status"] == "failed" and jobs["deploy"]["failure_reason"] == "script_failure"
    trace = runner.trace(jobs["deploy"]["id"]).decode()
    assert "applied" in trace and "ERROR: Job failed: PITWALL_CANARY needs the Kubernetes API" in trace
    [d] = await runner.deployments.deployments()
    assert d["status"] == "failed"


async def test_stopping_with_a_failed_stop_job_is_forced(runner_env: Env, tmp_path: Path) -> None:
    runner, _, _ = runner_env
    ci = CI.replace("script: [echo stopping $CI_ENVIRONMENT_NAME]", "script: [exit 3]")
    repo = make_repo(tmp_path / "shop", {".gitlab-ci.yml": ci})
    p = await runner.create(str(repo), None, [])
    p, _ = await wait_done(runner, p["id"])
    env = await _env(runner, p["project_id"])
    assert (await runner.stop_environment(p["project_id"], env["id"]))["state"] == "stopping"
    p, jobs = await wait_done(runner, p["id"])
    assert jobs["stop_review"]["status"] == "failed"
    assert (await _env(runner, p["project_id"]))["state"] == "stopping"  # the stop did not happen
    assert (await runner.stop_environment(p["project_id"], env["id"]))["state"] == "stopped"


async def test_deployment_statuses_follow_the_job(runner_env: Env, tmp_path: Path) -> None:
    """GitLab records a deployment with its job: created (a manual job waits), running, then the verdict;
    skipped when the job is skipped, canceled when it is canceled before it starts."""
    runner, _, _ = runner_env
    ci = """
stages: [build, deploy]
build:
  stage: build
  script: [test -z "$FAIL_BUILD", 'if [ -n "$SLOW" ]; then sleep 60; fi']
to_staging:
  stage: deploy
  script: [echo staging]
  environment: staging
to_production:
  stage: deploy
  when: manual
  script: [echo production]
  environment: production
"""
    repo = make_repo(tmp_path / "svc", {".gitlab-ci.yml": ci})
    p = await runner.create(str(repo), None, [])
    p, jobs = await wait_done(runner, p["id"])

    async def statuses() -> dict[tuple[int, str], str]:
        return {(d["pipeline_id"], d["environment"]): d["status"] for d in await runner.deployments.deployments()}

    assert await statuses() == {(p["id"], "staging"): "success", (p["id"], "production"): "created"}
    await runner.play_job(jobs["to_production"]["id"])
    await wait_done(runner, p["id"])
    assert (await statuses())[(p["id"], "production")] == "success"
    p2 = await runner.create(str(repo), None, [{"key": "FAIL_BUILD", "value": "1"}])
    p2, jobs2 = await wait_done(runner, p2["id"])
    assert jobs2["to_staging"]["status"] == "skipped"
    assert (await statuses())[(p2["id"], "staging")] == "skipped"
    assert (await statuses())[(p2["id"], "production")] == "skipped"  # the manual job is skipped as well
    p3 = await runner.create(str(repo), None, [{"key": "SLOW", "value": "1"}])
    deadline = time.monotonic() + 30
    while (await runner.store.jobs(p3["id"]))[0]["status"] != "running":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await runner.cancel_pipeline(p3["id"])
    await wait_done(runner, p3["id"])
    assert (await statuses())[(p3["id"], "staging")] == "canceled"
    assert (await statuses())[(p3["id"], "production")] == "canceled"
