"""The runner over a SQLite revstore: statuses, artifacts, cache, timeouts, log caps, masking, cancel, delayed and
resource_group jobs, auto-cancel of interruptible jobs, and recovery after a server died mid-job."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from pitwall.core.errors import BadData, Unavailable
from pitwall.pipelines.runner import PipelineRunner
from tests.pipelines.conftest import make_repo, wait_done

pytestmark = pytest.mark.timeout(120)


async def run(runner: PipelineRunner, tmp_path: Path, ci: str, files: dict[str, str] | None = None,
              variables: list[dict[str, Any]] | None = None, until: set[str] | None = None
              ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    repo = tmp_path / "repo"
    if not repo.exists():
        make_repo(repo, {".gitlab-ci.yml": ci, **(files or {})})
    p = await runner.create(str(repo), None, variables or [])
    return await wait_done(runner, p["id"], until=until)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it is dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def trace(runner: PipelineRunner, j: dict[str, Any]) -> str:
    return runner.trace(j["id"]).decode()


async def test_stage_order_needs_and_artifacts(runner_env: Any, tmp_path: Path) -> None:
    runner, _sink, _ = runner_env
    p, jobs = await run(runner, tmp_path, """
build:
  stage: build
  script: ['mkdir -p dist && echo app > dist/app && echo map > dist/app.map && echo junk > junk.txt']
  artifacts: {paths: [dist/], exclude: ['dist/*.map']}
docs:
  stage: build
  script: ['echo docs > docs.txt']
  artifacts: {paths: [docs.txt]}
test:
  stage: test
  needs: [{job: build, artifacts: false}]
  script: [test ! -e dist/app, test ! -e docs.txt]
package:
  stage: test
  dependencies: [build]
  script: [cat dist/app, test ! -e dist/app.map, test ! -e docs.txt, test ! -e junk.txt]
all:
  stage: deploy
  script: [cat dist/app docs.txt]
""")
    assert p["status"] == "success", {n: (j["status"], trace(runner, j)) for n, j in jobs.items()}
    assert jobs["build"]["artifacts_files"] == 1
    files = sorted(f.name for f in (runner.executor.artifacts_dir(jobs["build"]["id"]) / "files").rglob("*"))
    assert files == ["app", "dist"]
    assert jobs["test"]["started_at"] >= jobs["build"]["finished_at"]
    assert jobs["all"]["started_at"] >= max(j["finished_at"] for n, j in jobs.items() if n != "all")


async def test_working_copies_are_clean_and_removed(runner_env: Any, tmp_path: Path) -> None:
    runner, _, _ = runner_env
    p, jobs = await run(runner, tmp_path, """
a:
  stage: build
  script: ['echo leak > leak.txt', 'git status --porcelain', 'echo "$CI_PROJECT_DIR" > /dev/null']
b:
  stage: test
  script: [test ! -e leak.txt, test -f tracked.txt, 'test "$(git rev-parse HEAD)" = "$CI_COMMIT_SHA"']
""", files={"tracked.txt": "x\n"})
    assert p["status"] == "success", trace(runner, jobs["b"])
    assert not any((runner.root / "builds").iterdir())


async def test_timeout_kills_the_process_group(runner_env: Any, tmp_path: Path) -> None:
    runner, _, _ = runner_env
    pidfile = tmp_path / "child.pid"
    p, jobs = await run(runner, tmp_path, f"""
slow:
  timeout: 1s
  script: ['sleep 60 & echo $! > {pidfile}; wait']
""")
    j = jobs["slow"]
    assert p["status"] == "failed" and j["failure_reason"] == "job_execution_timeout"
    assert "execution took longer than 1 seconds" in trace(runner, j)
    assert not _alive(int(pidfile.read_text()))


async def test_log_cap_and_masking(runner_env: Any, tmp_path: Path) -> None:
    _, _, make = runner_env
    runner = make(max_log_bytes=2048)
    await runner.start()
    secret = "topsecret-42-value"
    _p, jobs = await run(runner, tmp_path, """
noisy:
  script:
    - echo "key=$KEY"
    - printf 'split %s' "$KEY"; echo
    - for i in $(seq 1 500); do echo "line $i"; done
    - echo still running
