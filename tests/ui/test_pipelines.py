"""The pipelines pages: the pure view functions, and the routes over a real ``PipelineRunner`` (SQLite
revstore, a git repository, the shell executor) on a small ASGI app: run from the form, the graph, job logs,
retry/cancel/play, DORA."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import LiveServer
from tests.pipelines.conftest import make_repo
from tests.ui.app import ui_client, ui_deps

from pitwall.config import load_settings
from pitwall.core.errors import BadData
from pitwall.pipelines import PipelineRunner, PipelinesSettings
from pitwall.pipelines.report import Reporter
from pitwall.storage.revstore.sqlite import SqliteRevStore
from pitwall.ui.pipelines_view import (
    RunnerPipelines,
    default_job,
    dora_row,
    dora_targets,
    graph_layout,
    job_log_query,
    parse_variables,
    parse_window,
    pipeline_row,
    stage_graph,
)

pytestmark = pytest.mark.timeout(120)

CI = """
stages: [build, test, deploy]
build:
  stage: build
  script: [echo "building $GREETING", echo built]
lint:
  stage: build
  script: [echo lint]
unit:
  stage: test
  needs: [build]
  script: [test -z "$FAIL_UNIT", echo unit ok]
deploy:
  stage: deploy
  when: manual
  needs: []
  script: [echo deploying]
  environment: {name: production}
