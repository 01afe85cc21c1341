"""Push triggers: a watched repository's moved refs start pipelines with the push's before SHA."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from pitwall.pipelines.settings import WatchedRepo
from pitwall.pipelines.watch import RepoWatcher
from tests.pipelines.conftest import make_repo, wait_done

pytestmark = pytest.mark.timeout(120)

CI = """
backend:
  rules:
    - changes: [src/**/*]
  script: ['echo "$CI_PIPELINE_SOURCE $CI_COMMIT_BEFORE_SHA"']
docs:
  rules:
    - changes: [docs/*]
  script: [echo docs]
"""


def commit(repo: Path, files: dict[str, str], msg: str) -> str:
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", msg], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


async def test_push_starts_a_pipeline_with_the_changes_of_the_push(runner_env: Any, tmp_path: Path) -> None:
    runner, _, _ = runner_env
    repo = make_repo(tmp_path / "repo", {".gitlab-ci.yml": CI, "src/app.py": "v1\n", "docs/a.md": "a\n"})
    before = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    w = RepoWatcher(runner, [WatchedRepo(repo=repo, refs=["main", "feature-*"])], 3600)
    assert await w.poll(w.watch[0]) == []  # first sight: recorded, nothing run
    assert await w.poll(w.watch[0]) == []  # nothing moved
    after = commit(repo, {"src/app.py": "v2\n"}, "change the code")
    [pid] = await w.poll(w.watch[0])
    p, jobs = await wait_done(runner, pid)
    assert p["source"] == "push" and p["sha"] == after and p["before_sha"] == before
    assert list(jobs) == ["backend"]  # docs/ did not change in this push
    assert f"push {before}" in runner.trace(jobs["backend"]["id"]).decode()
    # a new branch (before SHA all zeros) counts every rules:changes as changed, as GitLab does
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "-b", "feature-x"], check=True)
    commit(repo, {"docs/a.md": "b\n"}, "docs")
    subprocess.run(["git", "-C", str(repo), "branch", "-q", "other"], check=True)  # not watched
    subprocess.run(["git", "-C", str(repo), "tag", "v1"], check=True)  # tags only when a pattern names them
    [pid] = await w.poll(w.watch[0])
    p, jobs = await wait_done(runner, pid)
    assert p["ref"] == "feature-x" and p["before_sha"] == "0" * 40 and sorted(jobs) == ["backend", "docs"]
    # the last SHAs are stored: a new watcher (a restarted server) does not run them again
    w2 = RepoWatcher(runner, w.watch, 3600)
    assert await w2.poll(w.watch[0]) == []


async def test_servers_sharing_the_store_start_a_push_once(runner_env: Any, tmp_path: Path) -> None:
    import asyncio

    runner, _, _ = runner_env
    repo = make_repo(tmp_path / "repo", {".gitlab-ci.yml": "build:\n  script: [echo build]\n"})
    spec = [WatchedRepo(repo=repo)]
    a, b = RepoWatcher(runner, spec, 3600), RepoWatcher(runner, spec, 3600)  # two servers, one store
    await a.poll(spec[0])
    commit(repo, {"x.txt": "1\n"}, "push")
    started = await asyncio.gather(a.poll(spec[0]), b.poll(spec[0]))
    assert sorted(len(s) for s in started) == [0, 1]
    await wait_done(runner, next(pid for s in started for pid in s))


async def test_a_broken_push_starts_nothing(runner_env: Any, tmp_path: Path) -> None:
    runner, _, _ = runner_env
    repo = make_repo(tmp_path / "repo", {".gitlab-ci.yml": CI, "src/app.py": "v1\n"})
    w = RepoWatcher(runner, [WatchedRepo(repo=repo)], 3600)
    await w.poll(w.watch[0])
    commit(repo, {".gitlab-ci.yml": "job:\n  scirpt: [x]\n"}, "typo")
    assert await w.poll(w.watch[0]) == []
    assert await runner.store.pipelines() == []


@pytest.mark.slow
def test_gitlab_push_webhook_on_a_live_server(tmp_path: Path) -> None:
    """A GitLab push hook (its secret token is a pitwall write token) starts the pushed ref's pipeline at once."""
    import time

    import httpx

    from pitwall.config import load_settings
    from tests.conftest import LiveServer

    token = "hook-secret-token-0123456789"
    repo = make_repo(tmp_path / "shop", {".gitlab-ci.yml": CI, "src/app.py": "v1\n"})
    s = load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                      auth_tokens=[{"token": token, "name": "gitlab-hook", "scopes": ["read", "write"]}],
                      pipelines={"watch": [{"repo": str(repo)}], "watch_interval": "1h"})
    srv = LiveServer(s)
    srv.start()
    try:
        watcher = srv.app.state.components.control_plane.pipelines.watcher
        deadline = time.monotonic() + 30
        while watcher.polls == 0:  # the first poll records the refs as they are
            assert time.monotonic() < deadline
            time.sleep(0.05)
        after = commit(repo, {"src/app.py": "v2\n"}, "v2")
        hook = {"object_kind": "push", "ref": "refs/heads/main", "after": after, "project": {"name": "shop"}}
        url = srv.url + "/gitlab/hooks/push"
        assert httpx.post(url, json=hook, headers={"X-Gitlab-Token": "wrong-token-0123456789"}).status_code == 401
        r = httpx.post(url, json={**hook, "project": {"name": "other"}}, headers={"X-Gitlab-Token": token})
        assert r.status_code == 404 and "no watched repository" in r.json()["message"]
        r = httpx.post(url, json=hook, headers={"X-Gitlab-Token": token})
        assert r.status_code == 200, r.text
        [pid] = r.json()["pipelines"]
        p = httpx.get(f"{srv.url}/gitlab/api/v4/projects/1/pipelines/{pid}", headers={"PRIVATE-TOKEN": token}).json()
        assert p["source"] == "push" and p["sha"] == after and p["before_sha"] != "0" * 40
    finally:
        srv.stop()

