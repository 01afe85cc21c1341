"""The same repositories run by pitwall and by gitlab-ci-local (GitLab's community local runner, shell
executor): the same jobs run, in an order that satisfies the same constraints, with the same final statuses
and the same artifacts.

gitlab-ci-local is installed from npm into ``~/.cache/pitwall-tests`` on first use; the test skips only when
npm (or node) is absent. gitlab-ci-local 4.65 does not implement ``retry``; the retried job here fails on
every attempt, so final statuses agree, and pitwall's attempts are checked on their own. It names the jobs of
``parallel: N`` ``job: [1/N]`` where GitLab (and pitwall) name them ``job 1/N``; the comparison maps its names.
Its ``artifacts:exclude``, and any ``after_script``, leave the artifacts empty under ``--shell-isolation``
(4.65), so jobs mark their end with an EXIT trap and exclude is tested against pitwall alone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pitwall.pipelines.runner import PipelineRunner, latest_jobs
from tests.pipelines.conftest import make_repo, wait_done

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

GCL_VERSION = "4.65.1"  # the last 4.x that runs on Node 20 (later ones need Node 22's Set methods)
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pitwall-tests" / f"gcl-{GCL_VERSION}"

CI = """
stages: [build, test, deploy]
default:
  before_script:
    - echo "start $CI_JOB_NAME" >> "$ORDER_LOG"
    - trap 'echo "end $CI_JOB_NAME" >> "$ORDER_LOG"' EXIT
build:
  stage: build
  parallel:
    matrix:
      - OS: [linux, mac]
  script:
    - mkdir -p out && echo "built for $OS on $CI_COMMIT_BRANCH" > out/$OS.txt
  artifacts:
    paths: [out/]
lint:
  stage: test
  needs: []
  script: [echo lint, exit 2]
  allow_failure: true
unit:
  stage: test
  needs: [build]
  script: [ls out, cat out/linux.txt out/mac.txt, 'echo "report of $CI_JOB_NAME" > unit.txt']
  artifacts:
    paths: [unit.txt]
isolated:
  stage: test
  dependencies: []
  script: [test ! -e out, echo no artifacts here]
flaky:
  stage: test
  retry: 2
  script: [echo always fails, exit 1]
sharded:
  stage: test
  parallel: 2
  script: ['echo "shard $CI_NODE_INDEX of $CI_NODE_TOTAL"']
on-main:
  stage: test
  rules:
    - if: $CI_COMMIT_BRANCH == "main" && $MODE =~ /^fast/
  script: [echo on main]
not-on-main:
  stage: test
  rules:
    - if: $CI_COMMIT_BRANCH != "main"
  script: [echo never here]
package:
  stage: deploy
  script: [echo packaging]
cleanup:
  stage: deploy
  when: always
  script: [echo cleanup]
notify:
  stage: deploy
  when: on_failure
  script: [echo something failed]
approve:
  stage: deploy
  when: manual
  script: [echo approved]
"""

CI_GREEN = """
stages: [build, test, deploy]
default:
  before_script:
    - echo "start $CI_JOB_NAME" >> "$ORDER_LOG"
    - trap 'echo "end $CI_JOB_NAME" >> "$ORDER_LOG"' EXIT
.tmpl:
  variables: {GREETING: hello}
compile:
  extends: .tmpl
  stage: build
  script: ['mkdir -p bin && echo "$GREETING from compile" > bin/app']
  artifacts: {paths: [bin/app]}
test-a:
  stage: test
  script: [cat bin/app]
test-b:
  stage: test
  needs: [compile]
  script: [test -s bin/app]
deploy:
  stage: deploy
  needs: [test-b]
  script: [echo deploy]
onfail:
  stage: deploy
  when: on_failure
  script: [echo not reached]
finally:
  stage: deploy
  when: always
  script: [echo finally]
gate:
  stage: deploy
  when: manual
  script: [echo gate]
