"""Push triggers against a live server: pitwall's post-receive hook installed with the real CLI and a real
``git push`` into a bare repository; GitHub's signed push webhooks into a local mirror of the pushed repo."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pitwall.config import load_settings
from tests.conftest import LiveServer
from tests.pipelines.conftest import make_repo

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

TOKEN = "hook-token-0123456789abcdef"
GH_SECRET = "github-webhook-secret-42"
ZERO = "0" * 40
CI = "build:\n  script: ['echo \"$CI_PIPELINE_SOURCE $CI_COMMIT_BEFORE_SHA $CI_COMMIT_SHA\"']\n"


def git(*args: str, cwd: Path | None = None) -> str:
    out = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd,
                         check=True, capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


def commit(work: Path, rel: str, text: str) -> str:
    (work / rel).write_text(text)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", f"change {rel}", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PITWALL_URL": url, "PITWALL_TOKEN": TOKEN}
    return subprocess.run([sys.executable, "-m", "pitwall.cli.main", "pipelines", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hooks")


@pytest.fixture(scope="module")
def bare(root: Path) -> tuple[Path, Path]:
    """A bare repository (watched, polled once an hour) and a working clone that pushes to it."""
    seed = make_repo(root / "seed", {".gitlab-ci.yml": CI})
    bare = root / "app.git"
    git("clone", "-q", "--bare", str(seed), str(bare))
    work = root / "work"
    git("clone", "-q", str(bare), str(work))
    return bare, work


@pytest.fixture(scope="module")
def github(root: Path) -> tuple[Path, Path, Path]:
    """"GitHub's" repository (a bare repo), pitwall's mirror of it (origin: GitHub's) and a developer's clone."""
    seed = make_repo(root / "gh-seed", {".gitlab-ci.yml": CI})
    remote = root / "github" / "shop.git"
    git("clone", "-q", "--bare", str(seed), str(remote))
    mirror = root / "mirror" / "shop.git"
    git("clone", "-q", "--mirror", str(remote), str(mirror))
    dev = root / "dev"
    git("clone", "-q", str(remote), str(dev))
    return remote, mirror, dev


@pytest.fixture(scope="module")
def server(root: Path, bare: tuple[Path, Path], github: tuple[Path, Path, Path]) -> Iterator[LiveServer]:
    s = load_settings(data_dir=root / "data", listen="127.0.0.1:0", storage={"fsync": False},
                      auth_tokens=[{"token": TOKEN, "name": "ci", "scopes": ["read", "write"]}],
                      pipelines={"watch": [{"repo": str(bare[0])}, {"repo": str(github[1])}],
                                 "watch_interval": "1h", "github_secret": GH_SECRET})
    srv = LiveServer(s)
    srv.start()
    yield srv
    srv.stop()


