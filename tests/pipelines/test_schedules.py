"""Pipeline schedules: one pipeline per activation (missed ones run once), source ``schedule``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from pitwall.pipelines.schedules import Scheduler
from pitwall.pipelines.settings import PipelineSchedule
from tests.pipelines.conftest import make_repo, wait_done

pytestmark = pytest.mark.timeout(60)


async def test_schedule_runs_once_per_activation(runner_env: Any, tmp_path: Path) -> None:
    runner, _, _ = runner_env
    repo = make_repo(tmp_path / "repo", {".gitlab-ci.yml": """
nightly:
  rules:
    - if: $CI_PIPELINE_SOURCE == "schedule"
  script: ['echo "nightly $TARGET"']
push-only:
  rules:
    - if: $CI_PIPELINE_SOURCE == "push"
  script: [echo push]
"""})
    sched = Scheduler(runner, [PipelineSchedule(repo=repo, cron="0 2 * * *", variables={"TARGET": "prod"})])
    t0 = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    assert await sched.tick(t0) == []  # first sight
    assert await sched.tick(t0 + timedelta(minutes=59)) == []  # 01:59: not yet
    [pid] = await sched.tick(t0 + timedelta(hours=1, minutes=1))  # 02:01
    p, jobs = await wait_done(runner, pid)
    assert p["source"] == "schedule" and list(jobs) == ["nightly"]
    assert "nightly prod" in runner.trace(jobs["nightly"]["id"]).decode()
    assert await sched.tick(t0 + timedelta(hours=2)) == []  # the same activation: not twice
    # three nights missed (pitwall was down): one pipeline, as GitLab does
    assert len(await sched.tick(t0 + timedelta(days=3, hours=2))) == 1


def test_bad_cron_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cron '61 \\* \\* \\* \\*'"):
        PipelineSchedule(repo=tmp_path, cron="61 * * * *")
    with pytest.raises(ValidationError, match="unknown time zone"):
        PipelineSchedule(repo=tmp_path, cron="@daily", cron_timezone="Mars/Olympus")


async def test_servers_sharing_the_store_run_an_activation_once(runner_env: Any, tmp_path: Path) -> None:
    import asyncio

    runner, _, _ = runner_env
    repo = make_repo(tmp_path / "repo", {".gitlab-ci.yml": "nightly:\n  script: [echo nightly]\n"})
    spec = PipelineSchedule(repo=repo, cron="0 2 * * *")
    a, b = Scheduler(runner, [spec]), Scheduler(runner, [spec])  # two servers' schedulers, one store
    t0 = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    await asyncio.gather(a.tick(t0), b.tick(t0))
    started = await asyncio.gather(a.tick(t0 + timedelta(hours=1, minutes=1)), b.tick(t0 + timedelta(hours=1, minutes=1)))
    assert sorted(len(s) for s in started) == [0, 1]
    await wait_done(runner, next(pid for s in started for pid in s))
