"""The podman executor: ``image:`` jobs under ``podman run``, a clear failure (or the shell) without it.

The live tests build a local image from the host's static busybox (``podman build`` of ``FROM scratch``, no
registry) and skip when podman, busybox or a working OCI runtime are not on the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pitwall.pipelines.executor import Podman
from pitwall.pipelines.spec import load_config
from pitwall.pipelines.yamlload import SpecError
from tests.pipelines.conftest import make_repo, wait_done

pytestmark = pytest.mark.timeout(240)

# This machine's limits are below podman's defaults and it has no cgroup v2: runc with lowered limits works.
CANDIDATES = [(["podman"], []),
              (["podman", "--runtime", "runc"], ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"])]


def test_run_command_mounts_the_job_and_passes_variables_by_name(tmp_path: Path) -> None:
    p = Podman(("podman", "--runtime", "runc"), ("--network", "none"))
    argv = p.run_argv("pitwall-job-7-script", "alpine:3", None, tmp_path, tmp_path / "src", ["CI_JOB_ID", "SECRET"],
                      tmp_path / "script.sh")
    assert argv[:4] == ["podman", "--runtime", "runc", "run"]
    assert argv[5:7] == ["--name", "pitwall-job-7-script"] and "--pull=never" in argv and "--rm" in argv
    assert argv[argv.index("-v") + 1] == f"{tmp_path}:{tmp_path}"
    assert argv[argv.index("-w") + 1] == str(tmp_path / "src")
    assert argv[argv.index("--network"):argv.index("--network") + 2] == ["--network", "none"]
    assert [a for i, a in enumerate(argv) if a == "-e" or argv[i - 1] == "-e"] == ["-e", "CI_JOB_ID", "-e", "SECRET"]
    assert argv[-6:] == ["alpine:3", "sh", "-c", argv[-3], "sh", str(tmp_path / "script.sh")]
    assert "--entrypoint" not in argv
    ep = p.run_argv("n", "img", [""], tmp_path, tmp_path, [], tmp_path / "s.sh")
    assert ep[ep.index("--entrypoint") + 1] == '[""]'
    assert p.rm_argv("n") == ["podman", "--runtime", "runc", "rm", "-f", "-t", "0", "--ignore", "n"]


def test_image_keyword_is_parsed_from_job_default_and_global() -> None:
    files = {".gitlab-ci.yml": "image: busybox:1\ndefault:\n  image: {name: alpine:3, entrypoint: ['']}\n"
                               "a:\n  script: [x]\nb:\n  image: {name: 'reg/x:$TAG', pull_policy: never}\n"
                               "  script: [x]\nc:\n  inherit: {default: false}\n  script: [x]\n"}
    cfg = load_config(files.get, lambda: list(files))
    assert cfg.jobs["a"].image is not None and cfg.jobs["a"].image.name == "alpine:3"
    assert cfg.jobs["a"].image.entrypoint == ("",)
    assert cfg.jobs["b"].image is not None and cfg.jobs["b"].image.pull_policy == ("never",)
    assert cfg.jobs["c"].image is None
    for bad, msg in (("a:\n  image: {name: x, docker: {platform: arm}}\n  script: [x]\n", "docker"),
                     ("a:\n  image: {nme: x}\n  script: [x]\n", "unknown keys: nme"),
                     ("a:\n  image: [x]\n  script: [x]\n", "hash or a string"),
                     ("a:\n  image: {name: x, pull_policy: sometimes}\n  script: [x]\n", "pull_policy")):
        with pytest.raises(SpecError, match=msg):
            load_config({".gitlab-ci.yml": bad}.get, lambda: [".gitlab-ci.yml"])


CI = """
in-image:
  image: $IMAGE
  variables: {GREETING: hello}
  script:
    - echo "$GREETING from $(cat /etc/pitwall-image) in $PWD"
    - echo "image=$CI_JOB_IMAGE"
    - echo "$CI_JOB_NAME" > out.txt
    - test ! -e /usr/bin/git
  after_script: [echo "after $CI_JOB_STATUS in $(cat /etc/pitwall-image)"]
  artifacts: {paths: [out.txt]}
