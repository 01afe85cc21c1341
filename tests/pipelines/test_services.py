"""GitLab CI ``services:`` on the podman executor: aliases, variables, the wait for services, cleanup.

The live tests build a service image from the host's static busybox (``FROM scratch``, no registry): its
default command writes what it was given (variables) into a page and serves it with busybox ``httpd`` on the
port it exposes (8080). They skip when podman, busybox or a working OCI runtime are not on the machine.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pitwall.pipelines.services import default_aliases, network_name, service_aliases, service_env
from pitwall.pipelines.spec import load_config
from pitwall.pipelines.yamlload import SpecError
from tests.pipelines.conftest import make_repo, wait_done

pytestmark = pytest.mark.timeout(300)

CANDIDATES = [(["podman"], []),
              (["podman", "--runtime", "runc"], ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"])]
SERVE = """#!/bin/sh
mkdir -p /www
echo "answer=42 greeting=${GREETING:-unset} only=${SVC_ONLY:-unset} outside=${OUTSIDE:-unset} job=${CI_JOB_NAME}" \
  > /www/index.html
echo "service starting on ${PORT:-8080}"
exec httpd -f -p "${PORT:-8080}" -h /www
"""


@pytest.mark.parametrize(("image", "want"), [
    ("tutum/wordpress:latest", ["tutum__wordpress", "tutum-wordpress"]),
    ("postgres", ["postgres"]),
    ("postgres:16-alpine", ["postgres"]),
    ("registry.example.com:5000/team/db:1.2", ["registry.example.com__team__db", "registry.example.com-team-db"]),
    ("quay.io/x/y@sha256:" + "a" * 64, ["quay.io__x__y", "quay.io-x-y"]),
    ("localhost/svc:tag", ["localhost__svc", "localhost-svc"]),
])
def test_default_aliases_follow_gitlab_runner(image: str, want: list[str]) -> None:
    assert default_aliases(image) == want


def test_explicit_aliases_come_after_the_derived_ones() -> None:
    assert service_aliases("mysql:8", ["db", "mysql", "db2"]) == ["mysql", "db", "db2"]


def test_services_get_yaml_variables_not_outside_ones_and_their_own_win() -> None:
    env = service_env({"A": "1", "B": "2", "TOKEN": "t"}, {"TOKEN"}, {"B": "own-$A", "C": "3"})
    assert env == {"A": "1", "B": "own-1", "C": "3"}
    # the runner's way to hand a UI variable to a service on purpose: its own variable naming it
    assert service_env({"TOKEN": "t"}, {"TOKEN"}, {"TOKEN": "$TOKEN"}) == {"TOKEN": "t"}


def test_services_keyword_is_parsed_from_job_default_and_global() -> None:
    files = {".gitlab-ci.yml": "services: [redis:7]\n"
                               "a:\n  script: [x]\n"
                               "b:\n  services:\n    - name: 'reg:5000/x/db:$TAG'\n      alias: 'db, db2 third'\n"
                               "      entrypoint: [/bin/sh, -c]\n      command: ['exec httpd -f']\n"
                               "      variables: {PORT: 9000}\n      pull_policy: [always, if-not-present]\n"
                               "      docker: {user: '1000'}\n  script: [x]\n"
                               "c:\n  inherit: {default: false}\n  script: [x]\n"}
    cfg = load_config(files.get, lambda: list(files))
    assert [s.name for s in cfg.jobs["a"].services] == ["redis:7"]
    b = cfg.jobs["b"].services[0]
    assert b.aliases == ("db", "db2", "third") and b.entrypoint == ("/bin/sh", "-c")
    assert b.command == ("exec httpd -f",) and b.variables == (("PORT", "9000"),)
    assert b.pull_policy == ("always", "if-not-present") and b.user == "1000"
    assert cfg.jobs["c"].services == ()
    cfg = load_config({".gitlab-ci.yml": "default:\n  services: [a/b]\nj:\n  script: [x]\n"}.get,
                      lambda: [".gitlab-ci.yml"])
    assert cfg.jobs["j"].services[0].name == "a/b" and cfg.jobs["j"].services[0].pull_policy is None
    for bad, msg in (("services: {name: x}\n", "should be an array"),
                     ("services: [{nme: x}]\n", "unknown keys: nme"),
                     ("services: [{name: x, docker: {platform: arm}}]\n", "docker uses `platform`"),
                     ("services: [{name: x, pull_policy: sometimes}]\n", "pull_policy"),
                     ("services: [{name: x, alias: 'bad/alias'}]\n", "not a valid host name"),
                     ("services: [{name: x, command: run}]\n", "command config should be an array"),
                     ("services: [[x]]\n", "hash or a string"),
                     ("services: [{name: ''}]\n", "non-empty string")):
        with pytest.raises(SpecError, match=msg):
            load_config({".gitlab-ci.yml": "a:\n  script: [x]\n  " + bad.replace("\n", "\n  ")}.get,
                        lambda: [".gitlab-ci.yml"])


async def test_a_shell_job_with_services_fails_naming_the_executor(runner_env: Any, tmp_path: Path) -> None:
    _, _, new_runner = runner_env
    repo = make_repo(tmp_path / "repo", {".gitlab-ci.yml": "j:\n  services: [redis]\n  script: [echo ran]\n"})
    runner = new_runner()
    await runner.start()
    p, jobs = await wait_done(runner, (await runner.create(str(repo), None, []))["id"])
    log = runner.trace(jobs["j"]["id"]).decode()
    assert p["status"] == "failed" and jobs["j"]["failure_reason"] == "runner_system_failure"
    assert 'services: need the "podman" executor' in log and "\nran\n" not in log
    shell = new_runner(image_fallback="shell")
    await shell.start()
    p, jobs = await wait_done(shell, (await shell.create(str(repo), None, []))["id"])
    log = shell.trace(jobs["j"]["id"]).decode()
    assert p["status"] == "success" and "the job runs without its services" in log and "\nran\n" in log


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], list[str], str, str]]:
    """(podman command, run args, a job image, a service image): both built from busybox."""
    busybox = shutil.which("busybox")
    if shutil.which("podman") is None or busybox is None:
        pytest.skip("podman or busybox is not installed")
    ctx = tmp_path_factory.mktemp("image")
    (ctx / "root" / "bin").mkdir(parents=True)
    shutil.copy(busybox, ctx / "root" / "bin" / "busybox")
    for applet in ("sh", "echo", "cat", "test", "sleep", "printf", "wget", "httpd", "mkdir", "grep", "true"):
        (ctx / "root" / "bin" / applet).symlink_to("busybox")
    (ctx / "root" / "bin" / "serve").write_text(SERVE)
    (ctx / "root" / "bin" / "serve").chmod(0o755)
    tag = uuid.uuid4().hex[:8]
    job, svc = f"localhost/pitwall-test-job:{tag}", f"localhost/pitwall-test-svc:{tag}"
    (ctx / "Job").write_text("FROM scratch\nCOPY root/ /\nENV PATH=/bin\nCMD [\"/bin/sh\"]\n")
    (ctx / "Svc").write_text("FROM scratch\nCOPY root/ /\nENV PATH=/bin\nEXPOSE 8080\nCMD [\"/bin/serve\"]\n")
    for name, file in ((job, "Job"), (svc, "Svc")):
        build = subprocess.run(["podman", "build", "-q", "-f", str(ctx / file), "-t", name, str(ctx)],
                               capture_output=True, text=True, timeout=180)
        if build.returncode != 0:
            pytest.skip(f"podman build failed here: {build.stderr.strip()[-300:]}")
    try:
        for cmd, args in CANDIDATES:
            probe = subprocess.run([*cmd, "run", "--rm", *args, job, "true"], capture_output=True, timeout=120)
            if probe.returncode == 0:
                yield cmd, args, job, svc
                return
        pytest.skip("no OCI runtime configuration runs containers on this machine")
    finally:
        subprocess.run(["podman", "rmi", "-f", job, svc], capture_output=True, timeout=120)


def _leftovers(cmd: list[str], job_ids: list[int]) -> list[str]:
    """Containers and networks of these jobs still on the machine."""
    ps = subprocess.run([*cmd, "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, timeout=60)
    nets = subprocess.run([*cmd, "network", "ls", "--format", "{{.Name}}"], capture_output=True, text=True,
                          timeout=60)
    assert ps.returncode == 0 and nets.returncode == 0
    names = ps.stdout.split() + nets.stdout.split()
    return [n for n in names for j in job_ids if n.startswith(f"pitwall-job-{j}-")]


REACH = """
variables: {GREETING: hello-from-yaml, SECOND: second-alias}
reach:
  image: $JOB_IMAGE
  services:
    - name: $SVC_IMAGE
      alias: web, $SECOND
      variables: {SVC_ONLY: service-only}
  script:
    - wget -qO- http://web:8080/ | tee by-alias.txt
    - wget -qO- http://second-alias:8080/
    - wget -qO- http://localhost-pitwall-test-svc:8080/
    - wget -qO- http://localhost__pitwall-test-svc:8080/
    - echo "job sees SVC_ONLY=${SVC_ONLY:-unset}"
  after_script: [wget -qO- http://web:8080/ >/dev/null && echo "service still up in after_script"]
"""


@pytest.mark.slow
async def test_a_service_is_reachable_by_every_alias_with_the_job_variables(
        runner_env: Any, tmp_path: Path, images: tuple[list[str], list[str], str, str]) -> None:
    cmd, args, job_image, svc_image = images
    _, _, new_runner = runner_env
    runner = new_runner(podman=cmd, podman_run_args=args)
    await runner.start()
    repo = make_repo(tmp_path / "repo", {".gitlab-ci.yml": REACH})
    p = await runner.create(str(repo), None, [{"key": "JOB_IMAGE", "value": job_image},
                                              {"key": "SVC_IMAGE", "value": svc_image},
                                              {"key": "OUTSIDE", "value": "from-the-api"}])
    p, jobs = await wait_done(runner, p["id"], timeout=240)
    j = jobs["reach"]
    log = runner.trace(j["id"]).decode()
    assert p["status"] == "success", log
    page = "answer=42 greeting=hello-from-yaml only=service-only outside=unset job=reach"
    assert log.count(page) == 4  # by both aliases and both derived names
    assert "job sees SVC_ONLY=unset" in log  # service variables stay in the service
    assert f"Starting service {svc_image} ..." in log and "Waiting for services to be up and running" in log
    assert "probably didn't start properly" not in log
    assert "service still up in after_script" in log
    assert _leftovers(cmd, [j["id"]]) == []


FAILING = """
never-listens:
  image: $JOB_IMAGE
  services:
    - name: $SVC_IMAGE
      alias: mute
      entrypoint: [/bin/sh, -c]
      command: ['echo "mute service: not listening"; exec sleep 600']
  script: [echo "script ran anyway"]
script-fails:
  image: $JOB_IMAGE
  services: [{name: $SVC_IMAGE, alias: web}]
  script: [wget -qO- http://web:8080/, exit 3]
too-slow:
  image: $JOB_IMAGE
  timeout: 5s
  services: [{name: $SVC_IMAGE, alias: web}]
  script: [sleep 600]
pull-always:
  image: $JOB_IMAGE
  services: [{name: $SVC_IMAGE, pull_policy: always}]
  script: [echo ran]
absent-image:
  image: $JOB_IMAGE
  services: [localhost/pitwall-absent-service:none]
  script: [echo ran]
custom-port:
  image: $JOB_IMAGE
  services: [{name: $SVC_IMAGE, alias: web, variables: {PORT: "9090", HEALTHCHECK_TCP_PORT: "9090"}}]
  script: [wget -qO- http://web:9090/]
wrong-port:
  image: $JOB_IMAGE
  services: [{name: $SVC_IMAGE, alias: web, variables: {HEALTHCHECK_TCP_PORT: "9999"}}]
  script: [wget -qO- http://web:8080/]
if-not-present:
  image: $JOB_IMAGE
  services: [{name: $SVC_IMAGE, alias: web, pull_policy: if-not-present}]
  script: [wget -qO- http://web:8080/]
"""


@pytest.mark.slow
async def test_a_silent_service_warns_and_every_end_removes_the_services(
        runner_env: Any, tmp_path: Path, images: tuple[list[str], list[str], str, str]) -> None:
    cmd, args, job_image, svc_image = images
    _, _, new_runner = runner_env
    runner = new_runner(podman=cmd, podman_run_args=args, wait_for_services_timeout="3s")
    await runner.start()
    repo = make_repo(tmp_path / "repo", {".gitlab-ci.yml": FAILING})
    p = await runner.create(str(repo), None, [{"key": "JOB_IMAGE", "value": job_image},
                                              {"key": "SVC_IMAGE", "value": svc_image}])
    p, jobs = await wait_done(runner, p["id"], timeout=280)
    logs = {n: runner.trace(j["id"]).decode() for n, j in jobs.items()}
    mute = logs["never-listens"]
    assert jobs["never-listens"]["status"] == "success", mute  # GitLab runs the job anyway
    assert "*** WARNING: Service pitwall-job-" in mute and "probably didn't start properly." in mute
    assert 'service "pitwall-job-' in mute and '-svc-0" timeout: nothing listens on TCP port(s) 8080' in mute
    assert "Service container logs:" in mute and "mute service: not listening" in mute
    assert mute.index("Service container logs:") < mute.index("script ran anyway")
    assert jobs["script-fails"]["status"] == "failed" and "answer=42" in logs["script-fails"]
    assert jobs["too-slow"]["failure_reason"] == "job_execution_timeout"
    pull = logs["pull-always"]
    assert jobs["pull-always"]["status"] == "failed" and "pulling the image failed (pull_policy always)" in pull
    assert "\nran\n" not in pull
    assert jobs["absent-image"]["status"] == "failed"
    assert "image 'localhost/pitwall-absent-service:none' is not present locally" in logs["absent-image"]
    assert jobs["if-not-present"]["status"] == "success" and "answer=42" in logs["if-not-present"]
    custom = logs["custom-port"]
    assert jobs["custom-port"]["status"] == "success" and "answer=42" in custom
    assert "probably didn't start properly" not in custom
    wrong = logs["wrong-port"]  # HEALTHCHECK_TCP_PORT names the port waited for, not the exposed one
    assert "nothing listens on TCP port(s) 9999" in wrong and "service starting on 8080" in wrong
    assert jobs["wrong-port"]["status"] == "success" and "answer=42" in wrong
    assert _leftovers(cmd, [j["id"] for j in jobs.values()]) == []
    assert network_name(jobs["too-slow"]["id"]) not in subprocess.run(
        [*cmd, "network", "ls", "--format", "{{.Name}}"], capture_output=True, text=True, timeout=60).stdout


@pytest.mark.slow
async def test_cancel_while_waiting_for_services_removes_them(
        runner_env: Any, tmp_path: Path, images: tuple[list[str], list[str], str, str]) -> None:
    import asyncio

    cmd, args, job_image, svc_image = images
    _, _, new_runner = runner_env
    runner = new_runner(podman=cmd, podman_run_args=args, wait_for_services_timeout="10m")
    await runner.start()
    ci = (f"j:\n  image: {job_image}\n  services:\n    - name: {svc_image}\n      entrypoint: [sleep]\n"
          "      command: ['600']\n  script: [echo ran]\n")
    repo = make_repo(tmp_path / "repo", {".gitlab-ci.yml": ci})
    p = await runner.create(str(repo), None, [])
    for _ in range(600):
        jobs = await runner.store.jobs(p["id"])
        if jobs and "Waiting for services" in runner.trace(jobs[0]["id"]).decode():
            break
        await asyncio.sleep(0.2)
    await runner.cancel_pipeline(p["id"])
    p, jobs = await wait_done(runner, p["id"], timeout=120)
    assert jobs["j"]["status"] == "canceled" and "\nran\n" not in runner.trace(jobs["j"]["id"]).decode()
    assert _leftovers(cmd, [jobs["j"]["id"]]) == []


@pytest.mark.slow
def test_gitlab_ci_local_accepts_the_same_file(tmp_path: Path) -> None:
    from tests.pipelines.test_differential import _gitlab_ci_local

    exe = _gitlab_ci_local()
    repo = make_repo(tmp_path / "repo", {".gitlab-ci.yml": REACH + FAILING})
    r = subprocess.run([str(exe), "--list", "--variable", "JOB_IMAGE=busybox", "--variable", "SVC_IMAGE=nginx"],
                       cwd=repo, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("reach", "never-listens", "script-fails", "too-slow", "pull-always", "if-not-present"):
        assert name in r.stdout


@pytest.mark.slow
async def test_a_restarted_server_removes_the_services_and_network_left(
        tmp_path: Path, images: tuple[list[str], list[str], str, str]) -> None:
    from pitwall.pipelines.executor import Executor, Podman

    cmd, args, _, svc_image = images
    job_id = 900_000 + uuid.uuid4().int % 100_000  # as a job of a server that died left them
    net = network_name(job_id)
    subprocess.run([*cmd, "network", "create", net], check=True, capture_output=True, timeout=60)
    subprocess.run([*cmd, "run", "-d", "--name", f"pitwall-job-{job_id}-svc-0", "--network", net, *args, svc_image],
                   check=True, capture_output=True, timeout=120)
    assert len(_leftovers(cmd, [job_id])) == 2
    ex = Executor(tmp_path, max_log_bytes=1 << 20, max_artifacts_bytes=1 << 20,
                  podman=Podman(tuple(cmd), tuple(args)))
    await ex.remove_containers(job_id)
    assert _leftovers(cmd, [job_id]) == []
