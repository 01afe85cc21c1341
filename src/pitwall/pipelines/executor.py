"""The shell executor: one job in a clean working copy of the repository at the pipeline's commit.

Like GitLab Runner's shell executor: ``before_script`` and ``script`` run in one bash with ``set -eo
pipefail``, each command echoed as ``$ command``; ``after_script`` runs in a shell of its own with
``CI_JOB_STATUS`` set. The job runs in its own process group, so a timeout or a cancel kills the whole tree.
The working copy (``git clone --shared``) lives under the data directory and is removed afterwards, so nothing
of one job leaks into another; artifacts of the jobs it depends on and its cache are copied in first.

A job with ``image:`` runs the same scripts under ``podman run`` (the podman executor): the job's directory
mounted at the same path, the CI variables passed by name (their values stay out of the command line), never
pulling; a timeout or a cancel removes the container. Without podman or the image the job fails saying so, or
runs in the shell when ``pipelines.image_fallback`` is ``shell``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from pitwall.core.regex import compile as compile_regex
from pitwall.pipelines.junit import parse_junit
from pitwall.pipelines.plan import PlannedJob
from pitwall.pipelines.services import ServiceSet, podman_call
from pitwall.pipelines.spec import CacheSpec, glob_match
from pitwall.pipelines.trace import TraceWriter

__all__ = ["Executor", "JobResult", "JobRun", "Podman", "coverage_of", "expand"]

AFTER_SCRIPT_TIMEOUT_S = 300.0
KILL_GRACE_S = 2.0
PODMAN_CHECK_TIMEOUT_S = 30.0
# Inside the container: bash when the image has it (the script uses pipefail), else sh, as GitLab's docker
# executor picks its shell.
IN_CONTAINER = 'if command -v bash >/dev/null 2>&1; then exec bash --noprofile --norc "$1"; else exec sh "$1"; fi'
READ_CHUNK = 64 << 10
# Passed through from the server's environment; nothing else (tokens and secrets stay out of jobs).
PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL")
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand(value: str, env: dict[str, str]) -> str:
    """``$VAR`` and ``${VAR}`` from ``env`` (unset: empty), ``$$`` a literal ``$``: GitLab's variable expansion."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1) or m.group(2), "")

    return _VAR.sub(sub, value)


@dataclass
class JobRun:
    """Everything one attempt of a job needs."""

    job_id: int
    project_id: int
    repo: Path
    sha: str
    job: PlannedJob
    env: dict[str, str]
    masks: list[str]
    timeout_s: float
    artifacts_from: list[Path]  # artifact directories of the jobs it depends on, in order
    on_lines: Callable[[list[str]], None]
    flush: Callable[[], Awaitable[None]]
    # after a successful script, before after_script: None to pass, "canceled", or why the job fails
    gate: Callable[[Callable[[str], None], asyncio.Event], Awaitable[str | None]] | None = None
    # variables set from outside the YAML (pipeline/trigger/manual): GitLab does not pass them to services
    outside_vars: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Podman:
    """How ``image:`` jobs run: the podman command and extra ``run`` options; ``fallback`` is ``fail`` or
    ``shell`` (for when podman or the image is not there)."""

    command: tuple[str, ...] = ("podman",)
    run_args: tuple[str, ...] = ()
    fallback: str = "fail"

    def run_argv(self, name: str, image: str, entrypoint: list[str] | None, base: Path, cwd: Path,
                 env_names: list[str], script: Path, network: str | None = None) -> list[str]:
        """``podman run`` for one script: ``base`` (the job's directory) mounted at its own path, so
        ``CI_PROJECT_DIR`` and every path in the variables mean the same inside; variables by name only;
        on the job's services network when it has services."""
        argv = [*self.command, "run", "--rm", "--name", name, "--pull=never", "--init",
                "-v", f"{base}:{base}", "-w", str(cwd), *(["--network", network] if network else []),
                *self.run_args]
        for k in env_names:
            argv += ["-e", k]
        if entrypoint is not None:  # GitLab: an empty entrypoint ([""]) overrides the image's with none
            argv += ["--entrypoint", json.dumps([e for e in entrypoint if e] or [""])]
        return [*argv, image, "sh", "-c", IN_CONTAINER, "sh", str(script)]

    def rm_argv(self, name: str) -> list[str]:
        return [*self.command, "rm", "-f", "-t", "0", "--ignore", name]

    async def missing(self, image: str) -> str:
        """Why ``image`` cannot run here ("" when it can): podman absent or the image not present locally."""
        if shutil.which(self.command[0]) is None:
            return f"podman ({self.command[0]}) is not installed on the server"
        code, out = await podman_call([*self.command, "image", "exists", image], PODMAN_CHECK_TIMEOUT_S, limit=300)
        if code == 0:
            return ""
        if code == 1:
            return f"image {image!r} is not present locally (pitwall never pulls: podman pull or podman build it)"
        return f"podman does not answer: {out or f'exit status {code}'}"

    async def remove(self, name: str) -> None:
        """Remove the container (killing what runs in it); the client being killed does not stop it."""
        await podman_call(self.rm_argv(name), PODMAN_CHECK_TIMEOUT_S)