def wait_pipeline(url: str, pid: int) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while True:
        p: dict[str, Any] = httpx.get(f"{url}/api/pipelines/v1/pipelines/{pid}",
                                      headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
        if p["status"] in ("success", "failed", "canceled"):
            return p
        assert time.monotonic() < deadline, p
        time.sleep(0.2)


def started(push_stderr: str) -> list[int]:
    """Pipeline ids from the hook's "remote: pitwall: started pipeline #N" line."""
    for line in push_stderr.splitlines():
        if "pitwall: started pipeline" in line:
            return [int(x.strip(" #,")) for x in line.split("pipeline", 1)[1].split(",")]
    raise AssertionError(push_stderr)


def test_a_push_into_a_bare_repository_starts_its_pipeline_at_once(server: LiveServer, bare: tuple[Path, Path]
                                                                   ) -> None:
    repo, work = bare
    marker = repo.parent / "old-hook-ran"
    old = repo / "hooks" / "post-receive"
    old.write_text(f"#!/bin/sh\ncat > {marker}\nexit 0\n")
    old.chmod(0o755)
    r = cli(server.url, "hook", "install", str(repo), "--project", "app")
    assert r.returncode == 0 and "the existing hook is kept" in r.stdout, r.stderr
    r = cli(server.url, "hook", "install", str(repo), "--project", "app")  # again: updated, nothing chained twice
    assert r.returncode == 0 and r.stdout.startswith("updated") and "kept" not in r.stdout, r.stderr
    assert oct((repo / "hooks" / "pitwall.json").stat().st_mode & 0o777) == "0o600"
    before = git("rev-parse", "HEAD", cwd=work)
    after = commit(work, "a.txt", "1\n")
    push = subprocess.run(["git", "push", "-q", "origin", "HEAD:main"], cwd=work, capture_output=True, text=True,
                          timeout=60, check=True)
    [pid] = started(push.stderr)
    p = wait_pipeline(server.url, pid)
    assert p["status"] == "success" and p["source"] == "push" and p["sha"] == after and p["before_sha"] == before
    assert marker.read_text().split() == [before, after, "refs/heads/main"]  # the chained hook got the same input
    gl = httpx.get(f"{server.url}/gitlab/api/v4/projects/{p['project_id']}", headers={"PRIVATE-TOKEN": TOKEN}).json()
    assert gl["name"] == "app"
    # a second delivery of the same push (or the poll racing the hook) starts nothing more
    again = httpx.post(f"{server.url}/api/pipelines/v1/hooks/git", headers={"Authorization": f"Bearer {TOKEN}"},
                       json={"repo": str(repo), "refs": [{"before": before, "after": after, "ref": "refs/heads/main"}]})
    assert again.status_code == 200 and again.json() == {"pipelines": []}
    # a new branch (before all zeros) runs; its deletion runs nothing
    git("checkout", "-q", "-b", "feature", cwd=work)
    commit(work, "b.txt", "2\n")
    push = subprocess.run(["git", "push", "-q", "origin", "feature"], cwd=work, capture_output=True, text=True,
                          timeout=60, check=True)
    [pid2] = started(push.stderr)
    assert wait_pipeline(server.url, pid2)["before_sha"] == ZERO
    push = subprocess.run(["git", "push", "-q", "origin", ":feature"], cwd=work, capture_output=True, text=True,
                          timeout=60, check=True)
    assert "no pipeline to run" in push.stderr


def test_a_server_that_does_not_answer_does_not_fail_the_push(server: LiveServer, root: Path) -> None:
    seed = make_repo(root / "seed2", {".gitlab-ci.yml": CI})
    repo = root / "lonely.git"
    git("clone", "-q", "--bare", str(seed), str(repo))
    work = root / "work2"
    git("clone", "-q", str(repo), str(work))
    r = cli("http://127.0.0.1:9", "hook", "install", str(repo), "--timeout", "1")  # nothing listens there
    assert r.returncode == 0, r.stderr
    after = commit(work, "c.txt", "3\n")
    push = subprocess.run(["git", "push", "-q", "origin", "HEAD:main"], cwd=work, capture_output=True, text=True,
                          timeout=60, check=False)
    assert push.returncode == 0 and "pitwall: warning: the push was not reported" in push.stderr
    assert git("rev-parse", "main", cwd=repo) == after  # pushed all the same
    assert cli(server.url, "hook", "uninstall", str(repo)).returncode == 0
    assert not (repo / "hooks" / "post-receive").exists() and not (repo / "hooks" / "pitwall.json").exists()


def test_uninstall_puts_the_chained_hook_back(server: LiveServer, root: Path) -> None:
    repo = root / "chain.git"
    git("init", "-q", "--bare", str(repo))
    (repo / "hooks" / "post-receive").write_text("#!/bin/sh\necho mine\n")
    assert cli(server.url, "hook", "install", str(repo)).returncode == 0
    r = cli(server.url, "hook", "uninstall", str(repo))
    assert r.returncode == 0 and "previous hook is back" in r.stdout
    assert (repo / "hooks" / "post-receive").read_text() == "#!/bin/sh\necho mine\n"
    assert "nothing to do" in cli(server.url, "hook", "uninstall", str(repo)).stdout
    bad = cli(server.url, "hook", "install", str(root / "not-a-repo"))
    assert bad.returncode == 1 and "is not a git repository" in bad.stderr


def _deliver(url: str, event: str, payload: dict[str, Any], secret: str = GH_SECRET,
             form: bool = False) -> httpx.Response:
    body = json.dumps(payload).encode()
    ctype = "application/json"
    if form:
        from urllib.parse import urlencode

        body, ctype = urlencode({"payload": body.decode()}).encode(), "application/x-www-form-urlencoded"
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return httpx.post(f"{url}/api/pipelines/v1/hooks/github", content=body, timeout=30, headers={
        "X-GitHub-Event": event, "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-GitHub-Hook-ID": "292430182", "X-Hub-Signature-256": sig, "Content-Type": ctype,
        "User-Agent": "GitHub-Hookshot/044aadd"})


def _push_payload(before: str, after: str, ref: str = "refs/heads/main", deleted: bool = False) -> dict[str, Any]:
    return {"ref": ref, "before": before, "after": after, "created": before == ZERO, "deleted": deleted,
            "forced": False, "base_ref": None, "compare": "https://github.com/octo/shop/compare/x...y",
            "commits": [] if deleted else [{"id": after, "message": "change", "distinct": True,
                                            "author": {"name": "t", "email": "t@example.com"}}],
            "head_commit": None if deleted else {"id": after, "message": "change"},
            "repository": {"id": 1296269, "name": "shop", "full_name": "octo/shop", "private": False,
                           "clone_url": "https://github.com/octo/shop.git", "default_branch": "main"},
            "pusher": {"name": "octocat", "email": "octocat@github.com"}, "sender": {"login": "octocat", "id": 1}}


def test_github_push_webhooks(server: LiveServer, github: tuple[Path, Path, Path]) -> None:
    _, mirror, dev = github
    ping = _deliver(server.url, "ping", {"zen": "Design for failure.", "hook_id": 292430182,
                                         "repository": {"name": "shop"}})
    assert ping.status_code == 200 and ping.json()["msg"] == "pong"
    before = git("rev-parse", "HEAD", cwd=dev)
    after = commit(dev, "d.txt", "4\n")
    git("push", "-q", "origin", "HEAD:main", cwd=dev)  # to "GitHub": the mirror does not have it yet
    payload = _push_payload(before, after)
    forged = _deliver(server.url, "push", payload, secret="not-the-secret")
    assert forged.status_code == 401 and "X-Hub-Signature-256" in forged.text
    unsigned = httpx.post(f"{server.url}/api/pipelines/v1/hooks/github", json=payload,
                          headers={"X-GitHub-Event": "push"})
    assert unsigned.status_code == 401
    r = _deliver(server.url, "push", payload)
    assert r.status_code == 202, r.text
    [pid] = r.json()["pipelines"]
    p = wait_pipeline(server.url, pid)
    assert p["sha"] == after and p["before_sha"] == before and p["source"] == "push"
    assert git("rev-parse", "main", cwd=mirror) == after  # fetched from origin
    assert _deliver(server.url, "push", payload, form=True).json()["pipelines"] == []  # redelivery: once
    # a branch deletion starts nothing
    gone = _deliver(server.url, "push", _push_payload(after, ZERO, "refs/heads/old", deleted=True))
    assert gone.status_code == 202 and gone.json()["pipelines"] == []
    assert _deliver(server.url, "issues", {"action": "opened"}).status_code == 202  # other events: ignored
    unknown = _deliver(server.url, "push", {**payload, "repository": {"name": "nope"}})
    assert unknown.status_code == 404
    bad = _deliver(server.url, "push", {**payload, "after": "xyz"})
    assert bad.status_code == 400 and "SHA" in bad.text


def test_github_webhooks_are_refused_without_a_configured_secret() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from pitwall.pipelines.api_hooks import Hooks, hooks_router
    from pitwall.pipelines.settings import PipelinesSettings

    app = FastAPI()
    app.include_router(hooks_router(Hooks(None, None, PipelinesSettings())))  # type: ignore[arg-type]
    body = b'{"zen": "x"}'
    sig = "sha256=" + hmac.new(b"", body, hashlib.sha256).hexdigest()  # signed with the empty secret
    r = TestClient(app).post("/api/pipelines/v1/hooks/github", content=body,
                             headers={"X-GitHub-Event": "ping", "X-Hub-Signature-256": sig})
    assert r.status_code == 401 and "pipelines.github_secret" in r.text