""", variables=[{"key": "KEY", "value": secret, "masked": True}])
    j = jobs["noisy"]
    text = trace(runner, j)
    assert j["status"] == "success" and secret not in text
    assert "key=[MASKED]" in text and "split [MASKED]" in text
    assert "Job's log exceeded limit of 2048 bytes." in text and "line 400" not in text
    assert len(text.encode()) < 2048 + 200


async def test_masked_variables_are_validated(runner_env: Any, tmp_path: Path) -> None:
    runner, _, _ = runner_env
    make_repo(tmp_path / "repo", {".gitlab-ci.yml": "a: {script: [x]}\n"})
    with pytest.raises(BadData, match="cannot be masked"):
        await runner.create(str(tmp_path / "repo"), None, [{"key": "K", "value": "short", "masked": True}])
    with pytest.raises(BadData, match="can contain only letters"):
        await runner.create(str(tmp_path / "repo"), None, [{"key": "A-B", "value": "x"}])
    with pytest.raises(BadData, match="Reference not found"):
        await runner.create(str(tmp_path / "repo"), "no-such-branch", [])
    assert await runner.store.pipelines() == []  # nothing stored for refused pipelines


async def test_retry_exit_codes_and_allow_failure_exit_codes(runner_env: Any, tmp_path: Path) -> None:
    runner, _, _ = runner_env
    p, jobs = await run(runner, tmp_path, """
soft:
  script: [exit 3]
  allow_failure: {exit_codes: [3]}
hard:
  script: [exit 4]
  allow_failure: {exit_codes: [3]}
  retry: {max: 2, exit_codes: [5]}
again:
  script: [exit 5]
  retry: {max: 1, when: script_failure, exit_codes: [5]}
""")
    assert jobs["soft"]["status"] == "failed" and jobs["soft"]["allow_failure"] is True
    assert jobs["hard"]["allow_failure"] is False and jobs["hard"]["attempt"] == 1
    assert jobs["again"]["attempt"] == 2
    assert p["status"] == "failed"


async def test_cache_is_kept_between_pipelines(runner_env: Any, tmp_path: Path) -> None:
    runner, _, _ = runner_env
    ci = """
build:
  cache: {key: deps-$CI_COMMIT_REF_SLUG, paths: [deps/]}
  script:
    - if [ -f deps/count ]; then echo $(( $(cat deps/count) + 1 )) > deps/count; else mkdir -p deps; echo 1 > deps/count; fi
    - cat deps/count
"""
    _, jobs = await run(runner, tmp_path, ci)
    _, jobs2 = await run(runner, tmp_path, ci)
    assert trace(runner, jobs["build"]).count("\n1\n") == 1
    assert "\n2\n" in trace(runner, jobs2["build"])


async def test_cancel_running_job_and_pipeline(runner_env: Any, tmp_path: Path) -> None:
    runner, _, _ = runner_env
    make_repo(tmp_path / "repo", {".gitlab-ci.yml": "a:\n  script: [sleep 60]\nb:\n  stage: deploy\n  script: [x]\n"})
    p = await runner.create(str(tmp_path / "repo"), None, [])
    deadline = time.monotonic() + 30
    while (await runner.store.pipeline(p["id"]) or {})["status"] != "running":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await runner.cancel_pipeline(p["id"])
    p, jobs = await wait_done(runner, p["id"])
    assert p["status"] == "canceled" and jobs["a"]["status"] == "canceled" and jobs["b"]["status"] == "canceled"
    new = await runner.retry_pipeline(p["id"])
    assert new["status"] == "running"


async def test_delayed_and_manual_play(runner_env: Any, tmp_path: Path) -> None:
    runner, _, _ = runner_env
    p, jobs = await run(runner, tmp_path, """
later:
  when: delayed
  start_in: 1 second
  script: [echo later]
gate:
  when: manual
  allow_failure: false
  script: [echo gate]
after:
  stage: deploy
  script: [echo after]