"""


def _gitlab_ci_local() -> Path:
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("npm/node are not installed: gitlab-ci-local (the reference runner) cannot be installed")
    exe = CACHE / "node_modules" / ".bin" / "gitlab-ci-local"
    if not exe.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([npm, "install", "--prefix", str(CACHE), f"gitlab-ci-local@{GCL_VERSION}"],
                           capture_output=True, text=True, timeout=300, check=False)
        assert r.returncode == 0, f"npm install gitlab-ci-local failed: {r.stderr[-2000:]}"
    if shutil.which("rsync") is None:
        pytest.skip("gitlab-ci-local's shell isolation needs rsync, which is not installed")
    return exe


def _gcl(exe: Path, repo: Path, order_log: Path, manual: list[str]) -> tuple[dict[str, str], list[frozenset[Any]]]:
    """Run gitlab-ci-local in ``repo``; its final verdicts (PASS/WARN/FAIL by job) and artifact sets."""
    args = [str(exe), "--shell-isolation", "--color=false", "--variable", f"ORDER_LOG={order_log}",
            "--variable", "MODE=fast-lane", "--concurrency", "2"]
    for m in manual:
        args += ["--manual", m]
    r = subprocess.run(args, cwd=repo, capture_output=True, text=True, timeout=300, check=False)
    verdicts: dict[str, str] = {}
    for line in r.stdout.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and parts[0] in ("PASS", "WARN", "FAIL") and line.startswith(" "):
            name = parts[1].rstrip()
            if parts[0] == "WARN":  # "WARN  lint    pre_script": the job name ends before the phase
                name = name.rsplit(None, 1)[0] if name.endswith(("pre_script", "after_script")) else name
            verdicts[_gitlab_name(name.strip())] = parts[0]
    assert verdicts, f"no verdicts from gitlab-ci-local:\n{r.stdout[-3000:]}\n{r.stderr[-2000:]}"
    return verdicts, _artifact_sets(repo / ".gitlab-ci-local" / "artifacts")


def _gitlab_name(name: str) -> str:
    """gitlab-ci-local's ``job: [1/3]`` is GitLab's ``job 1/3``."""
    m = re.fullmatch(r"(.*): \[(\d+/\d+)\]", name)
    return f"{m.group(1)} {m.group(2)}" if m else name


def _artifact_sets(root: Path) -> list[frozenset[Any]]:
    """Per job, the set of (path, content) of its artifacts; jobs without artifacts left out."""
    out = []
    if root.is_dir():
        for job in sorted(root.iterdir()):
            files = frozenset((p.relative_to(job).as_posix(), p.read_bytes()) for p in job.rglob("*") if p.is_file())
            if files:
                out.append(files)
    return sorted(out, key=sorted)


async def _pitwall(runner: PipelineRunner, repo: Path, order_log: Path, manual: list[str]
                   ) -> tuple[dict[str, str], list[frozenset[Any]], dict[str, Any], dict[str, dict[str, Any]]]:
    p = await runner.create(str(repo), None, [{"key": "ORDER_LOG", "value": str(order_log)},
                                               {"key": "MODE", "value": "fast-lane"}])
    p, jobs = await wait_done(runner, p["id"], timeout=240)
    for name in manual:
        if jobs[name]["status"] == "manual":  # a manual job after a failed stage is skipped, not playable
            await runner.play_job(jobs[name]["id"])
            p, jobs = await wait_done(runner, p["id"], timeout=240)
    verdicts = {}
    for name, j in jobs.items():
        if j["status"] == "success":
            verdicts[name] = "PASS"
        elif j["status"] == "failed":
            verdicts[name] = "WARN" if j["allow_failure"] else "FAIL"
    sets = []
    for j in jobs.values():
        d = runner.executor.artifacts_dir(j["id"]) / "files"
        files = frozenset((f.relative_to(d).as_posix(), f.read_bytes()) for f in d.rglob("*") if f.is_file()) \
            if d.is_dir() else frozenset()
        if files:
            sets.append(files)
    return verdicts, sorted(sets, key=sorted), p, jobs


def _constraints(p: dict[str, Any]) -> list[tuple[str, str]]:
    """(before, after) pairs the pipeline's definition imposes: needs, else every job of earlier stages."""
    out = []
    planned = p["plan"]["jobs"]
    for j in planned:
        preds = [n for n, _ in j["needs"]] if j["needs"] is not None else \
            [x["name"] for x in planned if x["stage_idx"] < j["stage_idx"]]
        out.extend((a, j["name"]) for a in preds)
    return out


def _check_order(log: Path, pairs: list[tuple[str, str]], ran: set[str]) -> None:
    lines = [f"{w} {_gitlab_name(n)}" for w, n in (x.split(" ", 1) for x in log.read_text().splitlines())]
    for a, b in pairs:
        if a in ran and b in ran:
            assert lines.index(f"end {a}") < lines.index(f"start {b}"), (a, b, lines)


@pytest.mark.parametrize(("ci", "manual"), [(CI, []), (CI, ["approve"]), (CI_GREEN, ["gate"])],
                         ids=["mixed", "mixed-manual-asked", "green-manual-played"])
async def test_same_as_gitlab_ci_local(runner_env: Any, tmp_path: Path, ci: str, manual: list[str]) -> None:
    exe = _gitlab_ci_local()
    runner, _, _ = runner_env
    repo = make_repo(tmp_path / "repo", {".gitlab-ci.yml": ci, "README.md": "demo\n"})
    subprocess.run(["git", "-C", str(repo), "remote", "add", "origin", "https://gitlab.example.com/demo/repo.git"],
                   check=True)
    ref_verdicts, ref_artifacts = _gcl(exe, repo, tmp_path / "gcl-order.log", manual)
    verdicts, artifacts, p, jobs = await _pitwall(runner, repo, tmp_path / "pitwall-order.log", manual)

    assert verdicts == ref_verdicts
    assert artifacts == ref_artifacts
    pairs = _constraints(p)
    _check_order(tmp_path / "gcl-order.log", pairs, set(ref_verdicts))
    _check_order(tmp_path / "pitwall-order.log", pairs, set(verdicts))
    if ci is CI:
        # what gitlab-ci-local does not model: the attempts of a retried job, and statuses of jobs not run
        attempts = [j for j in await runner.store.jobs(p["id"]) if j["name"] == "flaky"]
        assert [j["status"] for j in attempts] == ["failed"] * 3
        assert p["status"] == "failed" and jobs["package"]["status"] == "skipped"
        assert "not-on-main" not in jobs and latest_jobs(attempts)[0]["attempt"] == 3
        assert jobs["approve"]["status"] == "skipped"  # after the failed stage, played or not
    else:
        assert p["status"] == "success" and jobs["onfail"]["status"] == "skipped"