"""


async def test_without_podman_the_job_fails_saying_why_or_runs_in_the_shell(runner_env: Any, tmp_path: Path) -> None:
    _, _, new_runner = runner_env
    repo = make_repo(tmp_path / "repo", {".gitlab-ci.yml": "j:\n  image: busybox:1\n  script: [echo ran]\n"})
    runner = new_runner(podman=[str(tmp_path / "no-such-podman")])
    await runner.start()
    p, jobs = await wait_done(runner, (await runner.create(str(repo), None, []))["id"])
    assert p["status"] == "failed" and jobs["j"]["failure_reason"] == "runner_system_failure"
    log = runner.trace(jobs["j"]["id"]).decode()
    assert f"ERROR: Job failed: podman ({tmp_path / 'no-such-podman'}) is not installed" in log and "ran" not in log
    shell = new_runner(podman=[str(tmp_path / "no-such-podman")], image_fallback="shell")
    await shell.start()
    p, jobs = await wait_done(shell, (await shell.create(str(repo), None, []))["id"])
    log = shell.trace(jobs["j"]["id"]).decode()
    assert p["status"] == "success" and "running in the shell executor" in log and "\nran\n" in log


@pytest.fixture(scope="module")
def podman_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], list[str], str]]:
    busybox = shutil.which("busybox")
    if shutil.which("podman") is None or busybox is None:
        pytest.skip("podman or busybox is not installed")
    ctx = tmp_path_factory.mktemp("image")
    (ctx / "root" / "bin").mkdir(parents=True)
    (ctx / "root" / "etc").mkdir()
    (ctx / "root" / "etc" / "pitwall-image").write_text("busybox-image\n")
    shutil.copy(busybox, ctx / "root" / "bin" / "busybox")
    for applet in ("sh", "echo", "cat", "test", "sleep", "printf", "pwd", "true", "id"):
        (ctx / "root" / "bin" / applet).symlink_to("busybox")
    (ctx / "Containerfile").write_text("FROM scratch\nCOPY root/ /\nENV PATH=/bin\nCMD [\"/bin/sh\"]\n")
    tag = f"localhost/pitwall-test-busybox:{uuid.uuid4().hex[:8]}"
    build = subprocess.run(["podman", "build", "-q", "-t", tag, str(ctx)], capture_output=True, text=True,
                           timeout=180)
    if build.returncode != 0:
        pytest.skip(f"podman build failed here: {build.stderr.strip()[-300:]}")
    try:
        for cmd, args in CANDIDATES:
            probe = subprocess.run([*cmd, "run", "--rm", *args, tag, "true"], capture_output=True, timeout=120)
            if probe.returncode == 0:
                yield cmd, args, tag
                return
        pytest.skip("no OCI runtime configuration runs containers on this machine")
    finally:
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True, timeout=120)


async def test_an_image_job_runs_in_the_container(runner_env: Any, tmp_path: Path,
                                                  podman_image: tuple[list[str], list[str], str]) -> None:
    cmd, args, tag = podman_image
    _, _, new_runner = runner_env
    runner = new_runner(podman=cmd, podman_run_args=args)
    await runner.start()
    repo = make_repo(tmp_path / "repo", {".gitlab-ci.yml": CI})
    secret = "s3cr3t-value-42"
    p = await runner.create(str(repo), None, [{"key": "IMAGE", "value": tag},
                                              {"key": "TOKEN", "value": secret, "masked": True}])
    p, jobs = await wait_done(runner, p["id"], timeout=180)
    j = jobs["in-image"]
    log = runner.trace(j["id"]).decode()
    assert p["status"] == "success", log
    assert f'Preparing the "podman" executor: image {tag}' in log
    work = runner.root / "builds" / str(j["id"]) / "src"
    assert f"hello from busybox-image in {work}" in log  # variables passed, the working copy mounted at its path
    assert f"image={tag}" in log  # CI_JOB_IMAGE
    assert "after success in busybox-image" in log  # after_script in the image too
    files = runner.executor.artifacts_dir(j["id"]) / "files"
    assert (files / "out.txt").read_text() == "in-image\n"  # written in the container, collected on the host


async def test_a_timeout_removes_the_container_and_a_missing_image_fails(
        runner_env: Any, tmp_path: Path, podman_image: tuple[list[str], list[str], str]) -> None:
    cmd, args, tag = podman_image
    _, _, new_runner = runner_env
    runner = new_runner(podman=cmd, podman_run_args=args)
    await runner.start()
    repo = make_repo(tmp_path / "repo", {".gitlab-ci.yml": f"slow:\n  image: {tag}\n  timeout: 3s\n"
                                                            "  script: [echo started, sleep 600]\n"
                                                            "absent:\n  image: localhost/pitwall-absent:none\n"
                                                            "  script: [echo ran]\n"})
    _, jobs = await wait_done(runner, (await runner.create(str(repo), None, []))["id"], timeout=180)
    slow, absent = jobs["slow"], jobs["absent"]
    assert slow["status"] == "failed" and slow["failure_reason"] == "job_execution_timeout"
    ps = subprocess.run([*cmd, "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, timeout=60)
    assert f"pitwall-job-{slow['id']}-script" not in ps.stdout.split()
    assert absent["status"] == "failed"
    assert "image 'localhost/pitwall-absent:none' is not present locally" in runner.trace(absent["id"]).decode()


async def test_a_restarted_server_removes_the_containers_left_running(
        tmp_path: Path, podman_image: tuple[list[str], list[str], str]) -> None:
    from pitwall.pipelines.executor import Executor

    cmd, args, tag = podman_image
    name = f"pitwall-job-{os.getpid()}-script"  # as a job of a server that died left it
    subprocess.run([*cmd, "run", "-d", "--name", name, *args, tag, "sleep", "600"], check=True,
                   capture_output=True, timeout=120)
    ex = Executor(tmp_path, max_log_bytes=1 << 20, max_artifacts_bytes=1 << 20,
                  podman=Podman(tuple(cmd), tuple(args)))
    await ex.remove_containers(os.getpid())
    ps = subprocess.run([*cmd, "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, timeout=60)
    assert name not in ps.stdout.split()