""", until={"manual"})
    assert jobs["later"]["status"] == "success" and jobs["gate"]["status"] == "manual"
    assert jobs["after"]["status"] == "created"  # a blocking manual job holds the next stage
    await runner.play_job(jobs["gate"]["id"])
    p, jobs = await wait_done(runner, p["id"])
    assert p["status"] == "success" and jobs["after"]["status"] == "success"
    with pytest.raises(BadData, match="Unplayable"):
        await runner.play_job(jobs["gate"]["id"])


async def test_resource_group_serialises(runner_env: Any, tmp_path: Path) -> None:
    runner, _, _ = runner_env
    log = tmp_path / "rg.log"
    job = f"  resource_group: prod\n  script: ['echo start >> {log}', 'sleep 0.3', 'echo end >> {log}']\n"
    make_repo(tmp_path / "repo", {".gitlab-ci.yml": "a:\n" + job + "b:\n" + job})
    p = await runner.create(str(tmp_path / "repo"), None, [])
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while (await runner.store.pipeline(p["id"]) or {})["status"] != "success":
        seen.update(j["status"] for j in await runner.store.jobs(p["id"]))
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert "waiting_for_resource" in seen
    assert log.read_text().split() == ["start", "end", "start", "end"]


@pytest.mark.parametrize(("mode", "after"), [("conservative", "canceled"), ("interruptible", "created"),
                                             ("none", "created")])
async def test_new_pipeline_cancels_interruptible_jobs(runner_env: Any, tmp_path: Path, mode: str,
                                                       after: str) -> None:
    runner, _, _ = runner_env
    ci = (f"workflow: {{auto_cancel: {{on_new_commit: {mode}}}}}\n"
          "slow:\n  interruptible: true\n  script: [sleep 60]\n"
          "next:\n  stage: deploy\n  script: [echo next]\n")
    make_repo(tmp_path / "repo", {".gitlab-ci.yml": ci})
    first = await runner.create(str(tmp_path / "repo"), None, [])
    deadline = time.monotonic() + 30
    while (await runner.store.pipeline(first["id"]) or {})["status"] != "running":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    second = await runner.create(str(tmp_path / "repo"), None, [])
    if mode == "none":
        await asyncio.sleep(0.5)
        jobs = {j["name"]: j for j in await runner.store.jobs(first["id"])}
        assert jobs["slow"]["status"] == "running" and jobs["next"]["status"] == "created"
    else:
        p, jobs = await wait_done(runner, first["id"])
        assert jobs["slow"]["status"] == "canceled"
        # conservative cancels the whole pipeline; interruptible only the interruptible job, so "next" is
        # skipped after the canceled stage instead
        assert jobs["next"]["status"] == ("canceled" if after == "canceled" else "skipped")
        assert p["status"] == "canceled"
    await runner.cancel_pipeline(first["id"])
    await runner.cancel_pipeline(second["id"])


async def test_restart_marks_running_jobs_failed(runner_env: Any, tmp_path: Path) -> None:
    runner, _, make = runner_env
    make_repo(tmp_path / "repo", {".gitlab-ci.yml": "a:\n  script: [sleep 60]\nb:\n  stage: deploy\n  script: [x]\n"})
    p = await runner.create(str(tmp_path / "repo"), None, [])
    deadline = time.monotonic() + 30
    while True:
        jobs = await runner.store.jobs(p["id"])
        if any(j["status"] == "running" for j in jobs):
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    # the server dies: its tasks vanish without recording anything
    runner._stopping = True
    for t in [*runner._drivers.values(), *runner._tasks]:
        t.cancel()
    await asyncio.gather(*runner._drivers.values(), *runner._tasks, return_exceptions=True)
    second = make()  # the same data directory: the same runner, so its pipelines are recovered at once
    await second.start()
    p, jobs = await wait_done(second, p["id"])
    assert p["status"] == "failed"
    assert jobs["a"]["status"] == "failed" and jobs["a"]["failure_reason"] == "runner_system_failure"
    assert "runner restarted" in second.trace(jobs["a"]["id"]).decode()
    assert jobs["b"]["status"] == "skipped"
    await second.retry_pipeline(p["id"])
    assert (await second.store.pipeline(p["id"]) or {})["status"] == "running"
    await second.cancel_pipeline(p["id"])


async def test_reports_logs_metrics_and_change_events(runner_env: Any, tmp_path: Path) -> None:
    runner, sink, _ = runner_env
    p, _jobs = await run(runner, tmp_path, """