"""


def _p(**kw: Any) -> dict[str, Any]:
    base = {"id": 7, "iid": 3, "project_id": 2, "status": "running", "ref": "main", "sha": "abcdef0123456789",
            "commit_message": "Fix the thing\n\nlong body", "source": "web", "user": "ada", "created_at": 1000.0,
            "started_at": 1010.0, "finished_at": None,
            "plan": {"stages": ["build", "test", "deploy"],
                     "jobs": [{"name": "build", "needs": None, "when": "on_success"},
                              {"name": "unit", "needs": [["build", True]], "when": "on_success"},
                              {"name": "deploy", "needs": None, "when": "manual"}]}}
    return {**base, **kw}


def _j(jid: int, name: str, stage: str, status: str, **kw: Any) -> dict[str, Any]:
    return {"id": jid, "pipeline_id": 7, "name": name, "stage": stage, "status": status, "allow_failure": False,
            "started_at": kw.pop("started_at", None), "finished_at": kw.pop("finished_at", None), **kw}


def test_pipeline_row_names_statuses_as_gitlab() -> None:
    row = pipeline_row(_p(status="success", finished_at=1075.0), "shop", now=2000.0)
    assert (row.status_text, row.sha, row.title, row.duration, row.trigger, row.active) == (
        "passed", "abcdef01", "Fix the thing", "1m 5s", "web by ada", False)
    assert pipeline_row(_p(status="scheduled"), "shop", now=1100.0).status_text == "delayed"
    assert pipeline_row(_p(), "shop", now=1100.0).duration == "1m 30s"  # running: until now


def test_stage_graph_takes_the_latest_attempt_and_the_needs() -> None:
    jobs = [_j(1, "build", "build", "failed", started_at=1010.0, finished_at=1020.0, failure_reason="script_failure"),
            _j(2, "unit", "test", "skipped"), _j(3, "deploy", "deploy", "manual"),
            _j(4, "build", "build", "running", started_at=1030.0)]
    cols = stage_graph(_p(), jobs, now=1042.0)
    assert [c.name for c in cols] == ["build", "test", "deploy"]
    build = cols[0].jobs[0]
    assert (build.id, build.status_text, build.attempts, build.duration, build.can_cancel) == (4, "running", 2, "12s",
                                                                                              True)
    assert cols[0].status == "running" and cols[1].status == "skipped"
    assert cols[1].jobs[0].needs == ["build"]
    assert cols[2].jobs[0].can_play and not cols[2].jobs[0].can_retry
    assert default_job(cols) == build  # the running one
    layout = graph_layout(cols)
    assert [(e.need, e.job) for e in layout.edges] == [("build", "unit")]
    assert layout.edges[0].path.startswith("M200 ")  # from the build box's right edge
    assert layout.width == 3 * 200 + 2 * 56


def test_allowed_failure_does_not_fail_the_stage() -> None:
    jobs = [_j(1, "build", "build", "failed", allow_failure=True), _j(2, "lint", "build", "success")]
    assert stage_graph(_p(), jobs)[0].status == "success"


def test_form_variables_and_window() -> None:
    assert parse_variables(["A", "", " B "], ["1", "ignored", "two"]) == [
        {"key": "A", "value": "1", "variable_type": "env_var"}, {"key": "B", "value": "two", "variable_type": "env_var"}]
    with pytest.raises(BadData):
        parse_variables(["K"] * 51, ["v"] * 51)
    assert parse_window("30d") == 30 * 86400
    for bad in ("0d", "400d", "soon"):
        with pytest.raises(BadData):
            parse_window(bad)
    assert job_log_query(7, 'say "hi"') == '{job="pitwall-pipelines",pipeline="7",job_name="say \\"hi\\""}'


def test_dora_rows() -> None:
    figs = {"environment": "production", "deployments": 3, "changes": 4, "failed_changes": 1,
            "deployment_frequency_per_day": 0.1, "lead_time_seconds": 3725.0, "change_failure_rate": 0.25,
            "time_to_restore_seconds": None}
    row = dora_row(figs, 2, "shop")
    assert (row.frequency, row.lead_time, row.failure_rate, row.restore) == ("0.10/day", "1h 2m", "25.0%", "—")
    deps = [{"project_id": 2, "environment": "production"}, {"project_id": 2, "environment": "staging"},
            {"project_id": 2, "environment": "production"}, {"project_id": 9, "environment": "production",
                                                             "project": "gone"}]
    assert dora_targets(deps, {2: "shop"}) == [(9, "gone", "production"), (2, "shop", "production"),
                                               (2, "shop", "staging")]


# ---------------------------------------------------------------- routes over a real runner


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[PipelineRunner]:
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    r = PipelineRunner(store, tmp_path / "pipelines", PipelinesSettings(), Reporter(None, None, None))
    await r.start()
    try:
        yield r
    finally:
        await r.stop()
        await store.stop()


def _client(runner: PipelineRunner | None) -> httpx.AsyncClient:
    return ui_client(ui_deps(pipelines=RunnerPipelines(runner) if runner is not None else None))


async def _settled(runner: PipelineRunner, pid: int, want: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        p = await runner.store.pipeline(pid)
        assert p is not None
        driver = runner._drivers.get(pid)
        if p["status"] in want and (driver is None or driver.done()):
            return p
        assert time.monotonic() < deadline, f"pipeline {pid} still {p['status']}"
        await asyncio.sleep(0.05)


async def test_pages_say_not_available_without_the_pillar() -> None:
    async with _client(None) as c:
        for path in ("/pipelines", "/pipelines/dora", "/pipelines/1/1"):
            r = await c.get(path)
            assert r.status_code == 200 and "is not available" in r.text, path


async def test_run_from_the_form_then_graph_log_play_retry(runner: PipelineRunner, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "shop", {".gitlab-ci.yml": CI})
    await runner.store.project_for_path(str(repo.resolve()))  # the project exists once a pipeline ran
    async with _client(runner) as c:
        page = await c.get("/pipelines")
        assert 'name="project"' in page.text and ">shop</option>" in page.text
        r = await c.post("/pipelines/run", data={"project": "1", "ref": "main", "var_key": ["GREETING", "FAIL_UNIT", ""],
                                                 "var_value": ["hello", "1", ""]})
        assert r.status_code == 303, r.text
        m = re.fullmatch(r"/pipelines/1/(\d+)", r.headers["location"])
        assert m is not None
        pid = int(m.group(1))
        p = await _settled(runner, pid, {"failed"})
        assert p["source"] == "web" and {v["key"] for v in p["variables"]} == {"GREETING", "FAIL_UNIT"}

        page = await c.get(f"/pipelines/1/{pid}")
        assert page.status_code == 200
        html = page.text
        assert 'data-need="build" data-job="unit"' in html  # the needs edge
        statuses = re.findall(r'data-testid="job-status">([a-z]+)<', html)
        assert sorted(statuses) == ["failed", "manual", "passed", "passed"], statuses
        assert "GREETING=hello" in html
        jobs = {j["name"]: j for j in await runner.store.jobs(pid)}
        assert f"/ui/fragment/pipelines/jobs/{jobs['unit']['id']}/log" in html  # the failed job's log opens

        frag = await c.get(f"/ui/fragment/pipelines/1/{pid}/graph")
        assert frag.status_code == 200 and frag.text.startswith('<div id="pipeline-graph">')  # done: not polled
        assert 'data-testid="status">failed<' in frag.text and "cancel-pipeline" not in frag.text
        log = await c.get(f"/ui/fragment/pipelines/jobs/{jobs['build']['id']}/log")
        assert "building hello" in log.text and 'data-source="file"' in log.text
        assert "hx-trigger" not in log.text  # finished: no more polling

        # the manual deploy job (needs: [], so it waits for nothing) plays
        r = await c.post(f"/pipelines/1/{pid}/jobs/{jobs['deploy']['id']}/play")
        assert r.status_code == 303 and r.headers["location"].endswith(f"?job={jobs['deploy']['id']}")
        await _settled(runner, pid, {"failed"})
        assert (await runner.store.job(jobs["deploy"]["id"]) or {})["status"] == "success"

        # retry the failed job: a new attempt of `unit`
        r = await c.post(f"/pipelines/1/{pid}/jobs/{jobs['unit']['id']}/retry")
        assert r.status_code == 303
        await _settled(runner, pid, {"failed", "success"})
        units = [j for j in await runner.store.jobs(pid) if j["name"] == "unit"]
        assert len(units) == 2
        page = await c.get(f"/pipelines/1/{pid}")
        assert re.search(r"<td class=\"num\">2</td>", page.text)  # two attempts shown

        # a refused action comes back as a message on the page, nothing changed
        r = await c.post(f"/pipelines/1/{pid}/jobs/{jobs['build']['id']}/play")
        assert r.status_code == 303 and "problem=" in r.headers["location"]
        page = await c.get(r.headers["location"])
        assert "Unplayable Job" in page.text

        listing = await c.get("/pipelines?project=1")
        assert f'href="/pipelines/1/{pid}"' in listing.text and "web by anonymous" in listing.text


async def test_bad_input_is_refused_and_nothing_is_stored(runner: PipelineRunner, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "shop", {".gitlab-ci.yml": CI})
    await runner.store.project_for_path(str(repo.resolve()))
    async with _client(runner) as c:
        r = await c.post("/pipelines/run", data={"project": "1", "ref": "main", "var_key": ["BAD-KEY"],
                                                 "var_value": ["x"]})
        assert r.status_code == 400 and "can contain only letters" in r.text
        assert 'value="BAD-KEY"' in r.text  # the form keeps what was typed
        r = await c.post("/pipelines/run", data={"project": "1", "ref": "no-such-branch"})
        assert r.status_code == 400
        r = await c.post("/pipelines/run", data={"project": "99", "ref": "main"})
        assert r.status_code == 400 and "project 99 does not exist" in r.text
        assert await runner.store.pipelines() == []
        assert (await c.get("/pipelines/1/12345")).status_code == 404
        assert (await c.get("/pipelines/1/nope")).status_code == 404
        assert (await c.post("/pipelines/1/1/explode")).status_code == 404
        assert (await c.get("/pipelines/dora?window=900d")).status_code == 400


async def test_dora_page_lists_each_environment(runner: PipelineRunner, tmp_path: Path) -> None:
    ci = "deploy:\n  script: [echo ok]\n  environment: {name: production}\n"
    repo = make_repo(tmp_path / "shop", {".gitlab-ci.yml": ci})
    p = await runner.create(str(repo), "main", [], source="push")
    await _settled(runner, p["id"], {"success"})
    async with _client(runner) as c:
        r = await c.get("/pipelines/dora?window=7d")
        assert r.status_code == 200
        assert re.search(r'data-testid="frequency">0\.14/day<', r.text), r.text  # 1 deployment in 7 days
        assert r.text.count('data-testid="dora-chart"') == 4
        assert "pitwall_dora_lead_time_seconds" in r.text


@pytest.mark.slow
def test_actions_need_the_write_scope_on_a_live_server(tmp_path: Path) -> None:
    """With auth on, a read token sees the pages but may not run, retry or cancel; a write token may."""
    repo = make_repo(tmp_path / "shop", {".gitlab-ci.yml": "build:\n  script: [echo ok]\n"})
    srv = LiveServer(load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                                   auth_tokens=[{"token": "reader-token-0123456789", "scopes": ["read"]},
                                                {"token": "writer-token-0123456789", "scopes": ["read", "write"]}]))
    srv.start()
    try:
        read = {"Authorization": "Bearer reader-token-0123456789"}
        write = {"Authorization": "Bearer writer-token-0123456789"}
        r = httpx.post(srv.url + "/api/pipelines/v1/runs", json={"repo": str(repo)}, headers=write, timeout=60)
        assert r.status_code == 201, r.text
        first = r.json()["id"]
        assert httpx.get(srv.url + "/pipelines", headers=read, timeout=30).status_code == 200
        form = {"project": "1", "ref": "main"}
        refused = httpx.post(srv.url + "/pipelines/run", data=form, headers=read, timeout=30)
        assert refused.status_code == 403, refused.text
        assert httpx.post(srv.url + f"/pipelines/1/{first}/cancel", headers=read, timeout=30).status_code == 403
        ok = httpx.post(srv.url + "/pipelines/run", data=form, headers=write, timeout=60)
        assert ok.status_code == 303 and ok.headers["location"] == f"/pipelines/1/{first + 1}", ok.text
    finally:
        srv.stop()
