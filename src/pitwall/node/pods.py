"""One pod on this node: a worker that starts its containers, restarts them by policy, probes them,
reports status, and on deletion stops them and removes the object.

The worker is level-triggered: each pass compares what runs with the pod's
spec and acts; a process exit, a probe verdict or a new version of the
object wakes it. Status goes through the ``status`` subresource as a merge
patch, only when it changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Protocol

from pitwall.kube import KubeClient, NotFoundError
from pitwall.node.chaosshim import write_control
from pitwall.node.container import BackOff, ContainerRun, rfc3339
from pitwall.node.logs import LogBuffer, LogShipper, stream_labels
from pitwall.node.podconfig import SA_VOLUME, container_env, service_account_volume, sync_volumes
from pitwall.node.probes import ProbeContext, Prober, run_probe
from pitwall.node.runtime import Exited, GroupUsage, spawn
from pitwall.node.spec import ConfigError, expand, parse_quantity

__all__ = ["NodeHost", "PodEgress", "PodWorker"]

log = logging.getLogger(__name__)
Obj = dict[str, Any]
NO_COMMAND = ('container has no command: pitwall runs processes, not images, so there is no image entrypoint '
              'for args to follow; set "command"')


class PodEgress(Protocol):
    """The mesh's per-pod egress listener (``traffic.egress``), opened before a pod's containers start
    (its URL goes into their ``HTTP_PROXY``) and closed after they stopped."""

    async def open(self, pod: Obj, pod_ip: str) -> str | None:
        """The proxy URL for ``pod`` at ``pod_ip``, or None (no proxy variables then)."""
        ...

    async def close(self, pod_ip: str) -> None: ...


class NodeHost(Protocol):
    """What a pod worker needs from the kubelet."""

    client: KubeClient
    node_name: str
    pods_dir: Path
    shipper: LogShipper
    backoff: BackOff
    volume_sync_s: float
    max_shutdown_grace_s: float
    egress: PodEgress | None
    chaos_preload: bool

    def event(self, pod: Obj, type_: str, reason: str, message: str, field_path: str = "") -> None: ...


class PodWorker:
    """Runs one pod (by uid) until it is deleted or the node stops."""

    def __init__(self, host: NodeHost, pod: Obj, pod_ip: str) -> None:
        self.host = host
        self.pod = pod
        m = pod.get("metadata") or {}
        self.uid, self.name, self.namespace = str(m.get("uid")), str(m.get("name")), str(m.get("namespace"))
        self.pod_ip = pod_ip
        self.dir = host.pods_dir / self.uid
        self.root = self.dir / "root"
        spec = pod.get("spec") or {}
        self.policy = str(spec.get("restartPolicy") or "Always")
        status = pod.get("status") or {}
        self.containers = self._runs(spec.get("containers") or [], status.get("containerStatuses"), False)
        self.inits = self._runs(spec.get("initContainers") or [], status.get("initContainerStatuses"), True)
        initialized = any(c.get("type") == "Initialized" and c.get("status") == "True"
                          for c in status.get("conditions") or [])
        for c in self.inits:  # initialized before a pitwall restart: not run again
            if initialized and "terminated" in c.state:
                c.done = True
        if self.inits and not initialized:
            for c in self.containers:
                c.state = {"waiting": {"reason": "PodInitializing"}}
        self.finished = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        self.start_time = str((pod.get("status") or {}).get("startTime") or rfc3339())
        self.terminating = False
        self.gone = False  # the object is deleted: nothing to report or delete
        self.shutdown = False  # the node stops: stop processes, keep the object
        self._wake = asyncio.Event()
        self._published: Obj | None = None
        self._conditions: dict[str, tuple[str, str]] = {}
        self._next_volume_sync = 0.0
        self._volumes: dict[str, Path] = {}
        self._volume_error = ""
        self._tasks: set[asyncio.Task[Any]] = set()
        # fault hooks (pitwall.chaos): process groups whose usage counts as a container's, and a hold
        self.attached: dict[str, set[int]] = {}
        self.held = False
        # the chaos shim's faults per container (TimeChaos, IOChaos): fault key -> control file lines; a
        # worker starts with none, so files a previous run of pitwall left are removed
        self.chaos: dict[str, dict[str, list[str]]] = {}
        shutil.rmtree(self.dir / "chaos", ignore_errors=True)
        self.proxy_url = ""  # the pod's egress listener (HTTP_PROXY), when the mesh gave it one

    def _runs(self, specs: list[Obj], statuses: list[Obj] | None, init: bool) -> list[ContainerRun]:
        old = {str(st.get("name")): st for st in statuses or []}
        b = self.host.backoff
        out = []
        for c in specs:
            run = ContainerRun(c, BackOff(b.initial, b.maximum, b.reset), is_init=init)
            prev = old.get(str(c.get("name")))
            if prev:  # a pitwall restart: the containers are started again, and that counts
                state = prev.get("state") or {}
                run.restart_count = int(prev.get("restartCount") or 0)
                run.ever_started = "running" in state or "terminated" in state
                run.last_state = prev.get("lastState") or {}
                if init and "terminated" in state:
                    run.state = state
            out.append(run)
        return out

    @property
    def runs(self) -> list[ContainerRun]:
        """Init containers, then the others."""
        return [*self.inits, *self.containers]

    def initialized(self) -> bool:
        return all(c.done and (c.state.get("terminated") or {}).get("exitCode") == 0 for c in self.inits)

    # -- inputs ----------------------------------------------------------------

    def update(self, pod: Obj) -> None:
        """A new version of the object."""
        self.pod = pod
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            self.terminating = True
        self._wake.set()

    def deleted(self) -> None:
        """The object is gone (force deletion): stop at once."""
        self.gone = self.terminating = True
        self._wake.set()

    def hold(self, held: bool) -> None:
        """Stop the containers and keep them stopped (``held``), or let them run again at once."""
        self.held = held
        for c in self.containers:
            if held and c.proc is not None:
                c.kill_reason = "PodFailure"
                self._job(c.proc.stop(0))
            elif not held:
                c.next_start = 0.0
                c.backoff = BackOff(c.backoff.initial, c.backoff.maximum, c.backoff.reset)
        self._wake.set()

    def chaos_file(self, container: str) -> Path:
        return self.dir / "chaos" / container

    def set_chaos(self, container: str, key: str, lines: list[str] | None) -> None:
        """Put a fault's lines in the container's chaos control file (None: take them out). The file is
        replaced by a rename, so the shim in the container's processes never reads half of it."""
        faults = self.chaos.setdefault(container, {})
        if lines is None:
            faults.pop(key, None)
        else:
            faults[key] = lines
        write_control(self.chaos_file(container), faults)

    def stop_for_shutdown(self) -> None:
        self.shutdown = self.terminating = True
        self._wake.set()

    # -- the loop --------------------------------------------------------------

    async def run(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.root.mkdir(exist_ok=True)
            if self.host.egress is not None:
                self.proxy_url = await self.host.egress.open(self.pod, self.pod_ip) or ""
            while not self.terminating:
                if not self.finished:
                    await self._pass()
                await self._publish()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                self._wake.clear()
        finally:
            try:
                await self._terminate()
            finally:
                if self.host.egress is not None and self.proxy_url:
                    await self.host.egress.close(self.pod_ip)

    async def _pass(self) -> None:
        now = time.monotonic()
        if now >= self._next_volume_sync:
            await self._sync_volumes()
            self._next_volume_sync = now + self.host.volume_sync_s
        for c in self.runs:
            if c.wait_task is not None and c.wait_task.done():
                self._on_exit(c, c.wait_task.result())
        if not self.initialized():
            c = next(c for c in self.inits if not (c.done and c.state.get("terminated", {}).get("exitCode") == 0))
            if c.done:  # an init container failed for good (restartPolicy Never)
                self.finished = True
            elif c.proc is None and time.monotonic() >= c.next_start:
                await self._start(c)
            return
        for c in self.containers:
            if self.held and c.proc is None and not c.done:
                c.state = {"waiting": {"reason": "PodFailure", "message": "stopped by a pod-failure chaos"}}
            elif c.proc is None and not c.done and time.monotonic() >= c.next_start:
                await self._start(c)
        if all(c.done for c in self.containers):
            self.finished = True

    # -- configuration ---------------------------------------------------------

    async def _sync_volumes(self) -> None:
        self._volumes, errors = await sync_volumes(self.host.client, self.pod, self.dir / "volumes")
        sa = await service_account_volume(self.host.client, self.pod, self.dir / "volumes")
        if sa is not None:
            self._volumes[SA_VOLUME] = sa
        msg = "; ".join(errors)
        if msg and msg != self._volume_error:
            self.host.event(self.pod, "Warning", "FailedMount", msg)
        self._volume_error = msg

    async def _env(self, c: ContainerRun) -> dict[str, str]:
        return await container_env(self.host.client, self.pod, c.spec, pod_ip=self.pod_ip,
                                   node_name=self.host.node_name, root=self.root, volumes=self._volumes,
                                   volume_error=self._volume_error, proxy_url=self.proxy_url,
                                   chaos_file=str(self.chaos_file(c.name)) if self.host.chaos_preload else "")

    def _cwd(self, c: ContainerRun) -> Path:
        wd = c.spec.get("workingDir")
        if not wd:
            return self.root
        p = Path(str(wd))
        if p.is_dir():
            return p
        inside = self.root / str(wd).lstrip("/")
        inside.mkdir(parents=True, exist_ok=True)
        return inside

    async def _start(self, c: ContainerRun) -> None:
        fp = f"spec.containers{{{c.name}}}"
        if self._volume_error:
            c.state = {"waiting": {"reason": "ContainerCreating"}}
            c.next_start = time.monotonic() + 2.0
            return
        command = [str(x) for x in c.spec.get("command") or []]
        args = [str(x) for x in c.spec.get("args") or []]
        if not command:
            c.state = {"waiting": {"reason": "RunContainerError", "message": NO_COMMAND}}
            c.done = True
            self.host.event(self.pod, "Warning", "Failed", f"Error: {NO_COMMAND}", fp)
            return
        try:
            env = await self._env(c)
            cwd = self._cwd(c)
        except (ConfigError, ValueError, OSError) as e:
            msg = str(e)
            if (c.state.get("waiting") or {}).get("message") != msg:
                self.host.event(self.pod, "Warning", "Failed", f"Error: {msg}", fp)
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": msg}}
            c.next_start = time.monotonic() + 2.0
            return
        argv = [expand(x, env) for x in command + args]
        c.env = env
        buf = LogBuffer()
        labels = {s: stream_labels(self.pod, c.name, s, self.host.node_name) for s in ("stdout", "stderr")}
        shipper = self.host.shipper

        def on_line(stream: str, line: str) -> None:
            ts = time.time_ns()
            buf.append(ts, line)
            shipper.add(labels[stream], ts, line)

        try:
            proc = await spawn(argv, env=env, cwd=cwd, on_line=on_line,
                               pid_file=self.dir / "containers" / f"{c.name}.pid")
        except OSError as e:
            msg = (f'failed to create containerd task: failed to start: exec: "{argv[0]}": '
                   f'{"executable file not found in $PATH" if isinstance(e, FileNotFoundError) else e}')
            self.host.event(self.pod, "Warning", "Failed", f"Error: {msg}", fp)
            now = rfc3339()
            c.last_state = {"terminated": {"exitCode": 128, "reason": "StartError", "message": msg,
                                           "startedAt": now, "finishedAt": now}}
            if c.ever_started:
                c.restart_count += 1
            c.ever_started = True
            self._after_exit(c, 128, {"exitCode": 128, "reason": "StartError", "message": msg,
                                      "startedAt": now, "finishedAt": now}, ran_for=0.0, start_error=msg)
            return
        if c.ever_started:
            c.restart_count += 1
        c.ever_started = True
        if c.logs is not None:
            c.previous = c.logs
        c.logs = buf
        c.proc = proc
        c.kill_reason = ""
        c.cpu_dead += sum(c.pid_cpu.values())  # the last run's processes: the counter keeps growing
        c.pid_cpu = {}
        c.started_mono = time.monotonic()
        c.state = {"running": {"startedAt": rfc3339(proc.started_at)}}
        c.wait_task = asyncio.get_running_loop().create_task(self._wait_exit(proc))
        self.host.event(self.pod, "Normal", "Pulled",
                        f'Container image "{c.spec.get("image", "")}" already present on machine', fp)
        self.host.event(self.pod, "Normal", "Created", f"Created container {c.name}", fp)
        self.host.event(self.pod, "Normal", "Started", f"Started container {c.name}", fp)
        if not c.is_init:
            self._start_probes(c)

    async def _wait_exit(self, proc: Any) -> Exited:
        try:
            return await proc.wait()  # type: ignore[no-any-return]
        finally:
            self._wake.set()

    # -- probes ----------------------------------------------------------------

    def exec_context(self, container: str | None) -> tuple[dict[str, str], Path] | None:
        """The environment and working directory of running ``container`` (the first one when None)."""
        for c in self.containers:
            if container in (None, "", c.name) and c.running() and c.env:
                return dict(c.env), self._cwd(c)
        return None

    def volume_dirs(self) -> dict[str, Path]:
        """Each ready volume's directory on this node (emptyDir under the pod's directory, hostPath as given)."""
        return dict(self._volumes)

    def _probe_ctx(self, c: ContainerRun) -> ProbeContext:
        return ProbeContext(self.pod_ip, list(c.spec.get("ports") or []), c.env, self._cwd(c))

    def _start_probes(self, c: ContainerRun) -> None:
        startup = c.spec.get("startupProbe")
        c.started = startup is None
        c.ready = c.spec.get("readinessProbe") is None and c.started
        if startup is not None:
            self._spawn_prober(c, "startup", startup)
        else:
            self._start_main_probes(c)

    def _start_main_probes(self, c: ContainerRun) -> None:
        for kind in ("liveness", "readiness"):
            probe = c.spec.get(f"{kind}Probe")
            if probe is not None:
                self._spawn_prober(c, kind, probe)
        if c.spec.get("readinessProbe") is None:
            c.ready = True

    def _spawn_prober(self, c: ContainerRun, kind: str, probe: Obj) -> None:
        proc = c.proc

        async def on_result(k: str, verdict: bool | None, msg: str) -> None:
            if c.proc is not proc or proc is None:
                return
            fp = f"spec.containers{{{c.name}}}"
            if verdict is not True and msg:
                self.host.event(self.pod, "Warning", "Unhealthy", f"{k.capitalize()} probe failed: {msg}", fp)
            if k == "readiness" and verdict is not None:
                c.ready = verdict
            elif k == "startup" and verdict is True:
                c.started = True
                self._start_main_probes(c)
            elif k in ("liveness", "startup") and verdict is False:
                c.kill_reason = k
                self.host.event(self.pod, "Normal", "Killing",
                                f"Container {c.name} failed {k} probe, will be restarted", fp)
                self._job(proc.stop(self._grace(probe)))
            self._wake.set()

        prober = Prober(kind, probe, self._probe_ctx(c), on_result)
        c.probers.append(asyncio.get_running_loop().create_task(prober.run(), name=f"probe {self.name}/{c.name}"))

    def _job(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _grace(self, probe: Obj | None = None) -> float:
        g = (probe or {}).get("terminationGracePeriodSeconds")
        if g is None:
            g = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        return float(g)

    # -- exits -----------------------------------------------------------------

    def _on_exit(self, c: ContainerRun, ex: Exited) -> None:
        proc = c.proc
        assert proc is not None
        for t in c.probers:
            t.cancel()
        c.probers = []
        if c.logs is not None:
            c.logs.close()
        reason = ("OOMKilled" if c.kill_reason == "OOMKilled" else "Completed" if ex.exit_code == 0 else "Error")
        term: Obj = {"exitCode": ex.exit_code, "reason": reason, "startedAt": rfc3339(proc.started_at),
                     "finishedAt": rfc3339(), "containerID": c.container_id()}
        if ex.signal:
            term["signal"] = ex.signal
        c.proc = None
        c.wait_task = None
        c.ready = False
        self._after_exit(c, ex.exit_code, term, ran_for=time.monotonic() - c.started_mono)

    def _after_exit(self, c: ContainerRun, code: int, term: Obj, *, ran_for: float, start_error: str = "") -> None:
        if c.is_init:  # an init container runs to completion, again only after a failure
            restart = code != 0 and self.policy != "Never"
        else:
            restart = self.policy == "Always" or (self.policy == "OnFailure" and code != 0)
        restart = restart or (self.held and not c.is_init)  # stopped by a pod-failure: runs again once released
        if not restart or self.terminating:
            c.state = {"terminated": term}
            c.done = True
            return
        c.last_state = {"terminated": term}
        delay = c.backoff.next_delay(ran_for)
        c.next_start = time.monotonic() + delay
        if start_error:
            c.state = {"waiting": {"reason": "RunContainerError", "message": start_error}}
        elif delay > 0:
            msg = (f"back-off {delay:g}s restarting failed container={c.name} "
                   f"pod={self.name}_{self.namespace}({self.uid})")
            c.state = {"waiting": {"reason": "CrashLoopBackOff", "message": msg}}
            self.host.event(self.pod, "Warning", "BackOff",
                            f"Back-off restarting failed container {c.name} in pod {self.name}_{self.namespace}"
                            f"({self.uid})", f"spec.containers{{{c.name}}}")
        else:
            c.state = {"terminated": term}
        if delay > 0:
            asyncio.get_running_loop().call_later(delay + 0.01, self._wake.set)

    # -- usage -----------------------------------------------------------------

    def sample(self, usage: dict[int, GroupUsage]) -> None:
        """Usage of each running container from one /proc pass; kill a container above its memory limit."""
        now = time.monotonic()
        for c in self.runs:
            if not c.running() or c.proc is None:
                continue
            u = usage.get(c.proc.pid)
            if u is None:
                continue
            pids, rss = dict(u.pids), u.rss
            for g in self.attached.get(c.name, ()):  # a stressor attached by a chaos experiment
                extra = usage.get(g)
                if extra is not None:
                    pids.update(extra.pids)
                    rss += extra.rss
            for pid, cpu in c.pid_cpu.items():
                if pid not in pids:
                    c.cpu_dead += cpu
            c.pid_cpu = pids
            c.rss = rss
            c.cpu_samples = [*c.cpu_samples[-1:], (now, c.cpu_total)]
            limit = ((c.spec.get("resources") or {}).get("limits") or {}).get("memory")
            if limit is not None and c.kill_reason != "OOMKilled":
                try:
                    over = rss > parse_quantity(limit)
                except ValueError:
                    over = False
                if over:
                    c.kill_reason = "OOMKilled"
                    c.proc.killpg(9)
                    log.info("node: %s/%s container %s above its memory limit (%d bytes): killed",
                             self.namespace, self.name, c.name, rss)

    # -- status ----------------------------------------------------------------

    def phase(self) -> str:
        if not self.initialized():
            failed = any(c.done and (c.state.get("terminated") or {}).get("exitCode") != 0 for c in self.inits)
            return "Failed" if failed else "Pending"
        cs = self.containers
        if cs and all(c.done for c in cs):
            ok = all("terminated" in c.state and c.state["terminated"].get("exitCode") == 0 for c in cs)
            return "Succeeded" if ok else "Failed"
        if any(c.running() or (c.ever_started and not c.done) for c in cs) or any(c.done for c in cs):
            return "Running"
        return "Pending"

    def _condition(self, kind: str, ok: bool) -> Obj:
        status = "True" if ok else "False"
        prev = self._conditions.get(kind)
        if prev is None or prev[0] != status:
            self._conditions[kind] = (status, rfc3339())
        return {"type": kind, "status": status, "lastProbeTime": None,
                "lastTransitionTime": self._conditions[kind][1]}

    def status(self) -> Obj:
        phase = self.phase()
        ready = bool(self.containers) and all(c.ready and c.running() for c in self.containers)
        started = any(c.ever_started for c in self.containers)
        initialized = self.initialized()
        conds = [self._condition("PodReadyToStartContainers", True), self._condition("Initialized", initialized),
                 self._condition("Ready", ready), self._condition("ContainersReady", ready),
                 self._condition("PodScheduled", True)]
        for cond in conds[2:4]:
            if not ready:
                cond["reason"] = "PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"
                waiting = [c.name for c in self.containers if not (c.ready and c.running())]
                if cond["reason"] == "ContainersNotReady":
                    cond["message"] = f"containers with unready status: [{' '.join(waiting)}]"
        if not initialized:
            pending = [c.name for c in self.inits if not c.done]
            conds[1].update(reason="ContainersNotInitialized",
                            message=f"containers with incomplete status: [{' '.join(pending)}]")
        out: Obj = {"phase": phase, "conditions": conds, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
                    "podIP": self.pod_ip, "podIPs": [{"ip": self.pod_ip}], "startTime": self.start_time,
                    "qosClass": self._qos(), "containerStatuses": [c.status() for c in self.containers]}
        if self.inits:
            out["initContainerStatuses"] = [c.status() for c in self.inits]
        if not started and not self.containers:
            out["phase"] = "Pending"
        return out

    def _qos(self) -> str:
        res = [(c.spec.get("resources") or {}) for c in self.containers]
        if all(not r.get("limits") and not r.get("requests") for r in res):
            return "BestEffort"
        if all(r.get("limits") and (r.get("limits") or {}).keys() >= {"cpu", "memory"}
               and (r.get("requests") or r.get("limits")) == r.get("limits") for r in res):
            return "Guaranteed"
        return "Burstable"

    async def _publish(self) -> None:
        if self.gone:
            return
        st = self.status()
        if st == self._published:
            return
        try:
            await self.host.client.patch("v1", "Pod", self.name, {"status": st}, namespace=self.namespace,
                                         subresource="status")
            self._published = st
        except NotFoundError:
            self.gone = self.terminating = True
        except Exception as e:  # the store is briefly unavailable: the next pass retries
            log.warning("node: status of pod %s/%s not written: %s", self.namespace, self.name, e)

    # -- termination -----------------------------------------------------------

    async def _stop_container(self, c: ContainerRun, grace: float) -> None:
        proc = c.proc
        if proc is None:
            return
        fp = f"spec.containers{{{c.name}}}"
        if not self.shutdown:
            self.host.event(self.pod, "Normal", "Killing", f"Stopping container {c.name}", fp)
        deadline = time.monotonic() + grace
        pre = ((c.spec.get("lifecycle") or {}).get("preStop") or {})
        if pre and proc.exited is None and grace > 0:
            hook = {**pre, "timeoutSeconds": max(1, int(grace))}
            ok, msg = await run_probe(hook, self._probe_ctx(c))
            if not ok:
                self.host.event(self.pod, "Warning", "FailedPreStopHook", f"PreStopHook failed: {msg}", fp)
        await proc.stop(max(0.0, deadline - time.monotonic()))
        if c.wait_task is not None:
            with contextlib.suppress(Exception):
                await c.wait_task
            if c.proc is proc:
                self._on_exit(c, proc.exited or Exited(137, 9))

    async def _terminate(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        grace = self._grace()
        dg = (self.pod.get("metadata") or {}).get("deletionGracePeriodSeconds")
        if dg is not None:
            grace = float(dg)
        if self.gone:
            grace = min(grace, 2.0)
        if self.shutdown:
            grace = min(grace, self.host.max_shutdown_grace_s)
        for c in self.runs:
            c.done = True
        await asyncio.gather(*(self._stop_container(c, grace) for c in self.runs), return_exceptions=True)
        for c in self.runs:
            for t in c.probers:
                t.cancel()
            c.probers = []
        if self.gone:
            shutil.rmtree(self.dir, ignore_errors=True)
        if self.shutdown or self.gone:
            return
        with contextlib.suppress(Exception):
            await self._publish()
        try:
            await self.host.client.delete("v1", "Pod", self.name, self.namespace, uid=self.uid, grace_period=0)
        except NotFoundError:
            pass
        except Exception as e:
            log.warning("node: deleting pod %s/%s failed: %s", self.namespace, self.name, e)
        shutil.rmtree(self.dir, ignore_errors=True)