deploy:
  script: [echo rolling out $CI_ENVIRONMENT_NAME]
  environment: {name: production, url: https://shop.example.com}
""")
    labels, _ = next((lbl, line) for lbl, line in sink.lines if "rolling out" in line)
    assert labels == {"job": "pitwall-pipelines", "pipeline": str(p["id"]), "job_name": "deploy", "project": "repo",
                      "ref": "main"}
    assert any("rolling out production" in line for _, line in sink.lines)
    names = {n for n, _, _ in sink.samples}
    assert {"pitwall_pipeline_job_duration_seconds", "pitwall_pipeline_duration_seconds",
            "pitwall_pipeline_jobs"} <= names
    kinds = [(e.kind, e.service) for e in sink.changes]
    assert ("deploy", "production") in kinds and ("pipeline", "repo") in kinds


async def test_junit_report(runner_env: Any, tmp_path: Path) -> None:
    runner, _, _ = runner_env
    xml = ('<testsuites><testsuite name="s"><testcase classname="c" name="t1" time="1.5"/>'
           '<testcase classname="c" name="t2"><skipped/></testcase></testsuite></testsuites>')
    _p, jobs = await run(runner, tmp_path, """
test:
  script: [cp report.xml junit.xml]
  artifacts: {reports: {junit: junit.xml}}
""", files={"report.xml": xml})
    rep = runner.junit(jobs["test"]["id"])
    assert rep is not None and rep["total_count"] == 2 and rep["skipped_count"] == 1 and rep["total_time"] == 1.5


async def test_expired_artifacts_are_removed(runner_env: Any, tmp_path: Path) -> None:
    runner, _, _ = runner_env
    _, jobs = await run(runner, tmp_path, """
short:
  script: [echo a > a.txt]
  artifacts: {paths: [a.txt], expire_in: 1 hour}
kept:
  script: [echo b > b.txt]
  artifacts: {paths: [b.txt], expire_in: never}
default:
  script: [echo c > c.txt]
  artifacts: {paths: [c.txt]}
""".replace("default:", "dflt:"))
    short, kept, dflt = jobs["short"], jobs["kept"], jobs["dflt"]
    assert short["artifacts_expire_at"] - short["finished_at"] == pytest.approx(3600)
    assert kept["artifacts_expire_at"] is None
    assert dflt["artifacts_expire_at"] - dflt["finished_at"] == pytest.approx(30 * 86400)  # the retention
    assert await runner.sweep_artifacts(short["finished_at"] + 3500) == 0
    assert await runner.sweep_artifacts(short["finished_at"] + 3601) == 1
    assert not (runner.executor.artifacts_dir(short["id"]) / "files").exists()
    assert (runner.executor.artifacts_dir(kept["id"]) / "files" / "b.txt").exists()
    assert (await runner.store.job(short["id"]) or {})["artifacts_files"] == 0


async def test_servers_sharing_a_store_leave_each_others_pipelines_alone(runner_env: Any, tmp_path: Path) -> None:
    a, _, _ = runner_env
    make_repo(tmp_path / "repo", {".gitlab-ci.yml": "slow:\n  script: [sleep 60]\n"})
    p = await a.create(str(tmp_path / "repo"), None, [])
    deadline = time.monotonic() + 30
    while not any(j["status"] == "running" for j in await a.store.jobs(p["id"])):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    b = PipelineRunner(a.store.store, tmp_path / "other-server", a.settings, a.reporter)
    await b.start()
    try:
        assert [j["status"] for j in await b.store.jobs(p["id"])] == ["running"]
        with pytest.raises(Unavailable, match="send the request to that server"):
            await b.cancel_pipeline(p["id"])
        # a dies: its tasks vanish and its lease lapses
        a._stopping = True
        for t in [*a._drivers.values(), *a._tasks]:
            t.cancel()
        await asyncio.gather(*a._drivers.values(), *a._tasks, return_exceptions=True)
        await a.store.store.revoke(a._lease)
        await b._recover()
        p2, jobs = await wait_done(b, p["id"])
        assert p2["status"] == "failed" and p2["runner"] == b.runner_id
        assert jobs["slow"]["failure_reason"] == "runner_system_failure"
    finally:
        await b.stop()


async def test_coverage_from_the_log(runner_env: Any, tmp_path: Path) -> None:
    runner, _, _ = runner_env
    p, jobs = await run(runner, tmp_path, """
unit:
  coverage: '/TOTAL.+ ([0-9]{1,3}(?:\\.[0-9]+)?%)/'
  script: ['echo "TOTAL   120   12   80%"', 'echo "TOTAL   130   10   92.5%"', echo done]
none:
  coverage: '/Coverage: \\d+/'
  script: [echo nothing]
""")
    assert jobs["unit"]["coverage"] == 92.5 and jobs["none"]["coverage"] is None
    assert p["coverage"] == "92.50"
