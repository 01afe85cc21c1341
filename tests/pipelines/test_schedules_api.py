"""GitLab's pipeline schedules API driven by python-gitlab against a live pitwall, and the stored schedules'
activations (once each, also with two schedulers sharing the store)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import gitlab
import httpx
import pytest

from pitwall.config import load_settings
from pitwall.pipelines.schedules import Scheduler
from tests.conftest import LiveServer
from tests.pipelines.conftest import make_repo, wait_done

pytestmark = pytest.mark.timeout(180)

TOKEN = "schedules-token-0123456789"
CI = "nightly:\n  script: ['echo \"source=$CI_PIPELINE_SOURCE target=$TARGET\"']\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    s = load_settings(data_dir=tmp_path_factory.mktemp("sched") / "data", listen="127.0.0.1:0",
                      storage={"fsync": False},
                      auth_tokens=[{"token": TOKEN, "name": "ci", "scopes": ["read", "write"]}])
    srv = LiveServer(s)
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.slow
def test_python_gitlab_manages_and_plays_schedules(server: LiveServer, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "shop", {".gitlab-ci.yml": CI})
    r = httpx.post(f"{server.url}/api/pipelines/v1/runs", json={"repo": str(repo)},
                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 201, r.text  # the project exists once a pipeline ran
    gl = gitlab.Gitlab(f"{server.url}/gitlab", private_token=TOKEN)
    project = gl.projects.get(r.json()["project_id"])

    sched = project.pipelineschedules.create({"description": "nightly", "ref": "main", "cron": "0 2 * * *",
                                              "cron_timezone": "Europe/Paris"})
    assert sched.id > 0 and sched.active is True and sched.owner["username"] == "ci"
    next_run = datetime.fromisoformat(sched.next_run_at.replace("Z", "+00:00"))
    assert next_run > datetime.now(UTC) and next_run.astimezone(_paris()).hour == 2
    sched.variables.create({"key": "TARGET", "value": "staging"})
    var = sched.variables.create({"key": "OTHER", "value": "x"})
    var.value = "y"
    var.save()
    sched = project.pipelineschedules.get(sched.id)
    assert {v["key"]: v["value"] for v in sched.attributes["variables"]} == {"TARGET": "staging", "OTHER": "y"}
    sched.variables.delete("OTHER")
    sched.description, sched.cron = "nightly build", "30 3 * * *"
    sched.save()
    got = project.pipelineschedules.get(sched.id)
    assert (got.description, got.cron, [v["key"] for v in got.attributes["variables"]]) == ("nightly build", "30 3 * * *",
                                                                             ["TARGET"])
    assert [s.id for s in project.pipelineschedules.list(scope="active")] == [sched.id]
    assert project.pipelineschedules.list(scope="inactive") == []

    got.play()
    deadline = time.monotonic() + 90
    while True:
        [p] = got.pipelines.list()
        if p.status in ("success", "failed"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert p.status == "success" and p.source == "schedule"
    [job] = project.pipelines.get(p.id).jobs.list()
    assert "source=schedule target=staging" in project.jobs.get(job.id).trace().decode()
    assert project.pipelineschedules.get(sched.id).last_pipeline["id"] == p.id

    with pytest.raises(gitlab.GitlabCreateError) as bad:
        project.pipelineschedules.create({"description": "x", "ref": "main", "cron": "61 * * * *"})
    assert bad.value.response_code == 400 and "cron" in str(bad.value)
    with pytest.raises(gitlab.GitlabCreateError):
        sched.variables.create({"key": "TARGET", "value": "again"})  # taken
    with pytest.raises(gitlab.GitlabGetError) as missing:
        project.pipelineschedules.get(99999)
    assert missing.value.response_code == 404
    project.pipelineschedules.delete(sched.id)
    assert project.pipelineschedules.list() == []


def _paris() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo("Europe/Paris")


async def test_stored_schedules_run_each_activation_once(runner_env: Any, tmp_path: Path) -> None:
    runner, _, _ = runner_env
    repo = make_repo(tmp_path / "repo", {".gitlab-ci.yml": CI})
    project = await runner.store.project_for_path(str(repo.resolve()))
    a, b = Scheduler(runner, []), Scheduler(runner, [])  # two servers sharing one store
    s = await a.stored.create(project["id"], {"description": "every minute", "ref": "main",
                                              "cron": "* * * * *"}, "ops")
    await a.stored.set_variable(project["id"], s["id"], {"key": "TARGET", "value": "prod"}, new=True)
    now = datetime.now(UTC)
    assert await a.tick(now - timedelta(minutes=1)) == []  # nothing due yet
    later = now + timedelta(minutes=5)  # five activations missed: one pipeline, as GitLab
    started = await asyncio.gather(a.tick(later), b.tick(later))
    assert sorted(len(x) for x in started) == [0, 1]
    [pid] = [x for part in started for x in part]
    p, jobs = await wait_done(runner, pid)
    assert p["source"] == "schedule" and p["schedule_id"] == s["id"] and p["user"] == "ops"
    assert "target=prod" in runner.trace(jobs["nightly"]["id"]).decode()
    assert await a.tick(later) == []  # ran already
    await a.stored.edit(project["id"], s["id"], {"active": False})
    assert await a.tick(later + timedelta(hours=1)) == []
