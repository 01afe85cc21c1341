"""GitLab CI ``services:`` on the podman executor, as GitLab Runner's docker executor runs them.

Like the runner with ``FF_NETWORK_PER_BUILD``: each job with services gets its own podman network; every service
container joins it under each of its aliases (the two derived from the image name plus ``alias``), and so does
the job's container, so the script reaches a service by any alias on the service's own ports. The services get
the job's variables minus the ones set from outside the YAML (GitLab does not pass UI/API variables to services),
with the service's ``variables:`` over them, all passed by name so no value is on a command line. Names and
aliases are expanded with the job's variables, as the runner does.

Before the script the runner waits up to ``wait_for_services_timeout`` for each service to listen on its
``HEALTHCHECK_TCP_PORT`` or, without it, on any of the TCP ports its image exposes (the runner's health check
is satisfied by the first port that answers); one that does not gets GitLab's
"probably didn't start properly" warning with its container logs in the job log, and the job runs anyway.
The check reads the service's own ``/proc/<pid>/net/tcp*`` (a listening socket is what the runner's TCP dial
finds), so no helper image is needed. The containers and the network are removed when the job ends, whatever
its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pitwall.pipelines.executor import Podman

__all__ = ["ServiceSet", "default_aliases", "network_name", "service_aliases", "service_env"]

PULL_TIMEOUT_S = 600.0
PODMAN_TIMEOUT_S = 60.0
POLL_S = 0.5
LOG_TAIL_LINES = 200
MAX_PORTS_CHECKED = 20  # the runner's maxPortsCheck
LOG_MAX_BYTES = 64 << 10
TCP_LISTEN = "0A"  # the state column of /proc/net/tcp for a listening socket
# A reference's tag and digest (GitLab Runner's ReferenceRegexp), then a registry's port (ReferenceRegexpNoPort).
_TAG_DIGEST = re.compile(r"(.*?)(:[\w][\w.-]{0,127})?(@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:"
                         r"[0-9a-fA-F]{32,})?")
_NO_PORT = re.compile(r"(.*?)(:[0-9]+)?(/.*)?")


def default_aliases(image: str) -> list[str]:
    """The aliases GitLab derives from a service's image: tag, digest and registry port dropped, then ``/``
    replaced by ``__`` and by ``-`` (``tutum/wordpress:latest``: ``tutum__wordpress``, ``tutum-wordpress``)."""
    m = _TAG_DIGEST.fullmatch(image)
    path = m.group(1) if m else image
    n = _NO_PORT.fullmatch(path)
    if n is not None:
        path = n.group(1) + (n.group(3) or "")
    return list(dict.fromkeys([path.replace("/", "__"), path.replace("/", "-")]))


def service_aliases(image: str, extra: list[str]) -> list[str]:
    """Every name a service answers to: the derived ones, then the ``alias`` ones (without repeats)."""
    return list(dict.fromkeys([*default_aliases(image), *extra]))


def service_env(job_env: dict[str, str], outside: set[str], own: dict[str, str]) -> dict[str, str]:
    """A service's variables: the job's minus the ones from outside the YAML, the service's own over them,
    expanded with all of the job's (GitLab Runner's GetServiceVariables: so ``KEY: $KEY`` hands a UI
    variable to a service on purpose)."""
    from pitwall.pipelines.executor import expand  # executor imports this module

    env = {k: v for k, v in job_env.items() if k not in outside}
    env.update({k: expand(v, job_env) for k, v in own.items()})
    return env


def network_name(job_id: int) -> str:
    return f"pitwall-job-{job_id}-network"


def service_container(job_id: int, index: int) -> str:
    return f"pitwall-job-{job_id}-svc-{index}"


@dataclass
class Started:
    """A service container that was started."""

    index: int
    image: str
    container: str
    ports: list[int]


class ServiceSet:
    """The services of one job attempt: start them, wait for them, remove them."""

    def __init__(self, podman: Podman, job_id: int, log: Callable[[str], None], base_env: dict[str, str]) -> None:
        self.podman = podman
        self.job_id = job_id
        self.log = log
        self.base_env = base_env  # the podman client's own environment (PATH, HOME, ...)
        self.network = network_name(job_id)
        self.started: list[Started] = []
        self.job_env: dict[str, str] = {}
        self._network_made = False

    async def start(self, services: list[dict[str, Any]], job_env: dict[str, str], outside: set[str],
                    fallback: str) -> str:
        """Create the network and start every service; "" on success, else why the job fails."""
        code, out = await self._podman(["network", "create", self.network], PODMAN_TIMEOUT_S)
        if code != 0:
            return f"creating the job's network {self.network} failed: {out}"
        self._network_made = True
        self.job_env = job_env
        from pitwall.pipelines.executor import expand  # executor imports this module

        for i, svc in enumerate(services):
            image = expand(svc["name"], job_env)
            self.log(f"Starting service {image} ...")
            why = await self._ensure_image(image, svc.get("pull_policy"))
            if why and fallback == "shell":
                self.log(f"WARNING: service {image} skipped: {why} (pipelines.image_fallback: shell)")
                continue
            if why:
                return f"service {image}: {why}"
            why = await self._run(i, image, svc, service_env(job_env, outside, svc.get("variables") or {}))
            if why:
                return f"service {image}: {why}"
        return ""

    async def _ensure_image(self, image: str, policies: list[str] | None) -> str:
        """Honour ``pull_policy`` in order (a failing one falls to the next, as the runner does); without one,
        the runner's policy: local images only, as for ``image:``."""
        why = ""
        for policy in policies or ["never"]:
            if policy != "always":
                why = await self.podman.missing(image)
                if not why:
                    return ""
                if policy == "never" or why.startswith("podman"):
                    continue  # never pull; or podman itself is not there
            self.log(f"Pulling docker image {image} ...")
            code, out = await self._podman(["pull", "-q", image], PULL_TIMEOUT_S)
            if code == 0:
                return ""
            last = (out.splitlines() or [""])[-1]  # podman's error, after its retry warnings
            why = f"pulling the image failed (pull_policy {policy}): {last}"
        return why

    async def _run(self, i: int, image: str, svc: dict[str, Any], env: dict[str, str]) -> str:
        name = service_container(self.job_id, i)
        from pitwall.pipelines.executor import expand

        extra = [a for x in svc.get("aliases") or [] for a in expand(x, self.job_env).replace(",", " ").split()]
        aliases = service_aliases(image, extra)
        argv = ["run", "-d", "--name", name, "--network", self.network, "--pull=never", *self.podman.run_args]
        for a in aliases:
            argv += ["--network-alias", a]
        for k in sorted(env):
            argv += ["-e", k]
        if svc.get("user"):
            argv += ["--user", svc["user"]]
        if svc.get("entrypoint") is not None:
            argv += ["--entrypoint", json.dumps([e for e in svc["entrypoint"] if e] or [""])]
        argv.append(image)
        if svc.get("command") is not None:
            argv += svc["command"]
        code, out = await self._podman(argv, PODMAN_TIMEOUT_S, {**self.base_env, **env})
        if code != 0:
            return f"podman run failed: {out}"
        ports = await self._ports(image, env)
        self.started.append(Started(i, image, name, ports))
        self.log(f"Using service {image} as {', '.join(aliases)}")
        return ""

    async def _ports(self, image: str, env: dict[str, str]) -> list[int]:
        """The ports to wait for: ``HEALTHCHECK_TCP_PORT`` (any case, as the runner reads it), else the image's
        lowest ``MAX_PORTS_CHECKED`` exposed TCP ports."""
        hc = next((v.strip() for k, v in env.items() if k.upper() == "HEALTHCHECK_TCP_PORT"), "")
        if hc.isdigit():
            return [int(hc)]
        code, out = await self._podman(["image", "inspect", "--format", "{{json .Config.ExposedPorts}}", image],
                                       PODMAN_TIMEOUT_S)
        if code != 0:
            return []
        try:
            exposed = json.loads(out) or {}
        except json.JSONDecodeError:
            return []
        ports = []
        for spec in exposed:
            port, _, proto = str(spec).partition("/")
            if port.isdigit() and proto in ("", "tcp"):
                ports.append(int(port))
        return sorted(ports)[:MAX_PORTS_CHECKED]

    async def wait(self, timeout_s: float, cancel: asyncio.Event) -> bool:
        """Wait for every started service to listen on its ports; warn (with its logs) about each that does
        not. False when the job was cancelled meanwhile."""
        waited = [s for s in self.started if s.ports]
        if not waited or timeout_s <= 0:
            return True
        self.log(f"Waiting for services to be up and running (timeout {timeout_s:g} seconds)...")
        results = await asyncio.gather(*(self._wait_one(s, time.monotonic() + timeout_s, cancel) for s in waited))
        if cancel.is_set():
            return False
        for s, err in zip(waited, results, strict=True):
            if err:
                await self._warn(s, err)
        return True

    async def _wait_one(self, s: Started, deadline: float, cancel: asyncio.Event) -> str:
        pid = 0
        while not cancel.is_set():
            if not pid:
                pid, state = await self._pid(s.container)
                if state:
                    return state
            missing = _not_listening(pid, s.ports) if pid else s.ports
            if len(missing) < len(s.ports):  # one port answering is enough, as for the runner's health check
                return ""
            if pid and not Path(f"/proc/{pid}").exists():
                pid, state = await self._pid(s.container)
                if state:
                    return state
            if time.monotonic() >= deadline:
                return f'service "{s.container}" timeout: nothing listens on TCP port(s) ' \
                       f"{', '.join(map(str, missing))}"
            await asyncio.sleep(POLL_S)
        return ""

    async def _pid(self, container: str) -> tuple[int, str]:
        """The service's pid, or why it has none (it exited)."""
        code, out = await self._podman(["inspect", "--format", "{{.State.Pid}} {{.State.Status}} "
                                        "{{.State.ExitCode}}", container], PODMAN_TIMEOUT_S)
        parts = out.split()
        if code != 0 or len(parts) != 3:
            return 0, f'service "{container}" cannot be inspected: {out}'
        pid, status, exit_code = parts
        if status in ("exited", "stopped", "dead"):
            return 0, f'service "{container}" exited with status {exit_code}'
        return int(pid) if pid.isdigit() else 0, ""

    async def _warn(self, s: Started, err: str) -> None:
        self.log("")
        self.log(f"*** WARNING: Service {s.container} probably didn't start properly.")
        self.log("")
        self.log("Health check error:")
        self.log(err)
        self.log("")
        self.log("Service container logs:")
        _, out = await self._podman(["logs", "--timestamps", "--tail", str(LOG_TAIL_LINES), s.container],
                                       PODMAN_TIMEOUT_S, limit=LOG_MAX_BYTES)
        for line in out.splitlines():
            self.log(line)
        self.log("")
        self.log("*********")
        self.log("")

    async def remove(self) -> None:
        """Remove the service containers and the network (the network's removal takes anything still on it)."""
        for s in self.started:
            await self._podman(["rm", "-f", "-t", "0", "--ignore", s.container], PODMAN_TIMEOUT_S)
        if self._network_made:
            await self._podman(["network", "rm", "-f", self.network], PODMAN_TIMEOUT_S)

    async def remove_leftovers(self) -> None:
        """After a crash: the services and network a job of a previous server process may have left (removing
        the network removes every container still on it)."""
        self._network_made = True
        await self.remove()

    async def _podman(self, args: list[str], timeout_s: float, env: dict[str, str] | None = None,
                      limit: int = 4096) -> tuple[int, str]:
        return await podman_call([*self.podman.command, *args], timeout_s, env, limit)


async def podman_call(argv: list[str], timeout_s: float, env: dict[str, str] | None = None,
                      limit: int = 4096) -> tuple[int, str]:
    """Run a podman command; (exit status, the tail of its output)."""
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT,
                                                    env=env if env is not None else dict(os.environ))
    except OSError as e:
        return 127, str(e)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 124, "timed out"
    except asyncio.CancelledError:  # the job was cancelled: stop the pull (or whatever runs) too
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    return proc.returncode or 0, out.decode("utf-8", "replace").strip()[-limit:]


def _not_listening(pid: int, ports: list[int]) -> list[int]:
    """The ports nothing listens on in the network namespace of ``pid``."""
    listening: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 3 and cols[3] == TCP_LISTEN:
                listening.add(int(cols[1].rsplit(":", 1)[1], 16))
    return [p for p in ports if p not in listening]