def container_name(job_id: int, part: str = "script") -> str:
    return f"pitwall-job-{job_id}-{part}"


@dataclass
class JobResult:
    status: str  # success, failed, canceled
    exit_code: int | None = None
    failure_reason: str = ""
    artifacts_size: int = 0
    artifacts_files: int = 0
    junit: dict[str, object] | None = None
    coverage: float | None = None
    notes: list[str] = field(default_factory=list)


class Executor:
    """Runs jobs under ``root`` (``<data_dir>/pipelines``)."""

    def __init__(self, root: Path, *, max_log_bytes: int, max_artifacts_bytes: int,
                 podman: Podman | None = None, wait_for_services_s: float = 30.0) -> None:
        self.root = root
        self.wait_for_services_s = wait_for_services_s
        self.max_log_bytes = max_log_bytes
        self.max_artifacts_bytes = max_artifacts_bytes
        self.podman = podman or Podman()
        for d in ("builds", "traces", "artifacts", "cache"):
            (root / d).mkdir(parents=True, exist_ok=True)

    def kill_leftovers(self, job_id: int) -> bool:
        """After a crash: kill the process group a job of a previous server process left running (when it
        still runs that job's script) and remove its working copy. True when something was killed."""
        base = self.root / "builds" / str(job_id)
        killed = False
        try:
            pgid = int((base / "pgid").read_text())
            cmdline = Path(f"/proc/{pgid}/cmdline").read_bytes()
        except (OSError, ValueError):
            cmdline = b""
        if str(base).encode() in cmdline:  # the same process, not a reused pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
                killed = True
        shutil.rmtree(base, ignore_errors=True)
        return killed

    async def remove_containers(self, job_id: int) -> None:
        """After a crash: the containers a job of a previous server process may have left running."""
        if shutil.which(self.podman.command[0]) is not None:
            for part in ("script", "after"):
                await self.podman.remove(container_name(job_id, part))
            await ServiceSet(self.podman, job_id, lambda _: None, {}).remove_leftovers()

    def trace_path(self, job_id: int) -> Path:
        return self.root / "traces" / f"{job_id}.log"

    def artifacts_dir(self, job_id: int) -> Path:
        return self.root / "artifacts" / str(job_id)

    async def run(self, r: JobRun, cancel: asyncio.Event) -> JobResult:
        """Run one attempt; returns its verdict (never raises for the job's own failures)."""
        base = self.root / "builds" / str(r.job_id)
        work = base / "src"
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        trace = TraceWriter(self.trace_path(r.job_id), r.masks, self.max_log_bytes, r.on_lines)
        services = ServiceSet(self.podman, r.job_id, trace.line, _pass_env()) if r.job.services else None
        try:
            return await self._run(r, base, work, trace, cancel, services)
        finally:
            if services is not None:  # whatever the end: success, failure, cancel, timeout
                await services.remove()
            trace.close()
            await r.flush()
            shutil.rmtree(base, ignore_errors=True)

    async def _image(self, r: JobRun, trace: TraceWriter) -> tuple[str | None, JobResult | None]:
        """The image to run the job in (None: the shell), or the failed result when it cannot run."""
        if not r.job.image:
            trace.line('Preparing the "shell" executor')
            return None, None
        image = expand(r.job.image["name"], r.env)
        why = await self.podman.missing(image) if image else "the image name is empty after expanding variables"
        if not why:
            trace.line(f'Preparing the "podman" executor: image {image}')
            return image, None
        if self.podman.fallback == "shell":
            trace.line(f"WARNING: {why}; running in the shell executor (pipelines.image_fallback: shell)")
            trace.line('Preparing the "shell" executor')
            return None, None
        trace.line(f"ERROR: Job failed: {why}")
        return None, JobResult("failed", failure_reason="runner_system_failure", notes=[why])

    async def _start_services(self, r: JobRun, image: str | None, services: ServiceSet, trace: TraceWriter,
                              cancel: asyncio.Event) -> tuple[JobResult | None, str | None]:
        """Start the job's services and wait for them: (the failed result, None) or (None, the network)."""
        if image is None:
            why = ('services: need the "podman" executor (a job with image:); the "shell" executor cannot run '
                   'service containers')
            if self.podman.fallback == "shell":
                trace.line(f"WARNING: {why}; the job runs without its services (pipelines.image_fallback: shell)")
                return None, None
            trace.line(f"ERROR: Job failed: {why}")
            return JobResult("failed", failure_reason="runner_system_failure", notes=[why]), None
        why = await _until(services.start(r.job.services, r.env, set(r.outside_vars), self.podman.fallback),
                           cancel, r.timeout_s)
        if why == "canceled":
            return JobResult("canceled"), None
        if why == "timeout":
            why = f"starting the services took longer than {_fmt_s(r.timeout_s)} seconds"
            trace.line(f"ERROR: Job failed: {why}")
            return JobResult("failed", failure_reason="job_execution_timeout", notes=[why]), None
        if why:
            trace.line(f"ERROR: Job failed: {why}")
            return JobResult("failed", failure_reason="runner_system_failure", notes=[why]), None
        if not await services.wait(self.wait_for_services_s, cancel):
            return JobResult("canceled"), None
        return None, services.network

    async def _run(self, r: JobRun, base: Path, work: Path, trace: TraceWriter, cancel: asyncio.Event,
                   services: ServiceSet | None) -> JobResult:
        image, failed = await self._image(r, trace)
        if failed is not None:
            return failed
        network = None
        if services is not None:
            failed, network = await self._start_services(r, image, services, trace, cancel)
            if failed is not None:
                return failed
        trace.line(f"Fetching changes... Checking out {r.sha[:8]} as detached HEAD (ref {r.env.get('CI_COMMIT_REF_NAME')})")
        err = await _clone(r.repo, r.sha, work)
        if err:
            trace.line(f"ERROR: Job failed: getting the source failed: {err}")
            return JobResult("failed", failure_reason="runner_system_failure")
        for src in r.artifacts_from:
            _copy_tree(src / "files", work)
        if r.artifacts_from:
            trace.line(f"Downloading artifacts of {len(r.artifacts_from)} job(s)")
        caches = [(c, self._cache_dir(r, c, work)) for c in r.job.cache_specs]
        for c, d in caches:
            if c.policy != "push" and d.is_dir():
                trace.line(f"Restoring cache {d.name}")
                _copy_tree(d, work)
        env = {**_pass_env(), **r.env}
        main = [*r.job.before_script, *r.job.script]
        code, why = await self._shell(main, env, work, base / "script.sh", r, trace, cancel, r.timeout_s, image,
                                      network)
        status = "canceled" if why == "canceled" else ("success" if code == 0 else "failed")
        gate_error = await r.gate(trace.line, cancel) if status == "success" and r.gate is not None else None
        if gate_error == "canceled":
            status = "canceled"
        elif gate_error:
            status, code = "failed", None
        if r.job.after_script and status != "canceled":
            trace.line("Running after_script")
            await self._shell(r.job.after_script, {**env, "CI_JOB_STATUS": status}, work, base / "after.sh", r,
                              trace, cancel, AFTER_SCRIPT_TIMEOUT_S, image, network)
        result = JobResult(status, exit_code=code)
        if why == "timeout":
            result.failure_reason = "job_execution_timeout"
            trace.line(f"ERROR: Job failed: execution took longer than {_fmt_s(r.timeout_s)} seconds")
        elif gate_error and status == "failed":
            result.failure_reason = "script_failure"
            trace.line(f"ERROR: Job failed: {gate_error}")
        elif status == "failed":
            result.failure_reason = "script_failure"
            trace.line(f"ERROR: Job failed: exit status {code}")
        self._collect(r, work, status, result, trace)
        for c, d in caches:
            if c.policy != "pull" and _cache_when(c, status):
                trace.line(f"Saving cache {d.name}")
                _save_paths(work, c.paths, (), d, self.max_artifacts_bytes)
        if r.job.coverage:
            result.coverage = coverage_of(trace.lines_seen, r.job.coverage)
        if status == "success":
            trace.line("Job succeeded")
        return result

    async def _shell(self, commands: list[str], env: dict[str, str], cwd: Path, path: Path, r: JobRun,
                     trace: TraceWriter, cancel: asyncio.Event, timeout_s: float,
                     image: str | None = None, network: str | None = None) -> tuple[int | None, str]:
        lines = ["set -eo pipefail", "set +o noclobber"]
        pgid = path.parent / "pgid"  # for a restarted server to find what is left running
        if image is None:  # written by the script itself, so it exists before any command has an effect
            lines.insert(0, f"echo $$ > {shlex.quote(str(pgid))}")
        for cmd in commands:
            lines.append(f"printf '%s\\n' {shlex.quote('$ ' + trace.mask(cmd))}")
            lines.append(cmd)
        path.write_text("\n".join(lines) + "\n")
        argv = ["bash", "--noprofile", "--norc", str(path)]
        cname = container_name(r.job_id, "after" if path.name == "after.sh" else "script")
        if image is not None:
            argv = self.podman.run_argv(cname, image, r.job.image.get("entrypoint") if r.job.image else None,
                                        path.parent, cwd, sorted(k for k in env if k not in PASS_ENV or k in r.env),
                                        path, network)
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        if image is not None:
            pgid.write_text(str(proc.pid))
        reader = asyncio.create_task(self._pump(proc, trace, r))
        waiter = asyncio.create_task(proc.wait())
        canceller = asyncio.create_task(cancel.wait())
        why = ""
        try:
            done, _ = await asyncio.wait({waiter, canceller}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            if waiter not in done:
                why = "canceled" if canceller in done else "timeout"
                if image is not None:
                    await self.podman.remove(cname)
                await _kill_group(proc)
        finally:
            canceller.cancel()
            if not waiter.done():
                if image is not None:
                    await self.podman.remove(cname)
                await _kill_group(proc)
            await waiter
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(reader, 5)
            if not reader.done():
                reader.cancel()
        return proc.returncode, why

    async def _pump(self, proc: asyncio.subprocess.Process, trace: TraceWriter, r: JobRun) -> None:
        assert proc.stdout is not None
        while True:
            chunk = await proc.stdout.read(READ_CHUNK)
            if not chunk:
                return
            trace.feed(chunk)
            await r.flush()

    def _cache_dir(self, r: JobRun, c: CacheSpec, work: Path) -> Path:
        key = expand(c.key, r.env)
        if c.key_files:
            h = hashlib.sha256()
            for f in c.key_files:
                p = work / f
                h.update(f.encode() + b"\0" + (p.read_bytes() if p.is_file() else b""))
            key = (expand(c.key_prefix, r.env) + "-" if c.key_prefix else "") + h.hexdigest()[:40]
        safe = re.sub(r"[^A-Za-z0-9._-]", "-", key)[:200] or "default"
        return self.root / "cache" / str(r.project_id) / safe

    def _collect(self, r: JobRun, work: Path, status: str, result: JobResult, trace: TraceWriter) -> None:
        spec = r.job.artifacts_spec
        if spec is None or not _artifacts_when(spec.when, status):
            return
        dest = self.artifacts_dir(r.job_id)
        shutil.rmtree(dest, ignore_errors=True)
        paths = (*spec.paths, *spec.junit)
        n, size, capped = _save_paths(work, paths, spec.exclude, dest / "files", self.max_artifacts_bytes)
        result.artifacts_files, result.artifacts_size = n, size
        trace.line(f"Uploading artifacts: {n} file(s), {size} bytes")
        if capped:
            trace.line(f"WARNING: artifacts larger than {self.max_artifacts_bytes} bytes were cut")
        if spec.junit:
            result.junit = parse_junit(dest / "files", spec.junit)


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def coverage_of(lines: list[str], pattern: str) -> float | None:
    """GitLab's ``coverage``: the number in the last log line's match of ``pattern`` (RE2), in its first
    group when it has groups."""
    rx = compile_regex(pattern)
    for line in reversed(lines):
        m = rx.search(line)
        if m is not None:
            num = _NUMBER.search((m.group(1) if rx.groups else m.group(0)) or "")
            if num is not None:
                return float(num.group(0))
    return None


async def _until(work: Awaitable[str], cancel: asyncio.Event, timeout_s: float) -> str:
    """``work``'s answer, or "canceled"/"timeout" (``work`` then cancelled) when the job is cancelled or time
    runs out first."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.create_task(cancel.wait())
    try:
        done, _ = await asyncio.wait({task, stopper}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return "canceled" if cancel.is_set() else "timeout"


def _pass_env() -> dict[str, str]:
    return {k: os.environ[k] for k in PASS_ENV if k in os.environ}


def _artifacts_when(when: str, status: str) -> bool:
    return when == "always" or (when == "on_success") == (status == "success")


def _cache_when(c: CacheSpec, status: str) -> bool:
    return _artifacts_when(c.when, status)


def _fmt_s(s: float) -> str:
    return str(int(s)) if s == int(s) else f"{s:g}"


async def _clone(repo: Path, sha: str, work: Path) -> str:
    for args in (["git", "clone", "-q", "--shared", "--no-checkout", str(repo), str(work)],
                 ["git", "-C", str(work), "-c", "advice.detachedHead=false", "checkout", "-q", "--detach", sha]):
        proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL)
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            return out.decode("utf-8", "replace").strip()[-500:]
    return ""


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the job's process group, SIGKILL what is left after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE_S)
        except TimeoutError:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # children that outlived the shell
        return


def _files(work: Path) -> list[str]:
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(work):
        rel = os.path.relpath(dirpath, work)
        if rel == ".":
            dirnames[:] = [d for d in dirnames if d != ".git"]
            rel = ""
        for f in filenames:
            out.append(f"{rel}/{f}" if rel else f)
        for d in dirnames:  # symlinked directories are not followed
            if os.path.islink(os.path.join(dirpath, d)):
                out.append(f"{rel}/{d}" if rel else d)
    return sorted(out)


def _selected(path: str, patterns: tuple[str, ...]) -> bool:
    """A file is selected by a pattern matching it or one of its parent directories."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(glob_match(p.rstrip("/"), pre) for p in patterns for pre in prefixes)


def _save_paths(work: Path, patterns: tuple[str, ...], exclude: tuple[str, ...], dest: Path,
                limit: int) -> tuple[int, int, bool]:
    n = size = 0
    for rel in _files(work):
        if not _selected(rel, patterns) or (exclude and _selected(rel, exclude)):
            continue
        src = work / rel
        if src.is_symlink() or not src.is_file():
            continue  # symlinks could point outside the working copy
        sz = src.stat().st_size
        if size + sz > limit:
            return n, size, True
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
        n, size = n + 1, size + sz
    return n, size, False


def _copy_tree(src: Path, dest: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dest, dirs_exist_ok=True, symlinks=True)
